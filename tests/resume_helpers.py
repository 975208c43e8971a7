"""Kill a training in the middle of its last epoch, resume it, compare with a run never
interrupted: the resume-equality check the method, task and robust tests share."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepobfuscator.runs import RunPaths
from deepobfuscator.training import train
from deepobfuscator.training import trainer as trainer_mod


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every network's final weights in a run folder (the critics too, where there are)."""
    files = sorted((Path(run) / "weights").glob("*.safetensors"))
    return {p.stem: load_file(str(p)) for p in files}


def assert_resumes_bit_for_bit(cfg, tmp_path: Path, monkeypatch) -> Path:
    """Train `cfg` whole, then again killed mid-way through its last epoch and resumed from
    the checkpoint: every weight of every network must be equal. Returns the whole run."""
    real = trainer_mod._Loop.epoch_steps
    calls: list[tuple[str, int]] = []
    die_at = {"n": -1}

    def counting(self, ctx, stage, s_idx, epoch, scfg):
        step = real(self, ctx, stage, s_idx, epoch, scfg)

        def wrapped(b, batch):
            if len(calls) == die_at["n"]:
                raise KeyboardInterrupt
            calls.append((stage, epoch))
            return step(b, batch)

        return wrapped

    monkeypatch.setattr(trainer_mod._Loop, "epoch_steps", counting)
    whole_run = train(cfg, tmp_path / "whole", progress=False)
    whole = weights(whole_run)
    last = [i for i, c in enumerate(calls) if c == calls[-1]]
    assert len(last) >= 2, "the last epoch needs two batches to be cut in the middle"
    die_at["n"], calls[:] = last[len(last) // 2], []
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False)
    assert not RunPaths(tmp_path / "killed").info.exists()
    die_at["n"] = -1
    resumed = weights(train(cfg, tmp_path / "killed", progress=False))
    assert set(resumed) == set(whole)
    for net in whole:
        for key in whole[net]:
            assert torch.equal(whole[net][key], resumed[net][key]), f"{net}.{key} differs"
    return whole_run
