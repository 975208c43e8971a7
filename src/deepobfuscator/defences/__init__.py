"""Upload defences: one module each, one interface and registry (defences/base.py)."""

from .base import (
    DEFENCES,
    Defence,
    FitContext,
    all_defences,
    baseline_overrides,
    extra_macs,
    feature_shape,
    finish_fits,
    pipeline,
    register_defence,
    sent_positions,
    task_stage_keys,
    upload_shape,
    validate_defences,
)

__all__ = ["DEFENCES", "Defence", "FitContext", "all_defences", "baseline_overrides", "extra_macs",
           "feature_shape", "finish_fits", "pipeline", "register_defence", "sent_positions",
           "task_stage_keys", "upload_shape", "validate_defences"]
