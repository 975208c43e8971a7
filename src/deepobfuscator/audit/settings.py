"""How an audit runs: the one definition of its settings, their defaults and their help.

Torch-free, so the command line can build its flags from it (every field is a flag of
`deepobfuscator audit` and `sweep`) without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, get_args, get_type_hints

from ..config import Precision

if TYPE_CHECKING:
    import torch

    from ..attackers.base import FitSettings

Wire = Literal["float32", "float16", "int8"]  # = wire.DTYPES (a test keeps them equal)
Recogniser = Literal["auto", "off"]


def _h(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class AuditSettings:
    seed: int = _h("the attackers' seed (their initialisation and batch order)", 0)
    device: str = _h("the attackers' device: auto, cpu, cuda, cuda:N", "auto")
    precision: Precision = _h("auto: bf16 where the hardware has it", "auto")
    threads: int = _h("CPU threads; 0 = the cores other processes leave free "
                      "(docs/configuration.md)", 0)
    max_epochs: int = _h("cap on each attacker's epochs (early stopping decides before)", 30)
    patience: int = _h("epochs without validation improvement before an attacker stops", 4)
    max_attack_seconds: float = _h("wall-clock cap per attacker; 0 = until early stopping "
                                   "(a capped attacker's figure is reported as a lower bound)",
                                   0.0)
    whitebox_images: int = _h("test images the white-box attacker reconstructs", 32)
    whitebox_steps: int = _h("optimisation steps per white-box reconstruction", 300)
    # the prior-guided inversion (attackers/prior_inversion.py): a face VAE trained on the
    # attacker's photos, its latent searched through E for each upload from the inverse
    # network's guess; the search stops at its budget (the VAE's training is capped by
    # max_epochs and max_attack_seconds like every attacker's)
    prior_images: int = _h("test images the prior-guided inversion reconstructs (0 = skip "
                           "the attack)", 32)
    prior_steps: int = _h("latent-search steps per prior-guided reconstruction", 200)
    prior_seconds: float = _h("wall-clock budget of each run's prior-guided latent search, "
                              "all its images together (0 = no limit)", 60.0)
    grid_images: int = _h("faces in the report's reconstruction grid", 8)
    # what the attackers and the cloud receive: the features after a round trip through
    # the upload format ("int8" is the deployment default and every published figure's;
    # "float32" is lossless)
    wire: Wire = _h("audit the features after a round trip through this upload format "
                    "(int8 is what `deepobfuscator serve` receives by default)", "int8")
    # a config file whose data section supplies the attacker and test roles (cross-dataset
    # audit: a run trained on one dataset attacked on faces it never saw); "" = the run's
    data_config: str = _h("attack and score on the data of this config file (its attacker "
                          "and test splits, task and private attributes) instead of the "
                          "run's, with the run's preprocessing", "")
    # an independent face recogniser beside the trained identity embedder: "auto" uses
    # dlib's ResNet when the optional extra is installed (pip install
    # 'deepobfuscator[recognition]'; ~60-130 ms per image on a CPU core), "off" never
    recogniser: Recogniser = _h("auto: also attack with dlib's face recogniser when the "
                                "[recognition] extra is installed (~0.1 s per image)", "auto")
    # the learned attackers (probes, inverse network, and re-identification from its
    # reconstructions) are also trained on the K numbers of highest variance on the
    # attacker split, zeros elsewhere, and the one that leaks more on the test split is
    # reported:
    # an attacker who drops the numbers that are noise (the shipped gain says which) need
    # not learn to ignore them. Tried on uploads with feature noise where more than K
    # numbers vary (a no-privacy baseline never). 0 = every number only
    select_positions: int = _h("learned attackers are also trained on the K uploaded "
                               "numbers of highest variance on their own split; the "
                               "stronger is reported (noisy uploads only; 0 = off)", 16)
    # attribute probes of each family are trained and the one that reads the most on the
    # test split is the figure (a defence may hold against a linear reader only)
    probe_families: str = _h("attribute probe families, each trained, the strongest "
                             "reported: linear, mlp, cnn (comma-separated)", "linear,mlp,cnn")
    # a server that receives the same photo N times (retries, reloads, video frames) can
    # average the device's fresh noise away: the probes and the identity attacks on the
    # features are run again on the mean of N uploads of every photo, for each N listed
    repeats: str = _h("also attack the mean of N uploads of each photo (fresh device noise "
                      "each), for each N in this comma-separated list (noisy uploads "
                      "only; \"1\" = off)", "1,16")
    # an attacker with M photos of one person pools them: attribute probabilities and
    # identity embeddings averaged over M photos
    pooled: str = _h("also score attributes and identity pooled over M photos of one "
                     "person, for each M in this comma-separated list (\"1\" = off)", "1,4")
    progress: bool = _h("progress bars", True)

    def fit_settings(self, device: torch.device, precision: str,
                     lr: float = 1e-3) -> FitSettings:
        from ..attackers.base import FitSettings

        return FitSettings(max_epochs=self.max_epochs, patience=self.patience, lr=lr,
                           seed=self.seed, device=str(device), precision=precision,
                           max_seconds=self.max_attack_seconds, progress=self.progress)


def choices(name: str) -> tuple | None:
    """The allowed values of a Literal-typed setting, or None."""
    tp = get_type_hints(AuditSettings)[name]
    return get_args(tp) or None


def add_audit_flags(parser: Any) -> None:
    """One flag per setting (--max-epochs, --grid-images, ...), defaults and help from the
    dataclass; `progress` is --quiet, `data_config` is audit's own --data."""
    hints = get_type_hints(AuditSettings)
    for f in fields(AuditSettings):
        if f.name in ("progress", "data_config"):
            continue
        tp = hints[f.name]
        kind = type(f.default) if not get_args(tp) else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                            choices=choices(f.name), help=f.metadata.get("help"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def from_flags(args: Any) -> AuditSettings:
    values = {f.name: getattr(args, f.name) for f in fields(AuditSettings)
              if f.name not in ("progress", "data_config")}
    return AuditSettings(**values, data_config=getattr(args, "data", None) or "",
                         progress=not args.quiet)
