"""The layout of an evidence bundle, shared by :mod:`lpse_ops.actions.evidence` (export) and
:mod:`lpse_ops.actions.evidence_verify`: the format and kind of its manifest, the names of its members, and
the error both raise.
"""

from __future__ import annotations

FORMAT = 1
KIND = "lpse-ops-evidence"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SITE_ENTRIES = "audit/site-entries.jsonl"
SEGMENT = "audit/chain-segment.jsonl"
WITNESS_OBJECTS = "witness/objects.json"
README = "BACA-SAYA.txt"


class EvidenceError(Exception):
    """The export or verification cannot be done as asked; the message says what to do."""
