"""The lpse-ops state store: run history and the tamper-evident audit log (SQLite or PostgreSQL)."""

from lpse_ops.state.audit import AuditVerifyResult
from lpse_ops.state.store import RESULTS, RunNotFoundError, StateError, StateStore

__all__ = ["RESULTS", "AuditVerifyResult", "RunNotFoundError", "StateError", "StateStore"]
