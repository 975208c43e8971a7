"""The phone budget: MACs counted from the torch modules, the phone's share by split point."""

import pytest
from torch import nn

from deepobfuscator.config import load_config
from deepobfuscator.models import feature_shape
from deepobfuscator.models.budget import count_macs, phone_budget
from deepobfuscator.wire import encoded_size


def test_a_convolution_costs_output_elements_times_kernel_volume():
    import torch

    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 3, 10, 10)) == 10 * 10 * 8 * 3 * 9
    assert count_macs(nn.Linear(20, 5), torch.zeros(1, 20)) == 20 * 5
    assert not conv._forward_hooks  # the counting hooks are removed


def test_splitting_after_the_last_block_puts_nearly_all_compute_on_the_phone():
    for cfg in (load_config("on-device"), load_config("cpu", ["model.split_block=5"])):
        b = phone_budget(cfg)
        assert b.phone_macs > 0 and b.cloud_macs > 0
        assert b.phone_share == pytest.approx(1, abs=0.01)


def test_splitting_after_block_2_leaves_about_a_third_on_the_phone():
    cfg = load_config("cpu", ["model.split_block=2", "model.upload_positions=0"])
    b = phone_budget(cfg)
    assert 0.25 < b.phone_share < 0.45  # VGG blocks 1-2: about a third of the compute
    assert b.split_block == 2
    c, h, w = feature_shape(cfg)
    assert b.upload_numbers == c * h * w
    assert b.upload_bytes == encoded_size((1, c, h, w), "int8")
    d = b.to_dict()
    assert d["phone_share"] == round(b.phone_share, 4) and d["upload_bytes"] == b.upload_bytes
    assert f"({b.phone_share:.0%})" in b.line() and f"{b.upload_bytes} B int8" in b.line()


def test_the_information_cap_bound_needs_unit_rms_features_and_noise():
    capped = phone_budget(load_config("cpu", ["privacy.normalize_features=true",
                                              "privacy.feature_noise=1",
                                              "model.upload_positions=0"]))
    assert capped.info_cap_bits == pytest.approx(capped.upload_numbers / 2)  # log2(1 + 1) / 2
    assert phone_budget(load_config("cpu", ["privacy.normalize_features=false"])
                        ).info_cap_bits is None
    assert phone_budget(load_config("cpu", ["privacy.normalize_features=true",
                                            "privacy.feature_noise=0"])).info_cap_bits is None
