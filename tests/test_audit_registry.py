"""The audit's attack and figure registries: every registered attack fills the figures it
declares, and a new attack is one class plus a registry entry."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import PAPER, TINY

from deepobfuscator.audit import AuditSettings, audit
from deepobfuscator.audit.attacks import (
    ATTACKS,
    AttackContext,
    AuditAttack,
    figure_by_key,
    figures_for,
    run_attacks,
)
from deepobfuscator.audit.figures import FigureSpec, Names
from deepobfuscator.audit.result import AuditResult
from deepobfuscator.audit.runner import AuditJob, _train_embedder, attack_context
from deepobfuscator.data.splits import make_splits
from deepobfuscator.runs import load_run
from deepobfuscator.tasks import task_set
from deepobfuscator.training import train

FAST = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=5, grid_images=3,
                     progress=False, recogniser="off", repeats="1,2", prior_images=4,
                     prior_steps=10)


MULTI = ["data.task=[Smiling,Eyeglasses,{name: hair, classes: [Black_Hair, Blond_Hair, "
         "Brown_Hair, other]}]", "data.held_out=[Bangs]"]
# figures of a one-task audit only (several tasks are scored by the cloud, not a probe)
ONE_TASK_ONLY = {"task_probe"}


@pytest.fixture(scope="module", params=["one task", "several tasks"])
def attacked(request, tmp_path_factory, tiny_config_module):
    """Every registered attack run once, in registry order, on a tiny adversarial run (one
    task; three tasks, one of them multi-class, and a held-out attribute):
    name -> the result entries it returned (None when it did not apply)."""
    tmp = tmp_path_factory.mktemp("registry")
    over = MULTI if request.param == "several tasks" else []
    # device noise: the repeated-uploads attack averages it (it applies to noisy runs only)
    run = train(tiny_config_module(*PAPER, *over, "privacy.feature_noise=0.2"), tmp / "run",
                progress=False)
    cfg, models = load_run(run, torch.device("cpu"))
    roles = make_splits(cfg)
    emb, _ = _train_embedder(roles, cfg, FAST, torch.device("cpu"), "fp32", tmp)
    tasks = task_set(cfg)
    job = AuditJob("obfuscated", cfg, models, roles,
                   [*(tasks.names if tasks.single else []), *cfg.data.private,
                    *cfg.data.held_out], FAST, torch.device("cpu"), "fp32")
    ctx = attack_context(job, tmp, emb)
    outputs = {}
    for name, cls in ATTACKS.items():
        attack = cls()
        outputs[name] = attack.run(ctx) if attack.applies(ctx) else None
    return ctx, outputs


@pytest.fixture(scope="module")
def tiny_config_module():
    from deepobfuscator.config import load_config

    return lambda *o: load_config("cpu", [*TINY, *o])


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_registered_attack_fills_the_figures_it_declares(attacked, name):
    ctx, outputs = attacked
    out = outputs[name]
    assert out is not None, f"{name} did not apply to an adversarial run with identities"
    tasks = task_set(ctx.cfg)
    names = Names(tasks.names, list(ctx.cfg.data.private), list(ctx.cfg.data.held_out))
    chances = {"reconstruction_mean_image": {m: {"mean": 0.0} for m in
                                             ("msssim", "ssim", "psnr")},
               "reid": {"top1": 0.1, "top5": 0.5, "leave_one_out_top1": 0.1},
               "tasks": {n: {"majority_rate": 0.5, "chance": 0.5}
                         for n in [*tasks.names, names.task]}}
    for spec in ATTACKS[name].figures:
        for fig in spec.expand(names):
            v = fig.value(out)
            if (fig.optional or (len(tasks) > 1 and fig.key in ONE_TASK_ONLY)) and v is None:
                continue
            assert v is not None and math.isfinite(v), f"{name} left {fig.key} empty"
            chance = fig.chance_in(chances)
            assert chance is not None, f"{fig.key} has no chance level"


def test_the_attacks_run_in_the_order_the_registry_lists_them():
    """Later attacks read what earlier ones produced (the identity summary reads every
    identity attack's figure): a built-in must keep its listed place."""
    from deepobfuscator.audit.attacks import BUILTIN

    assert list(ATTACKS)[:len(BUILTIN)] == list(BUILTIN)
    names = list(ATTACKS)
    for name, cls in ATTACKS.items():
        for product in cls.needs:
            makers = {"reconstructions": "inversion"}
            assert names.index(makers[product]) < names.index(name), (name, product)
    assert names.index("identity") > max(names.index(n) for n in
                                         ("reid", "feature_reid", "prior_inversion"))


def test_figure_keys_are_unique_and_found_again_by_key():
    figs = figures_for(Names(["Smiling", "Eyeglasses"], ["Male", "Young"], ["Bangs"]))
    keys = [f.key for f in figs]
    assert len(keys) == len(set(keys))
    for f in figs:
        assert figure_by_key(f.key, task="2 tasks (mean)") == f
    assert figure_by_key("attribute:Young").path == ("attributes", "Young", "balanced_accuracy")
    assert figure_by_key("utility:Eyeglasses").path == (
        "utility", "tasks", "Eyeglasses", "balanced_accuracy")
    assert figure_by_key("held_out:Bangs").path == ("attributes", "Bangs", "roc_auc")
    # one task: its figures are the "one" figures, with no per-task duplicates
    one = [f.key for f in figures_for(Names(["Smiling"], ["Male"], []))]
    assert not any(k.startswith(("utility:", "held_out:")) for k in one)
    with pytest.raises(KeyError, match="no audit figure"):
        figure_by_key("no_such_figure")


def test_an_attack_missing_what_it_needs_is_a_clear_error(attacked, monkeypatch):
    class NeedsNothingThere(AuditAttack):
        name = "needs_a_ghost"
        needs = ("ghost",)

        def run(self, ctx: AttackContext) -> dict:
            return {}

    ctx, _ = attacked
    monkeypatch.setattr("deepobfuscator.audit.attacks.ATTACKS",
                        {"needs_a_ghost": NeedsNothingThere})
    with pytest.raises(RuntimeError, match="needs_a_ghost.*ghost"):
        run_attacks(ctx)


def test_a_new_attack_is_one_class_and_a_registry_entry(tmp_path, tiny_config, monkeypatch):
    """The docs' example (docs/audit.md, "Adding an attack"): a linear probe of the mean
    feature, registered, appears in audit.json, the figure table and the report."""

    class MeanFeatureProbe(AuditAttack):
        name = "mean_feature"
        figures = (FigureSpec("mean_feature:{attr}", "{attr}: mean-feature threshold, "
                              "balanced accuracy", "{attr}: mean feature",
                              ("mean_feature", "{attr}"), "lower", 0.5, per="private"),)

        def run(self, ctx: AttackContext) -> dict:
            from deepobfuscator.metrics import balanced_accuracy

            m_atk = ctx.attacker.features.flatten(1).mean(1).numpy()
            m_test = ctx.test.features.flatten(1).mean(1).numpy()
            out = {}
            for a in ctx.cfg.data.private:
                y = ctx.attacker.attributes[a]
                sign = 1.0 if m_atk[y == 1].mean() >= m_atk[y == 0].mean() else -1.0
                cut = np.median(sign * m_atk)
                out[a] = balanced_accuracy(ctx.test.attributes[a],
                                           (sign * m_test > cut).astype(float), 0.5)
            return {"mean_feature": out}

    monkeypatch.setitem(ATTACKS, "mean_feature", MeanFeatureProbe)
    run = train(tiny_config("privacy.method=none"), tmp_path / "run", progress=False)
    out = audit(run, None, tmp_path / "audit", FAST)
    res = AuditResult(json.loads((out / "audit.json").read_text()))
    assert set(res.runs["obfuscated"]["mean_feature"]) == {"Male", "Young"}
    assert "mean_feature:Male" in res.values()
    report = (out / "report.md").read_text()
    assert "Male: mean-feature threshold, balanced accuracy" in report


def test_every_audit_setting_is_a_flag_with_the_dataclass_default():
    """One definition of the audit's settings: the command line is built from it."""
    from dataclasses import fields
    from typing import get_args

    from deepobfuscator.audit.settings import Wire, from_flags
    from deepobfuscator.cli import build_parser
    from deepobfuscator.wire import DTYPES

    assert set(get_args(Wire)) == set(DTYPES)
    args = build_parser().parse_args(["audit", "RUN", "--patience", "7", "--grid-images", "3",
                                      "--precision", "fp32", "--max-attack-seconds", "2.5"])
    s = from_flags(args)
    assert (s.patience, s.grid_images, s.precision, s.max_attack_seconds) == (7, 3, "fp32", 2.5)
    defaults = from_flags(build_parser().parse_args(["audit", "RUN"]))
    for f in fields(AuditSettings):
        if f.name != "progress":
            assert getattr(defaults, f.name) == f.default, f.name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["audit", "RUN", "--wire", "int4"])
