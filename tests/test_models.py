import pytest
import torch

from deepobfuscator.config import load_config
from deepobfuscator.models import build_models, feature_shape


@pytest.mark.parametrize("preset, feat", [("cpu", (1, 16, 16)), ("on-device", (1, 2, 2)),
                                          ("paper", (128, 54, 44))])
def test_shapes_of_every_preset(preset, feat):
    cfg = load_config(preset)
    assert feature_shape(cfg) == feat
    torch.manual_seed(0)
    m = build_models(cfg)
    for net in m.named().values():
        net.eval()
    x = torch.rand(2, 3, *cfg.data.image_size)
    with torch.no_grad():
        z = m.encoder(x)
        assert tuple(z.shape) == (2, *feat)
        assert m.classifier(z).shape == (2,)
        for adv in m.adversaries.values():
            assert adv(z).shape == (2,)
        r = m.reconstructor(z)
    assert r.shape == x.shape and 0 <= r.min() and r.max() <= 1


def test_paper_preset_matches_the_papers_split():
    m = build_models(load_config("paper"))
    convs = [mod for mod in m.encoder.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128]  # conv1_1 .. conv2_2
    fcs = [mod for mod in m.classifier.modules() if isinstance(mod, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [4096, 4096, 1]
    assert fcs[0].in_features == 512 * 6 * 5  # 218x178 after five 2x2 pools


@pytest.mark.parametrize("split, bottleneck", [(1, 0), (2, 8), (3, 16), (5, 1)])
def test_split_point_and_bottleneck(split, bottleneck):
    cfg = load_config("cpu", [f"model.split_block={split}", f"model.bottleneck={bottleneck}"])
    m = build_models(cfg)
    z = m.encoder(torch.rand(2, 3, 64, 64))
    assert tuple(z.shape[1:]) == feature_shape(cfg)
    assert z.shape[2] == 64 // 2**split
    if bottleneck:
        assert z.shape[1] == bottleneck
    assert m.reconstructor(z).shape == (2, 3, 64, 64)
