"""The privacy audit: fresh attackers, baselines and chance, and a report to read.

`AuditSettings` is torch-free (the command line builds its flags from it); the rest loads
the attackers, so it is imported when first used.
"""

from typing import Any

from .settings import AuditSettings

__all__ = ["AuditSettings", "AuditResult", "audit", "summary_table"]


def __getattr__(name: str) -> Any:
    if name == "audit":
        from .runner import audit

        return audit
    if name == "AuditResult":
        from .result import AuditResult

        return AuditResult
    if name == "summary_table":
        from .summary import summary_table

        return summary_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
