"""The README's main job: a no-privacy baseline and the default obfuscator (the `cpu`
preset) on synthfaces, both audited by fresh attackers through the default int8 upload,
with a report a person can read. `--tasks multi`: one upload answers two questions (the
`multitask` preset)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .audit import AuditSettings, audit, summary_table
from .config import Config, load_config, no_privacy_overrides, preset_overrides
from .log import log
from .training import train
from .training.reuse import start_from_baseline

DEMO_ATTACK_EPOCHS = 5
# the white-box attacker is the weakest at these splits (docs/notebook.md): a small budget;
# dlib's recogniser (when installed) would add minutes: `deepobfuscator audit` runs it
DEMO_WHITEBOX: dict[str, Any] = {"whitebox_images": 8, "whitebox_steps": 100}


# The demo's synthetic faces (the preset's default is 10,000): every stage's cost scales
# with the count, and 7,000 keeps the demo within 6 minutes on 2 cores without bf16 while
# the baseline's attackers still pass the audit's strength checks (BENCHMARKS.md)
DEMO_IMAGES = 7000


# `--tasks multi`: the multitask preset (every one of the bottleneck's numbers sent, the
# cap at noise 2) answering two questions. On synthfaces, under the cap, one task takes the
# upload when the other lives elsewhere in the face (Smiling with Eyeglasses, or with hair
# colour: BENCHMARKS.md "A multi-task demo on synthfaces"); two mouth questions share it.
# Without the head's dropout the second task learns within the demo's epochs.
DEMO_MULTI_TASK = ["data.task=[Smiling,Mouth_Slightly_Open]", "data.held_out=[]",
                   "model.dropout=0"]
DEMO_TASKS = ("one", "multi")


def demo_configs(quick: bool = False, threads: int = 0, tasks: str = "one") -> dict[str, Config]:
    # quick: the `quick` preset's sizes (the pipeline on a few hundred faces, for tests)
    if tasks not in DEMO_TASKS:
        raise ValueError(f"demo tasks {tasks!r}: choose from {DEMO_TASKS}")
    size = [] if quick else [f"data.synth_images={DEMO_IMAGES}"]
    if tasks == "one":
        preset, extra = ("quick" if quick else "cpu"), size
    else:  # the multitask preset at the quick preset's sizes
        preset = "multitask"
        extra = [*DEMO_MULTI_TASK, *(preset_overrides("quick") if quick else size)]
    extra = [*extra, f"threads={threads}"]
    return {
        "baseline": load_config(preset, [*extra, *no_privacy_overrides()]),
        "obfuscated": load_config(preset, extra),
    }


def run_demo(out: Path, quick: bool = False, progress: bool = True, threads: int = 0,
             tasks: str = "one") -> Path:
    """Train both runs into out/, audit them into out/audit; returns the audit folder."""
    from .threads import resolve_threads

    resolve_threads(threads)  # a bad count fails here, before any folder is made
    out = Path(out)
    t0 = time.time()
    runs: dict[str, Path] = {}
    for name, cfg in demo_configs(quick, threads, tasks).items():
        log.info(f"== training {name} on synthfaces ({out / name})")
        if "baseline" in runs and start_from_baseline(cfg, out / name, runs["baseline"]):
            log.info("   stage 1 (task) is the baseline's, bit for bit: starting from its "
                     "checkpoint")
        runs[name] = train(cfg, out / name, progress=progress)
    # attackers capped at DEMO_ATTACK_EPOCHS keep the demo to minutes on 2 cores (321 s
    # without bf16, BENCHMARKS.md); on the baseline they still pass the audit's strength
    # checks (`deepobfuscator audit` defaults to 30 epochs with early stopping)
    settings = AuditSettings(max_epochs=DEMO_ATTACK_EPOCHS, wire="int8", progress=progress,
                             threads=threads, recogniser="off", **DEMO_WHITEBOX)
    if quick:
        # no prior-guided inversion: its face prior learns nothing from 2 epochs on a
        # smoke test's few hundred photos
        settings = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=10,
                                 grid_images=4, wire="int8", progress=progress,
                                 threads=threads, recogniser="off", prior_images=0)
        log.info("== quick audit: the prior-guided inversion is skipped (prior_images=0)")
    log.info("== auditing with fresh attackers")
    result = audit(runs["obfuscated"], runs["baseline"], out / "audit", settings)
    # the phone's half, ready to serve: the page runs it in a browser
    from .deploy.export import export_run

    export = export_run(runs["obfuscated"], out / "export", parity_images=8, mobile=False,
                        force=True, threads=threads)
    log.info("")
    log.info(summary_table(result))
    log.info(f"\ndemo finished in {time.time() - t0:.0f} s")
    log.info(f"report: {result / 'report.html'} (and report.md)")
    log.info(f"try it in a browser: deepobfuscator serve {export} --attacker-view {result}\n"
          "  then open http://127.0.0.1:8000/ and drop a face photo (the page runs the "
          "obfuscator; only its features leave the browser)")
    return result
