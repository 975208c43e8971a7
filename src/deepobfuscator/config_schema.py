"""The configuration's schema: its sections as typed dataclasses, and how a nested mapping
(YAML, overrides, a run's saved config.yaml) is checked and built into them.

The lowest layer of the configuration: it knows no registry. config.py resolves presets,
files and overrides into a Config and checks the values against the registries (data
sources, methods, defences, tasks), which themselves only need these types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .preprocessing import OnBadImage

# data.augment (training/augment.py): none, or photo
AUGMENTS = ("none", "photo")

ROTATION_STEPS = ("noise", "reconstruction", "attribute", "adversaries", "classifier")

def _h(text: str, default: Any = MISSING, *, factory: Any = MISSING) -> Any:
    """A config field with its help text (docs/configuration.md is written from it)."""
    return field(default=default, default_factory=factory, metadata={"help": text})


# the config format's version: SCHEMA_ADDED and SCHEMA_MOVED (below) say what each
# version changed
SCHEMA = 3

# the choices of the config's enumerated keys: the one place they are listed (a value
# outside its Literal is refused when the config is built, naming the valid ones)
Precision = Literal["auto", "bf16", "fp32"]
AttributeLoss = Literal["neg_ce", "entropy"]
RobustAttributeLoss = Literal["entropy", "capped_ce"]


@dataclass
class RoleSource:
    """Where one data role comes from when it is not drawn from the main source."""

    source: str = "celeba"  # a registered data source (data/factory.py)
    root: str = ""
    partitions: list[int] | None = None
    csv: str = ""


@dataclass
class DataConfig:
    source: str = _h(
        "`synthfaces`, `celeba`, `lfw`, `folder` (see [data.md](data.md))",
        "synthfaces")
    root: str = _h(
        "the dataset's folder (not used by synthfaces)",
        "")
    csv: str = _h(
        "folder source: the labels CSV (file, attribute and identity columns; "
        "[data.md](data.md))",
        "")
    attributes_file: str = _h(
        "lfw: the path of `lfw_attributes.txt` when it is not beside the images",
        "")
    file_column: str = _h(
        "folder source: the CSV column of each image's file name",
        "file")
    identity_column: str = _h(
        "folder source: the CSV column of each image's person (empty: none)",
        "")
    task: str | list[str | dict[str, Any]] = _h(
        "what the cloud answers: one binary attribute, a list of them, and multi-class "
        "tasks (a group of exclusive attributes with `other`, or a folder CSV column of K "
        "classes); each task gets its own outputs and loss ([tasks.md](tasks.md))",
        "Smiling")
    private: list[str] = _h(
        "attributes to hide (one adversary each)",
        factory=lambda: ["Male"])
    held_out: list[str] = _h(
        "non-private attributes no model trains on: the audit's fresh probes read them "
        "from the upload (what a cloud could still learn later); none may be a task or "
        "private attribute",
        factory=list)
    image_size: tuple[int, int] = _h(
        "model input, `[height, width]` (a pair in code)",
        (64, 64))
    crop: str = _h(
        "`square` (largest centred square), `none`, `center:F` (centred square, F x the "
        "shorter side) or `center:Npx` (docs/data.md)",
        "square")
    align: str = _h(
        "`mtcnn`: find the face (the largest) and warp it into CelebA's aligned 178 x 218 "
        "frame before the crop, in training, the client and the page; a photo without a "
        "face is a bad image (docs/deploy.md \"Face alignment\")",
        "none")
    augment: str = _h(
        "`photo`: vary training images as photos vary (shift, scale, rotation, mirror, "
        "colour, blur); never at validation. It did not help on aligned LFW "
        "(BENCHMARKS.md)",
        "none")
    on_bad_image: OnBadImage = _h(
        "`error` or `skip` (skipped files are counted; with `align`, photos without a "
        "face too)",
        "error")
    cache: bool = _h(
        "keep decoded images in the decode cache, keyed by the source and the "
        "preprocessing",
        True)
    cache_dir: str = _h(
        "the decode cache's folder (empty: `$DEEPOBFUSCATOR_CACHE` or "
        "`~/.cache/deepobfuscator`)",
        "")
    synth_images: int = _h(
        "synthfaces: how many faces are drawn",
        10000)
    synth_images_per_identity: int = _h(
        "synthfaces: faces per person",
        20)
    synth_seed: int = _h(
        "synthfaces: the seed that draws them",
        0)
    val_fraction: float = _h(
        "the share of the data (of people, when identities are known) the defender "
        "validates on",
        0.1)
    attacker_fraction: float = _h(
        "the share the attacker owns (its probes and inverse networks train on it)",
        0.3)
    test_fraction: float = _h(
        "the share held out to score every figure on",
        0.2)
    attacker: RoleSource | None = _h(
        "a separate source for the attacker's role: `{source, root, partitions, csv}` "
        "(none: drawn from the main source)",
        None)
    test: RoleSource | None = _h(
        "a separate source for the test role: `{source, root, partitions, csv}` (none: "
        "drawn from the main source)",
        None)
    max_images: int = _h(
        "cap the main source (0 = all)",
        0)

    def __post_init__(self) -> None:
        # a list of one name is that name: the same run, the same fingerprint
        if isinstance(self.task, list) and len(self.task) == 1 and isinstance(self.task[0], str):
            self.task = self.task[0]


@dataclass
class ModelConfig:
    width: float = _h(
        "channel multiplier on VGG16-BN's widths",
        0.25)
    split_block: int = _h(
        "the obfuscator runs VGG blocks `[0, split_block)` on the device (blocks 1 / 1-2 "
        "/ 1-3 / 1-4 / 1-5 hold about 14 / 32 / 62 / 91 / 100% of the conv compute)",
        2)
    bottleneck: int = _h(
        ">0: a 1x1 conv at the split to this many channels (smaller uploads, less for an "
        "attacker to read)",
        1)
    upload_pool: int = _h(
        ">1: the phone average-pools the upload by this factor before the information cap "
        "(2: a quarter of the numbers, e.g. 64 numbers = 96 B at split 2 instead of 256 = "
        "288 B); the cloud scales the map back up (nearest) before its first block, so "
        "cloud compute is unchanged. Must divide the split's feature map; `train "
        "--baseline` sets it to 1",
        1)
    bottleneck_context: bool = _h(
        "true: the bottleneck also adds, at every position, a linear map of the split's "
        "spatial mean (channels x bottleneck MACs on the phone, e.g. 32; the upload is "
        "unchanged). At the paper's split a 1x1 bottleneck sees a patch; this lets the "
        "phone repeat one whole-image signal over the upload, which the cloud can average "
        "back out of the information cap's noise. Needs `bottleneck >= 1`; `train "
        "--baseline` sets it to false. Measured in docs/notebook.md, \"Where the phone "
        "spends the cap\"",
        False)
    position_gain: float = _h(
        ">0: a learned gain on every uploaded number (C x H x W weights starting at 1, no "
        "MACs), moving at this multiple of the obfuscator's learning rate (1: the same "
        "rate; 10: ten times faster, so the allocation can sharpen within a few epochs). "
        "Under the information cap the upload's power is fixed per image, so the gain "
        "lets the phone put it where the task is (faces are aligned) and starve the rest. "
        "`train --baseline` sets it to 0. Measured in docs/notebook.md",
        10.0)
    upload_positions: int = _h(
        ">0: upload only this many numbers per image. When training ends, the trainer "
        "keeps the K positions with the highest mean signal power on the defender's "
        "training images (the first 2,048, noise off; ties to the lower index) and "
        "changes no weight of the obfuscator (the cloud then re-fits to the choice: "
        "`train.upload_tune_epochs`): the obfuscator multiplies its output by that 0/1 "
        "mask **after** the information cap and the noise, so the K numbers it sends are "
        "exactly those of the full upload (a subset of it: an attacker of the sparse "
        "upload knows no more than one of the full upload) and the cloud reads zeros "
        "where nothing came. The audit and the export use the choice; the run's last "
        "`metrics.jsonl` line (`stage: upload`) has the validation figures with it. The "
        "export's `obfuscator.onnx` outputs the K numbers as (N, 1, 1, K), "
        "`classifier.onnx` scatters them back, and the manifest lists them "
        "(`features.positions`), so the wire format and clients are unchanged: at split "
        "2, K = 16 is 48 B per image in int8 instead of 288 B. A map of at most K numbers "
        "is sent whole. The cap bound becomes K/2 log2(1 + D/(K s^2)) for D numbers in "
        "the map (the K carry at most the whole power). `train --baseline` sets it to 0. "
        "Measured in docs/notebook.md \"A sparse upload\"",
        16)
    fc_hidden: int = _h(
        "hidden width of the classifier and adversary heads",
        256)
    dropout: float = _h(
        "dropout in the heads",
        0.5)


@dataclass
class StageConfig:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    # constant, or cosine: every optimizer's learning rate falls from lr towards 0 over the
    # stage, batch by batch (a pure function of the position, so resuming keeps it)
    lr_schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class RobustConfig:
    """privacy.method=robust: adversarial obfuscation built to hold against fresh attackers
    (docs/robust.md). Each key is one ingredient; see docs/configuration.md."""

    adversary_steps: int = _h(
        "attacker updates per encoder step, each on its own fresh batch (0 with both "
        "weights 0: the step-matched task-only control)",
        2)
    adversary_lr: float = _h(
        "the attackers' Adam learning rate",
        1e-3)
    ensemble: int = _h(
        "attribute adversaries per private attribute (the audit's CNN probe architecture, "
        "standardised input, training-mode statistics)",
        2)
    refresh_steps: int = _h(
        "at every adversarial epoch after the first, one member per attribute restarts "
        "from new weights and trains this many attacker steps before the encoder sees it "
        "(0 = never)",
        50)
    attribute_loss: RobustAttributeLoss = _h(
        "`entropy`: E minimises log 2 - H(P(z)) (the adversary's answer pushed to 1/2); "
        "`capped_ce`: E minimises relu(log 2 - balanced CE), no reward past chance",
        "entropy")
    attribute_weight: float = _h(
        "weight of the attribute term in E's loss",
        1.0)
    reconstruction_weight: float = _h(
        "weight of relu(MS-SSIM(R(z), x) - MS-SSIM(mean face, x)): reconstructions pushed "
        "to the mean face, never past it (0: no decoder)",
        1.0)
    decoder_width: int = _h(
        "width of the training decoder R, the audit's inverse-network architecture (the "
        "audit's own is 64)",
        32)
    info_weight: float = _h(
        ">0: E's loss also has this weight x InfoNCE between the upload and the photo, "
        "through two critics trained in E's step (after TIPRDC and MaSS: keep what tells "
        "photos apart, identity included, while the adversaries remove the private "
        "attributes; `info_loss` in `metrics.jsonl`; "
        "[robust.md](robust.md#keeping-what-is-not-private-the-information-term)). 0: "
        "off, the game as before",
        0.0)
    info_temperature: float = _h(
        "the InfoNCE's temperature (> 0): the cosine similarities are divided by it",
        0.1)


@dataclass
class PaperConfig:
    """The paper's method (`privacy.method: deepobfuscator`): its rotation, the lambda
    schedule, its privacy terms and its networks. No other method reads these keys."""

    rotation: list[str] = _h(
        "the adversarial stage's steps, one per batch, by batch index",
        factory=lambda: list(ROTATION_STEPS))
    lambda_: float = _h(
        "privacy weight",
        10.0)
    lambda_decay_after: int = _h(
        "lambda is constant up to this epoch, then falls linearly to 0 at the last epoch "
        "(with 20 epochs: the paper's 10, ..., 10, 9, ..., 1)",
        10)
    attribute_loss: AttributeLoss = _h(
        "`neg_ce`: the obfuscator maximises the adversary's cross-entropy (the paper); "
        "`entropy`: it pushes the adversary's output to 1/2",
        "neg_ce")
    attribute_weight: float = _h(
        "the attribute term's weight in the paper's rotation, relative to the "
        "reconstruction term's",
        1.0)
    reconstruction_weight: float = _h(
        "the reconstruction term's weight in the paper's rotation, relative to the "
        "attribute term's",
        1.0)
    noise_seed: int = _h(
        "seed of the fixed noise image the noise step pulls reconstructions toward",
        1234)
    adversary_refresh: int = _h(
        "every N adversarial epochs, P and R restart from fresh weights and optimizers (0 "
        "= never), so E cannot overfit one attacker",
        0)
    decoder_width: float = _h(
        "reconstructor channels relative to the encoder's",
        1.0)
    adversary_from_classifier: bool = _h(
        "attribute adversaries start from the task classifier's weights (the paper)",
        True)


@dataclass
class PrivacyConfig:
    method: str = _h(
        "`robust`: strong, current, bounded adversaries (the keys under `privacy.robust`, "
        "[robust.md](robust.md)); `deepobfuscator`: the paper's four stages with the "
        "adversarial rotation, its faithful reproduction (the keys under `privacy.paper`, "
        "its own); `none`: stage 1 only, so privacy "
        "comes from the split, bottleneck and information cap alone or, with `train "
        "--baseline`'s paper split and full map, not at all; `task-continuation`: stage "
        "1, then the task alone for `train.adversarial.epochs` (what `robust` trains with "
        "its attackers off, step for step: the adversarial methods' step-matched control, "
        "and the default's second stage)",
        "task-continuation")
    feature_noise: float = _h(
        "Shredder-like defence (with `normalize_features`, the information cap's noise): "
        "Gaussian noise of this std added to every upload, in training and in use; the "
        "export's manifest tells the device to add it",
        4.0)
    dcor_weight: float = _h(
        "NoPeek defence: adds `dcor_weight * dCor(image, features)` to E's loss in stage "
        "1 and in the rotation's E steps",
        0.0)
    normalize_features: bool = _h(
        "the information cap's first half: every image's upload is scaled to "
        "root-mean-square 1 on the phone (inside `obfuscator.onnx`), so `feature_noise` "
        "is relative to a fixed signal power that no training can raise; with noise s a "
        "D-number upload carries at most D/2 log2(1 + 1/s^2) bits (the run's `run.json` "
        "`budget.info_cap_bits`). With it the bottleneck has no ReLU",
        True)
    noise_warmup: float = _h(
        "a curriculum for the cap: over the task stage's first N epochs (fractions "
        "allowed; the whole stage when it is shorter) `feature_noise` ramps linearly from "
        "0 to its value, batch by batch; every evaluation, checkpointed model, later "
        "stage and export sees the full noise. 0: full noise from the first step. "
        "Measured in docs/notebook.md",
        4.0)
    erase: list[str] = _h(
        "private attributes (names from `data.private`) whose linear trace the phone "
        "projects out of the upload: when training ends (after the sparse upload is "
        "chosen), the direction along which each attribute moves the noise-free upload "
        "*inside each class of the task label* on the defender's training images (up to "
        "10,000), less its part along the task's own direction (the difference of the two "
        "classes' mean uploads, which is kept exactly), is removed by an orthogonal "
        "projection, after the unit-RMS cap and before the noise, inside "
        "`obfuscator.onnx`; then the cloud re-fits (`train.upload_tune_epochs`, which "
        "must be 1 or more). A projection never adds power, so the cap's bound holds. "
        "What the attribute shares with the task's direction stays readable: on LFW's "
        "smiles most of Male's trace lies there, and without that guard the erasure took "
        "the task with it. A closed-form adversary: see defences/erasure.py and "
        "docs/notebook.md \"Erasing Male\". `choose-upload --erase` applies it to a "
        "finished run; `train --baseline` sets it to []",
        factory=list)
    extra_defences: dict[str, dict] = _h(
        "defences registered by your own code, by name, each with its settings: "
        "`privacy.extra_defences={clip: {limit: 2.0}}` turns on a defence registered as "
        "`clip` ([defences.md](defences.md) has the example). An unregistered name is "
        "refused; `train --baseline` sets it to {}",
        factory=dict)
    robust: RobustConfig = field(default_factory=RobustConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)


@dataclass
class TrainConfig:
    task: StageConfig = _h(
        "E and C learn the task",
        factory=lambda: StageConfig(epochs=4, lr=1e-3))
    reconstructor: StageConfig = _h(
        "R learns to invert frozen E (1 - MS-SSIM); not run by `robust` or "
        "`task-continuation`",
        factory=lambda: StageConfig(epochs=2, lr=1e-3))
    adversaries: StageConfig = _h(
        "one P per private attribute on frozen E (`robust`: the ensemble and R, at "
        "`privacy.robust.adversary_lr`); not run by `task-continuation`",
        factory=lambda: StageConfig(epochs=2, lr=1e-3))
    adversarial: StageConfig = _h(
        "the rotation above (`robust`: the game of robust.md, E and C in one step; "
        "`task-continuation`, the default: E and C on the task alone)",
        factory=lambda: StageConfig(
        epochs=2, lr=1e-3, lr_schedule="cosine"))
    checkpoint_every_s: float = _h(
        "also checkpoint mid-epoch this often (always at every epoch's end)",
        120.0)
    eval_max_images: int = _h(
        "validation images scored after each epoch (0 = all)",
        1000)
    upload_tune_epochs: int = _h(
        "with a sparse upload (`model.upload_positions`): once the positions are chosen, "
        "C alone re-fits the task for this many epochs on what the phone now sends (E "
        "frozen: no uploaded number changes, so no privacy figure moves). C was trained "
        "on every number; zeros where noise was shift its inputs. 0 = no re-fit (runs "
        "trained before 2026-12-05 read as 0)",
        1)
    upload_tune_lr: float = _h(
        "Adam's learning rate for that re-fit (constant; the batch size is "
        "`adversarial.batch_size`)",
        1e-4)
    refit_cloud: bool = _h(
        "true: C re-fits that way (`upload_tune_epochs`, `upload_tune_lr`) after the last "
        "stage even when every number is sent (a sparse upload always re-fits). E is "
        "frozen, so no privacy figure moves. An E trained against adversaries moves fast "
        "and C's BatchNorm statistics can trail it: the robust game at split 3, seed 0, "
        "read 0.658 task accuracy as trained and 0.917 after one epoch (docs/notebook.md "
        "\"Split 3\"; `benchmarks/stale_cloud.py` checks a run). `choose-upload "
        "--refit-epochs N` sets it on a finished run. `train --baseline` sets it to false",
        False)
    balance_tasks: bool = _h(
        "a logit-adjusted loss (Menon et al., ICLR 2021): each task's log prior on the "
        "defender's training split is added to its outputs inside the loss, so the "
        "outputs the cloud serves are prior-free and their 0.5 threshold (argmax) aims at "
        "balanced accuracy; with a plain loss rare answers (Eyeglasses, Wearing_Hat: 5-7% "
        "of CelebA) are rarely given. The gradients are the plain loss's",
        False)


@dataclass
class Config:
    preset: str = _h(
        "base preset: `cpu` (64 px, width 0.25, split inference with a light phone: "
        "blocks 1-2 + bottleneck, information cap with noise 4, `model.position_gain: "
        "10`, the 16 strongest of the 256 uploaded numbers sent (`model.upload_positions: "
        "16`, 48 B), no adversary: `task-continuation`, the noise warmed up over the task "
        "stage and a cosine continuation; docs/notebook.md \"The default\", \"Tighter caps\" "
        "and \"Where the phone spends the cap\"), `on-device` (the same network with every "
        "conv block on the phone: on-device inference, the far end of the frontier), "
        "`robust` (the cpu phone and upload with the robust method, noise 2 and no gain: "
        "the default until 2026-12-04, [robust.md](robust.md)), `multitask` (the `cpu` "
        "phone sending all 256 numbers of its map, 288 B, under the cap at noise 2 with "
        "the learned gain, and `train.balance_tasks`: for several tasks, "
        "[tasks.md](tasks.md); `configs/celeba-multitask.yaml`'s preset), `private` (an "
        "alias of `cpu`: the same values, the name of this point before it became the "
        "default), `quick` (the `cpu` pipeline on 600 faces at 32 px, one epoch per "
        "stage: `demo --quick`; its figures mean nothing), `tiny` (the same on 160 faces "
        "in batches of 16: the tests train it, and it checks an install in seconds) or "
        "`paper` (218x178, full VGG16-BN, the paper's recipe)",
        "cpu")
    seed: int = _h(
        "seeds splits, weight init, batch order and dropout",
        0)
    device: str = _h(
        "`auto` (CUDA, then MPS, then CPU), `cpu`, `cuda`, `cuda:N`, `mps`",
        "auto")
    threads: int = _h(
        "CPU threads for torch; 0 = auto: the cores this process may use minus those "
        "other processes are busy on at start (sampled from /proc/stat), split between "
        "the processes of a local torchrun, at least 1. With one competing CPU-bound "
        "process on 2 cores, 2 threads ran 15x slower than 1 (OpenMP regions wait for "
        "their descheduled thread)",
        0)
    precision: Precision = _h(
        "`bf16` autocast where the hardware computes bf16 natively (AMX/AVX512-BF16 CPUs, "
        "recent GPUs), else `fp32`; losses and metrics always float32",
        "auto")
    channels_last: bool = _h(
        "NHWC memory layout (faster convolutions)",
        True)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schema: int = _h(
        "the config format's version, written into every run's config.yaml: a run's "
        "config of an older version reads as that version ran it, one of a newer version "
        "is refused with the upgrade to make (not a setting: leave it out of your files)",
        SCHEMA)

    def to_dict(self) -> dict:
        return _rename_out(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        d = self.to_dict()
        del d["schema"]  # the format's version: the same run under any version
        for moves in SCHEMA_MOVED.values():  # every key where version 2 had it
            move_keys(d, moves, back=True)
        # keys added since version 1 leave out the value earlier configs had (SCHEMA_ADDED)
        for added in SCHEMA_ADDED.values():
            for section, key, before in added:
                sec = _section(d, section)
                if sec is not None and sec.get(key) == before:
                    del sec[key]
        if d["model"].get("upload_positions", 0) == 0 and not d["train"].get("refit_cloud") \
                and not d["privacy"].get("erase"):
            # no sparse upload, erasure or re-fit asked for: the re-fit's keys change nothing
            for key in ("upload_tune_epochs", "upload_tune_lr"):
                d["train"].pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# The config format's version (SCHEMA, above), written into every saved config. A key added
# to the config bumps it, with an entry below: (section, key, the value every config of
# the versions before had); a section is dotted. Version 1 is every config written before
# versions were recorded (until 2026-12-07). A saved config of an older version takes
# those values (config.config_from_dict), and the fingerprint leaves such a key out while
# it holds that value, so a run keeps its fingerprint across versions (resume, export and
# cache checks still match). A config of a newer version is refused in one line.
SCHEMA_ADDED: dict[int, tuple[tuple[str, str, Any], ...]] = {
    2: (("model", "upload_pool", 1), ("model", "bottleneck_context", False),
        ("model", "position_gain", 0.0), ("model", "upload_positions", 0),
        ("privacy", "noise_warmup", 0.0), ("train", "upload_tune_epochs", 0),
        ("train", "upload_tune_lr", 1e-4), ("train", "refit_cloud", False),
        ("privacy", "erase", []), ("privacy", "extra_defences", {}),
        ("data", "held_out", []), ("data", "align", "none"),
        ("data", "augment", "none"), ("train", "balance_tasks", False),
        ("privacy.robust", "info_weight", 0.0),
        ("privacy.robust", "info_temperature", 0.1),
        *((f"train.{stage}", "lr_schedule", "constant")
          for stage in ("task", "reconstructor", "adversaries", "adversarial"))),
}
# What each version moved: (the key before, the key since). Version 3 gave the paper's
# method its own section, so that no two methods share a key's name. A saved config of an
# older version is moved on reading (config.config_from_dict); a user's file or override
# naming a key where it was is moved with a warning (config.load_config). The fingerprint
# hashes every key where version 2 had it (moved_back), so no fingerprint changed.
SCHEMA_MOVED: dict[int, tuple[tuple[str, str], ...]] = {
    3: tuple((f"{section}.{key}", f"privacy.paper.{key}") for section, key in (
        ("privacy", "rotation"), ("privacy", "lambda"), ("privacy", "lambda_decay_after"),
        ("privacy", "attribute_loss"), ("privacy", "attribute_weight"),
        ("privacy", "reconstruction_weight"), ("privacy", "noise_seed"),
        ("privacy", "adversary_refresh"), ("model", "decoder_width"),
        ("model", "adversary_from_classifier"))),
}


def _pop_dotted(d: dict, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key, removed from `d` with any section it leaves empty."""
    *parents, last = dotted.split(".")
    chain = [d]
    for part in parents:
        nxt = chain[-1].get(part)
        if not isinstance(nxt, dict):
            return False, None
        chain.append(nxt)
    if last not in chain[-1]:
        return False, None
    value = chain[-1].pop(last)
    for parent, part, child in zip(chain[-2::-1], parents[::-1], chain[:0:-1], strict=True):
        if child:
            break
        del parent[part]
    return True, value


def move_keys(d: dict, moves: tuple[tuple[str, str], ...], back: bool = False) -> list[str]:
    """Move each (before, since) key of `d` in place (`back`: since -> before); returns
    the keys it moved, where they were."""
    moved = []
    for before, since in moves:
        src, dst = (since, before) if back else (before, since)
        found, value = _pop_dotted(d, src)
        if found:
            set_dotted(d, dst, value)
            moved.append(src)
    return moved


def _section(d: dict, dotted: str) -> dict | None:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d if isinstance(d, dict) else None


# YAML uses `lambda`; Python cannot.
_RENAMES = {"lambda": "lambda_"}


def _rename_out(d: Any) -> Any:
    if isinstance(d, dict):
        inv = {v: k for k, v in _RENAMES.items()}
        return {inv.get(k, k): _rename_out(v) for k, v in d.items()}
    if isinstance(d, tuple):  # YAML and JSON write lists
        return [_rename_out(v) for v in d]
    return d


def save_config(cfg: Config, path: Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            d[part] = nxt = {}
        d = nxt
    d[parts[-1]] = value


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        attr = _RENAMES.get(key, key)
        if attr not in names:
            valid = sorted(_rename_out({n: 0 for n in names}))
            raise ConfigError(f"unknown config key {where + key!r}; valid keys here: {valid}")
        kwargs[attr] = _coerce(hints[attr], value, f"{where}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, UnionType) and type(None) not in args:
        # e.g. data.task: a name, or a list of names and mappings; the shape of the value
        # picks the alternative (tasks.py checks the contents)
        for alt in args:
            kind = get_origin(alt) or alt
            if isinstance(value, list if kind is list else dict if kind is dict else str):
                return _coerce(alt, value, where)
        return _coerce(args[0], value, where)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is not valid; choose one of {list(args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of names to settings, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, where) for v in value]
    if origin is tuple:  # fixed length, e.g. image_size: [height, width]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (list, dict)):  # str() would turn it into one odd name
            raise ConfigError(f"{where}: expected one name, got {value!r}; "
                              + "give a single value")
        return str(value)
    return value


