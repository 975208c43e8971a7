"""The privacy audit: fresh attackers, baselines and chance, and a report to read."""

from .runner import AuditSettings, audit, load_audit
from .summary import summary_table

__all__ = ["AuditSettings", "audit", "load_audit", "summary_table"]
