"""The one exception the site tool raises for an expected failure."""

from __future__ import annotations

SETUP_HINT = "run `lpse-ops backup setup` (playbooks/backup.yml)"


class Failure(Exception):
    """A failed step.

    ``code`` is machine-readable (``s3_credentials_refused``, ``no_space``, ...: see ``explain.CODES``),
    ``message`` says what went wrong and what to do, ``step`` names where, ``detail`` carries the
    engine's own last lines when it said more.
    """

    def __init__(self, code: str, message: str, step: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.step = step
        self.detail = detail

    def as_fields(self) -> dict:
        """Return the failure as the JSON fields every result carries: error, code, step (and detail)."""
        fields = {"error": self.message, "code": self.code, "step": self.step}
        if self.detail:
            fields["detail"] = self.detail
        return fields


def failed(record: dict, error: Exception) -> dict:
    """*record* with *error* as its failure fields: a Failure's own, any other error as ``unexpected``.

    For a phase whose record must say how far it went whatever stopped it (upgrade-apply, upgrade-rollback).
    """
    if isinstance(error, Failure):
        record.update(error.as_fields())
    else:
        record.update(code="unexpected", step=None, error=f"unexpected {type(error).__name__}: {error}")
    return record
