"""`privacy.method=none`: the task stage alone, the no-privacy baseline (same code)."""

from __future__ import annotations

from . import PrivacyMethod, register_method


@register_method
class NoPrivacy(PrivacyMethod):
    name = "none"
    summary = "the task alone (E and C): the no-privacy baseline"
