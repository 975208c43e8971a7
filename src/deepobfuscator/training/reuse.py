"""Start a privacy run from a finished no-privacy baseline's task stage.

With the same seed, data, model and task settings, stage 1 of a DeepObfuscator run
computes exactly what the baseline computed (same splits, same initial weights, same
batches), so its end-of-stage-1 checkpoint can be copied instead of recomputed. The
result is bit-identical to training from scratch; the demo and sweeps save one stage-1
training per privacy run this way.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..config import Config
from ..io import atomic_write_json
from ..methods import method_for
from ..runs import RunPaths, read_run_config
from ..tasks import task_set
from .checkpoint import load_checkpoint

# privacy settings stage 1 depends on that are not upload stages: NoPeek's penalty, and
# two of the paper's keys (the model's until config schema 3: every network is built
# before stage 1, so the decoder's shape can move its random numbers)
_TASK_STAGE_KEYS = ("privacy.dcor_weight", "privacy.paper.decoder_width",
                    "privacy.paper.adversary_from_classifier")


def shares_task_stage(cfg: Config, baseline_cfg: Config) -> bool:
    """True when both configs train stage 1 identically: every key equal except the
    privacy method's, the later stages' and those of defences that act only when training
    ends (defences/: `in_task_stage`)."""
    from ..defences import all_defences, task_stage_keys

    a, b = cfg.to_dict(), baseline_cfg.to_dict()
    for d in (a, b):  # a warm-up of no noise is no warm-up
        if d["privacy"]["feature_noise"] <= 0:
            d["privacy"]["noise_warmup"] = 0.0
    for key in (*task_stage_keys(), *_TASK_STAGE_KEYS):
        if _get(a, key) != _get(b, key):
            return False
    same_train = (a["train"]["task"] == b["train"]["task"]
                  and a["train"]["checkpoint_every_s"] == b["train"]["checkpoint_every_s"]
                  and a["train"]["eval_max_images"] == b["train"]["eval_max_images"])
    for d in (a, b):  # keys of defences that act after the task stage: stage 1 never sees them
        for key in (k for df in all_defences() if not df.in_task_stage for k in df.keys):
            section, _, name = key.rpartition(".")
            _section(d, section).pop(name, None)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("privacy", "train")}  # noqa: E731
    return same_train and strip(a) == strip(b)


def _section(d: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        d = d[part]
    return d


def _get(d: dict, dotted: str):
    section, _, name = dotted.rpartition(".")
    return _section(d, section).get(name)


def start_from_baseline(cfg: Config, out_dir: Path, baseline_dir: Path) -> bool:
    """Copy a finished baseline's stage-1 checkpoint into a new run folder of `cfg`.

    Returns False (and copies nothing) when the folder already holds a checkpoint, the
    baseline is not a finished `privacy.method=none` run, or stage 1 would differ.
    """
    out, base = RunPaths(Path(out_dir)), RunPaths(Path(baseline_dir))
    if out.checkpoint.is_file() or not base.checkpoint.is_file() or not base.info.is_file():
        return False
    base_cfg = read_run_config(base.root)
    if base_cfg.privacy.method != "none" or not shares_task_stage(cfg, base_cfg):
        return False
    ckpt = load_checkpoint(base.checkpoint)
    if ckpt["position"] != {"stage": 1, "epoch": 0, "batch": 0}:
        return False
    out.root.mkdir(parents=True, exist_ok=True)
    from ..models.critics import info_term_on

    if (cfg.privacy.method == base_cfg.privacy.method or _same_attackers(cfg, base_cfg)) \
            and not info_term_on(cfg):  # the baseline's checkpoint has no critics
        shutil.copyfile(base.checkpoint, out.checkpoint)  # the trainer resumes at stage 2
        return True
    # Stage 1 never touches the attackers, so the new run's are what it would have drawn
    # itself: build its models under its seed, exactly as the trainer does.
    import torch

    from ..models import build_models
    from .checkpoint import save_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        fresh = build_models(cfg)
    for name, module in fresh.named().items():
        if name not in ("encoder", "classifier"):  # the attackers and any critics
            ckpt["models"][name] = module.state_dict()
    save_checkpoint(out.checkpoint, ckpt)
    return True


def _same_attackers(a: Config, b: Config) -> bool:
    """Whether two configs' methods build the same attacker networks (methods.py)."""
    return method_for(a).attackers == method_for(b).attackers


def with_upload(run_dir: Path, out_dir: Path, positions: int | None = None,
                noise: float | None = None, progress: bool = False, why: dict | None = None,
                refit_epochs: int | None = None, erase: list[str] | None = None) -> Path:
    """A finished run with another upload, as a new run folder: the same phone weights,
    sending its `positions` strongest numbers (`model.upload_positions`; None keeps the
    run's count) under feature noise of std `noise` (`privacy.feature_noise`; None keeps
    the run's; only a tighter cap is allowed, see `_raised_noise`), erasing `erase`
    (`privacy.erase`; None keeps the run's), the cloud re-fitting for `refit_epochs`
    (train.upload_tune_epochs; None keeps the run's; given alone (> 0) it re-fits the
    cloud to the run's own upload).

    Nothing is retrained: the new run restores the source's end-of-training checkpoint
    and runs the finish phase (training/finish.py) with the new config's plan, exactly as
    training with that config would have; with the run's own noise the result is bit for
    bit that run. The source is never modified; the new folder is built beside `out_dir`
    and moved into place when complete. `why` (how the count was chosen) goes into the
    new folder's upload_choice.json."""
    from ..errors import RunError
    from ..runs import read_info

    src, out = RunPaths(Path(run_dir)), RunPaths(Path(out_dir))
    cfg = read_run_config(src.root)
    if read_info(src.root).get("status") != "complete" or not src.checkpoint.is_file():
        raise RunError(f"{src.root} is not a finished run with its checkpoint.pt: finish "
                       "training it first (run the same train command again to resume)")
    new = _upload_config(cfg, positions, noise, refit_epochs, erase)
    if out.root.exists():
        if read_info(out.root).get("status") == "complete" and \
                read_run_config(out.root).fingerprint() == new.fingerprint():
            return out.root  # done before: the same command again is a no-op
        raise RunError(f"{out.root} already exists; pass a new --out folder")
    ckpt = load_checkpoint(src.checkpoint)
    from .trainer import finish_from_checkpoint

    tmp = out.root.with_name(f".{out.root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(src.splits, RunPaths(tmp).splits)
    # the phone's training state, shared: a later choose-upload can start from this folder
    shutil.copyfile(src.checkpoint, RunPaths(tmp).checkpoint)
    if why is not None:
        atomic_write_json(tmp / "upload_choice.json", {"source": str(src.root), **why})
    finish_from_checkpoint(new, tmp, ckpt, progress=progress)
    tmp.rename(out.root)
    return out.root


def _upload_config(cfg: Config, positions: int | None, noise: float | None,
                   refit_epochs: int | None, erase: list[str] | None) -> Config:
    """The source's config with the finish-phase settings `with_upload` was given."""
    from dataclasses import replace

    from ..config import validate

    model, privacy, train = cfg.model, cfg.privacy, cfg.train
    if positions is not None:
        model = replace(model, upload_positions=positions)
    if noise is not None:
        privacy = replace(privacy, feature_noise=_raised_noise(cfg, noise))
    if erase is not None:
        privacy = replace(privacy, erase=list(erase))
    more_noise = noise is not None and noise != cfg.privacy.feature_noise
    if refit_epochs is not None:
        train = replace(train, upload_tune_epochs=refit_epochs)
    elif (more_noise or erase) and train.upload_tune_epochs <= 0:
        train = replace(train, upload_tune_epochs=1)  # the cloud never saw this upload
    if train.upload_tune_epochs > 0 and (more_noise or refit_epochs):
        # every upload changed, or the cloud is asked to re-fit what it has (its BatchNorm
        # statistics can trail an E trained in training mode): even with nothing to fit
        train = replace(train, refit_cloud=True)
    new = replace(cfg, model=model, privacy=privacy, train=train)
    validate(new)  # a negative count, an attribute outside data.private: one line
    return new


def _raised_noise(cfg: Config, noise: float) -> float:
    """`noise` if it tightens the run's information cap. More noise on the same unit-RMS
    features is the old upload plus independent noise, so no attacker of the new upload
    can learn more than one of the old (data processing): a sound change without
    retraining the phone. Less noise, or noise on features the phone can scale, would
    loosen or void the cap the obfuscator was trained and audited under."""
    from ..config import ConfigError

    if not cfg.privacy.normalize_features or cfg.privacy.feature_noise <= 0:
        raise ConfigError("--noise needs a run trained with the information cap "
                          "(privacy.normalize_features=true and privacy.feature_noise > 0): "
                          "without it the phone sets its own signal scale and no noise std "
                          "means anything; train with the cap instead")
    if not math.isfinite(noise) or noise < cfg.privacy.feature_noise:
        raise ConfigError(f"--noise {noise}: give at least the run's own "
                          f"privacy.feature_noise={cfg.privacy.feature_noise} (only a tighter "
                          "cap keeps the trained obfuscator's privacy; retrain for less noise)")
    return float(noise)


# noise draws per validation image when counts are compared: the same draws for every
# count, 16 so that one lucky draw does not decide (4 were not enough on CelebA's 987
# validation photos: docs/notebook.md "Fewer numbers")
COMPARE_DRAWS = 16


def fewest_upload_positions(run_dir: Path, most: int, tolerance: float
                            ) -> tuple[int, dict[str, float]]:
    """The fewest of a finished run's strongest positions (halving from `most`) whose task
    ROC AUC on the defender's validation split stays within `tolerance` of sending every
    number; and the AUC of every count tried. Only the defender's own data is used. AUC,
    not accuracy: dropping the noise numbers shifts the logits the cloud's fixed 0.5 cut
    was trained on, which moves accuracy more than the ranking."""
    import torch

    from ..config import ConfigError, config_from_dict
    from ..data.splits import make_splits
    from ..defences.sparse_upload import fewest_positions, position_power
    from ..models import build_models
    from ..runs import load_run
    from .evaluate import evaluate

    if most < 1 or not 0 <= tolerance < 1:
        raise ConfigError(f"at most {most} positions within {tolerance}: give a count >= 1 "
                          "and a tolerance in [0, 1) (AUC it may lose; 0.005 by default)")
    _, trained = load_run(Path(run_dir))
    d = read_run_config(Path(run_dir)).to_dict()
    d["model"]["upload_positions"] = most  # the same networks, with a mask to move
    cfg = config_from_dict(d)
    models = build_models(cfg)
    upload = models.encoder.stage("upload")
    if upload is None:
        raise ConfigError(f"the run's upload has no more than {most} numbers: nothing to "
                          "drop; give a smaller --most")
    for name, module in models.named().items():
        state = trained.named()[name].state_dict()
        if name == "encoder":  # every number sent, until fewest_positions moves the mask
            state["stages.upload.mask"] = torch.ones_like(upload.mask)
        module.load_state_dict(state)
        module.eval()
    models.encoder.mark_finished()
    roles = make_splits(cfg)
    power = position_power(models.encoder, torch.from_numpy(roles["defender_train"].images))

    def auc() -> float:  # the same noise draws for every count
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            draws = [float(evaluate(models, roles["defender_val"], task_set(cfg), [], "task",
                                None, torch.device("cpu"),  # type: ignore[arg-type]
                                    attackers=False)["val_task_auc"])
                     for _ in range(COMPARE_DRAWS)]
            return sum(draws) / COMPARE_DRAWS

    return fewest_positions(upload.mask, power, most, auc, tolerance)
