"""The privacy audit: fresh attackers against a frozen obfuscator, beside a baseline.

For each audited run (the obfuscated one and, optionally, a no-privacy baseline
trained with `privacy.method=none` on the same data), every attacker is trained
from scratch on features of the attacker split, with early stopping on a
held-out part of it, and scored on the test split, which nobody trained on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .. import __version__
from ..attackers.base import FeatureSet
from ..attackers.reid import IdentityEmbedder
from ..config import Config
from ..data.splits import check_splits_match, make_splits
from ..devices import resolve_device
from ..errors import UserError
from ..io import atomic_write, atomic_write_json
from ..log import log
from ..models import Models, feature_shape
from ..models.budget import phone_budget
from ..precision import resolve_precision
from ..runs import RunError, RunPaths, load_run
from ..tasks import task_set
from ..threads import use_threads
from .attacks import AttackContext, run_attacks
from .attacks._weights import save_weights
from .attacks.attributes import probe_families
from .attacks.pooled import counts
from .bounds import bounds
from .features import check_wire, extract, through_wire, wire_change
from .image_metrics import image_scores, msssim_settings_for, summarize
from .settings import AuditSettings

# On the no-privacy baseline, attackers at least this strong are "shown strong";
# weaker ones trigger a warning, since their figures on the defence prove little.
STRONG_INVERSION_MSSSIM = 0.8
STRONG_PROBE_BAL_ACC = 0.9


def audit(run_dir: Path, baseline_dir: Path | None = None, out_dir: Path | None = None,
          settings: AuditSettings | None = None) -> Path:
    """Audit `run_dir` (and `baseline_dir`); write audit.json, scores.npz, attacker
    weights and the report into `out_dir` (default RUN/audit). Returns out_dir."""
    s = settings or AuditSettings()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "audit"
    device = resolve_device(s.device)
    precision = resolve_precision(s.precision, device)
    check_wire(s.wire)
    for setting in ("repeats", "pooled"):  # one-line errors before anything runs
        counts(getattr(s, setting), setting)
    probe_families(s.probe_families)
    if s.recogniser not in ("auto", "off"):
        raise UserError(f"recogniser={s.recogniser!r}: use 'auto' or 'off'")
    use_threads(s.threads)
    t0 = time.time()
    runs = {"obfuscated": run_dir}
    if baseline_dir is not None:
        runs["baseline"] = Path(baseline_dir)
    loaded = {name: _load(path, device) for name, path in runs.items()}
    out.mkdir(parents=True, exist_ok=True)  # only once the runs load: never create RUN itself
    cfg = loaded["obfuscated"][0]
    if "baseline" in loaded:
        _check_comparable(cfg, loaded["baseline"][0], runs)
    trained_on = _data_summary(cfg)
    if s.data_config:
        # every run keeps its networks; the data it is attacked on is the audit's, prepared
        # with the run's own preprocessing (what its phones would do to those photos)
        cfg = _with_audit_data(cfg, s.data_config)
        loaded = {k: (replace(c, data=cfg.data), m) for k, (c, m) in loaded.items()}
        roles = _foreign_splits(cfg, run_dir)
    else:
        roles = _splits(cfg, run_dir)
    tasks = task_set(cfg)
    # the attributes fresh probes read: the task (one binary task; several are scored by
    # the cloud), the private ones, and the held-out ones no model trained on
    attrs = [*(tasks.names if tasks.single else []), *cfg.data.private, *cfg.data.held_out]

    results: dict = {"runs": {}, "warnings": []}
    arrays: dict[str, np.ndarray] = {}
    embedder = None
    if roles["attacker"].has_identities and roles["test"].has_identities:
        embedder = _train_embedder(roles, cfg, s, device, precision, out)
        results["reid_embedder"] = embedder[1]
    grid = {}
    for name, (run_cfg, models) in loaded.items():
        log.info(f"== auditing {name}: {runs[name]}")
        job = AuditJob(name, run_cfg, models, roles, attrs, s, device, precision)
        emb = embedder[0] if embedder else None
        if name == "baseline":
            r, arr, recon = _audit_baseline_cached(runs[name], cfg, job, out, emb)
        else:
            r, arr, recon = _audit_one(job, out, emb)
        results["runs"][name] = r
        arrays.update({f"{name}/{k}": v for k, v in arr.items()})
        grid[name] = recon[: s.grid_images]
    test = extract(loaded["obfuscated"][1], roles["test"], attrs, device)
    grid["original"] = test.images[: s.grid_images]
    results["attributes"] = {"tasks": tasks.names, "private": list(cfg.data.private),
                             "held_out": list(cfg.data.held_out)}
    results["chance"] = _chance(roles, test, cfg, s.seed)
    results["warnings"] += _weak_attacker_warnings(results, list(cfg.data.private))
    results["settings"] = {**asdict(s), "device": str(device), "precision": precision,
                           "msssim": msssim_settings_for(*cfg.data.image_size)}
    results["runs_dirs"] = {k: str(v) for k, v in runs.items()}
    results["config"] = cfg.to_dict()
    results["data"] = {role: {"images": len(ds), "source": ds.source}
                       for role, ds in roles.items() if role in ("attacker", "test")}
    results["data"]["trained_on"] = trained_on
    results["data"]["audited_on"] = ({"config": s.data_config, **_data_summary(cfg)}
                                     if s.data_config else "the run's own attacker and test "
                                     "splits")
    results["feature_shape"] = list(feature_shape(cfg))
    results["seconds"] = round(time.time() - t0, 1)
    results["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["package_version"] = __version__
    for w in results["warnings"]:
        log.warning(w)
    atomic_write_json(out / "audit.json", results)
    atomic_write(out / "scores.npz", lambda p: _savez(p, arrays))
    from .report import write_report

    write_report(out, results, grid)
    return out


def _data_summary(cfg: Config) -> dict:
    d = cfg.data
    return {"source": d.source, "root": d.root, "task": d.task, "private": list(d.private),
            "image_size": list(d.image_size), "crop": d.crop,
            **({"align": d.align} if d.align != "none" else {})}


def _with_audit_data(cfg: Config, path: str) -> Config:
    """The run's config with the audit's data section (its roles, task and private
    attributes), keeping the run's image size and crop, and the run's seed for the splits.
    Alignment: the audit data's own `data.align` where it sets one (the other dataset's
    photos warped into CelebA's frame: then the run's crop applies to that frame), else the
    run's."""
    from ..config import load_config

    audit_cfg = load_config(path, [f"seed={cfg.seed}"])
    align = audit_cfg.data.align if audit_cfg.data.align != "none" else cfg.data.align
    data = replace(audit_cfg.data, image_size=cast("tuple[int, int]", tuple(cfg.data.image_size)),
                   crop=cfg.data.crop, align=align)
    return replace(cfg, data=data)


def _foreign_splits(cfg: Config, run_dir: Path) -> dict:
    """The audit data's roles, minus any photo the run's defender trained or validated on
    (the same file name in the same kind of source)."""
    roles = make_splits(cfg)
    used: set[str] = set()
    for role in ("defender_train", "defender_val"):
        path = RunPaths(run_dir).splits / f"{role}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("source") == cfg.data.source:
                used |= set(saved.get("files", []))
    for role in ("attacker", "test"):
        ds = roles[role]
        keep = np.array([f not in used for f in ds.files], dtype=bool)
        if not keep.all():
            roles[role] = ds.subset(np.flatnonzero(keep))
    return roles


def _load(path: Path, device: torch.device) -> tuple[Config, Models]:
    paths = RunPaths(path)
    if not paths.root.is_dir():
        raise RunError(f"run folder not found: {path}")
    return load_run(path, device)


def _check_comparable(cfg: Config, base: Config, runs: dict) -> None:
    """A baseline is a reference only when it saw the same data the same way."""
    keys = {"data source": (cfg.data.source, base.data.source),
            "data root": (cfg.data.root, base.data.root),
            "image size": (cfg.data.image_size, base.data.image_size),
            "crop": (cfg.data.crop, base.data.crop),
            "task": (cfg.data.task, base.data.task),
            "seed (splits)": (cfg.seed, base.seed)}
    for what, (a, b) in keys.items():
        if a != b:
            raise RunError(f"baseline {runs['baseline']} differs from {runs['obfuscated']} in "
                           f"{what} ({b!r} vs {a!r}); train the baseline with the same data "
                           "settings and privacy.method=none")


def _splits(cfg: Config, run_dir: Path) -> dict:
    roles = make_splits(cfg)
    check_splits_match(roles, RunPaths(run_dir).splits)
    return roles


def _train_embedder(roles: dict, cfg: Config, s: AuditSettings, device, precision, out: Path):
    """One identity embedding per audit (raw attacker images only), shared by all runs."""
    from ..data.base import to_tensor_batch

    atk = roles["attacker"]
    emb = IdentityEmbedder(cast("tuple[int, int]", tuple(cfg.data.image_size)),
                           s.fit_settings(device, precision))
    curve = emb.fit(to_tensor_batch(atk.images), atk.identities)
    save_weights(emb.model, out / "attackers" / "reid_embedder.safetensors")
    return emb, curve.to_dict()


@dataclass
class AuditJob:
    """One run to audit, with the audit's data roles and settings."""

    name: str  # "obfuscated" or "baseline"
    cfg: Config
    models: Models
    roles: dict
    attrs: list[str]  # probed: the task (one binary task), private, held-out attributes
    settings: AuditSettings
    device: torch.device
    precision: str


def attack_context(job: AuditJob, out: Path, embedder=None) -> AttackContext:
    """What every attack gets for one run: its features of the attacker and test splits,
    through the audit's upload format."""
    s, device = job.settings, job.device
    # an obfuscator with feature noise draws it for every upload: seeded here, so an audit
    # with the same seed sees the same uploads (and the same figures)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        atk = through_wire(extract(job.models, job.roles["attacker"], job.attrs, device),
                           s.wire)
        sent = extract(job.models, job.roles["test"], job.attrs, device)
    ctx = AttackContext(run=job.name, cfg=job.cfg, models=job.models, attacker=atk,
                        test=through_wire(sent, s.wire), attributes=job.attrs, settings=s,
                        fit=s.fit_settings(device, job.precision), device=device,
                        weights_dir=out / "attackers" / job.name, embedder=embedder,
                        task_labels=task_set(job.cfg).labels(job.roles["test"]))
    ctx.products["sent"] = sent  # before the round trip, for the wire's own figure
    return ctx


def _audit_one(job: AuditJob, out: Path, embedder):
    """Every registered attack (audit/attacks/) against one run's features."""
    ctx = attack_context(job, out, embedder)
    cfg, s = job.cfg, job.settings
    r: dict = {"run": cfg.privacy.method,
               "wire": {"format": s.wire, **wire_change(ctx.products["sent"], ctx.test)},
               "budget": phone_budget(cfg).to_dict()}  # compute per side, bytes per image
    r.update(run_attacks(ctx))
    ids = ctx.test.identities
    people = None if ids is None else int((np.unique(ids, return_counts=True)[1] >= 2).sum())
    if (b := bounds(cfg, counts(s.repeats, "repeats"), people)) is not None:
        r["bounds"] = b  # what the cap allows any attacker, per number of uploads
    if "view_choices" in ctx.products:  # which numbers each learned attacker kept
        r["views"] = ctx.products["view_choices"]
    r["curves"] = ctx.curves
    return r, ctx.arrays, ctx.products["reconstructions"]


# (audit setting, the value every audit had before it existed)
_LATE_SETTINGS = (("select_positions", 0),)


def _audit_baseline_cached(base_dir: Path, cfg: Config, job: AuditJob, out: Path, embedder):
    """The baseline's audit, reused when the same baseline was audited before with the same
    data roles, attributes and settings (every attacker is seeded, so the figures are the
    same): a sweep audits one baseline against many points. Kept in BASELINE/audit_cache."""
    import hashlib
    import shutil

    name, base_cfg, s, device, precision = job.name, job.cfg, job.settings, job.device, \
        job.precision
    settings = {k: v for k, v in asdict(s).items() if k != "progress"}
    for key, then in _LATE_SETTINGS:  # caches written before a setting existed stay valid
        if settings.get(key) == then:
            del settings[key]
    if base_cfg.privacy.feature_noise == 0:  # no view is selected on a noise-free upload
        settings.pop("select_positions", None)
    # what the attackers ran on counts, not how it was asked for: an explicit device or
    # precision that "auto" resolves to as well shares auto's entry
    auto_device = resolve_device("auto")
    for key, asked, auto in (("device", str(device), str(auto_device)),
                             ("precision", precision, resolve_precision("auto", auto_device))):
        if asked == auto:
            settings[key] = "auto"
    key = hashlib.sha256(json.dumps(
        [base_cfg.fingerprint(), cfg.to_dict()["data"], settings, str(device), precision,
         __version__, embedder is not None], sort_keys=True).encode()).hexdigest()[:16]
    cache = RunPaths(base_dir).root / "audit_cache" / key
    done = cache / "result.json"
    if done.is_file():
        log.info(f"   reusing this baseline's audit from {cache} (same data, attributes, settings)")
        with np.load(cache / "arrays.npz") as z:
            arr = {k: z[k] for k in z.files}
        with np.load(cache / "grid.npz") as z:
            recon = torch.from_numpy(z["recon"])
        r = json.loads(done.read_text())
        # entries cached before audits carried the phone budget lack it; it depends on the
        # config's shapes only, so recomputing it costs nothing and always matches
        r["budget"] = phone_budget(base_cfg).to_dict()
    else:
        r, arr, recon = _audit_one(job, cache, embedder)
        atomic_write(cache / "arrays.npz", lambda p: _savez(p, arr))
        grid = {"recon": recon[: s.grid_images].numpy()}
        atomic_write(cache / "grid.npz", lambda p: _savez(p, grid))
        atomic_write_json(done, r)  # last: its presence marks a complete entry
    shutil.copytree(cache / "attackers" / name, out / "attackers" / name, dirs_exist_ok=True)
    return r, arr, recon


def _chance(roles: dict, test: FeatureSet, cfg: Config, seed: int = 0) -> dict:
    """Reference levels an attacker with no information reaches, and the floor an
    attacker with the true answers of every task reaches."""
    from ..data.base import to_tensor_batch
    from ..metrics import answer_floor, majority_rate

    tasks = task_set(cfg)
    answers = {"attacker": tasks.labels(roles["attacker"]), "test": tasks.labels(roles["test"])}
    mean_img = to_tensor_batch(roles["attacker"].images).mean(0, keepdim=True)
    mean_scores = summarize(image_scores(mean_img.expand_as(test.images), test.images))
    out: dict = {"attributes": {
        a: {"balanced_accuracy": 0.5, "auc": 0.5,
            "majority_rate": majority_rate(test.attributes[a]),
            # what the service's true answers alone tell an attacker (a table trained
            # on the attacker split, scored on test): no upload that answers can leak less
            **({"task_answer_floor": answer_floor(
                answers["attacker"], roles["attacker"].attribute(a), answers["test"],
                test.attributes[a])} if a in cfg.data.private else {})}
        for a in test.attributes},
        "reconstruction_mean_image": mean_scores}
    # each task's chance: balanced accuracy 1/K, accuracy the most common class's rate
    out["tasks"] = {t.name: {"chance": 1.0 / max(t.outputs, 2),
                             "majority_rate": float(np.bincount(y).max() / max(len(y), 1))}
                    for t, y in zip(tasks, answers["test"].T, strict=True)}
    if len(tasks) > 1:
        out["tasks"][tasks.label] = {
            key: float(np.mean([v[key] for v in out["tasks"].values()]))
            for key in ("chance", "majority_rate")}
    if test.identities is not None:
        # the gallery holds the people with 2+ test photos (gallery_probe_split): a guess
        # among them, not among everyone in the test split
        _, counts = np.unique(test.identities, return_counts=True)
        n = max(1, int((counts >= 2).sum()))
        from ..attackers.reid import leave_one_out_chance

        out["reid"] = {"top1": 1.0 / n, "top5": min(5, n) / n, "identities": n,
                       # a random other test photo shows the same person
                       "leave_one_out_top1": leave_one_out_chance(test.identities)}
        if n > 1:
            # the identity floor: nearest neighbour on the true answer vectors, with the
            # audit's gallery and probes (ties are a random pick among the tied)
            from ..attackers.reid import gallery_probe_split, reid_scores

            vec = tasks.answer_vectors(answers["test"])
            g, p = gallery_probe_split(test.identities, seed)
            floor = reid_scores(vec[g], test.identities[g], vec[p], test.identities[p])[0]
            out["reid"]["task_answer_floor"] = {"top1": floor["top1"], "top5": floor["top5"]}
    return out


def _weak_attacker_warnings(results: dict, private: list[str]) -> list[str]:
    out = [f"the {name} attacker on the {run} run stopped at the time limit "
           f"(max_attack_seconds) after {len(c['val_loss'])} epochs: its figure is a lower "
           "bound on what an attacker gets"
           for run, r in results["runs"].items() for name, c in r["curves"].items()
           if c.get("stopped") == "time_limit"]
    if results.get("reid_embedder", {}).get("stopped") == "time_limit":
        out.append("the identity embedder stopped at the time limit (max_attack_seconds): "
                   "the re-identification figures are lower bounds")
    base = results["runs"].get("baseline")
    if base is None:
        return [*out, "no --baseline given: figures have no no-privacy reference"]
    ms = base["inversion"]["msssim"]["mean"]
    if ms < STRONG_INVERSION_MSSSIM:
        out.append(f"the inversion attacker is weak against the baseline (MS-SSIM {ms:.3f} < "
                   f"{STRONG_INVERSION_MSSSIM}): its figure on the obfuscated run proves little")
    for a, sc in base["attributes"].items():
        if a in private and sc["balanced_accuracy"] < STRONG_PROBE_BAL_ACC:
            out.append(f"the {a} probe is weak against the baseline (balanced accuracy "
                       f"{sc['balanced_accuracy']:.3f} < {STRONG_PROBE_BAL_ACC})")
    obf = results["runs"]["obfuscated"]
    for a, own in obf.get("training_adversaries", {}).items():
        fresh = obf["attributes"][a]["balanced_accuracy"]
        if fresh > own["balanced_accuracy"] + 0.05:
            out.append(f"a fresh {a} attacker beats the training-time adversary (balanced "
                       f"accuracy {fresh:.3f} vs {own['balanced_accuracy']:.3f}): the "
                       "obfuscator overfit its own adversary")
    return out


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the name
        # numpy's stub: a **dict's keys might include its allow_pickle flag
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

