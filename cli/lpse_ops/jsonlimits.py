"""JSON from files someone else made (a release bundle's manifest, an evidence bundle), parsed with a depth limit.

``json.loads`` of ``[[[[...]]]]`` nested a hundred thousand deep raises RecursionError (a crash, not a
finding), and a parse that just fits can still overflow whatever walks the result later (a schema check,
a re-encoding). Every document lpse-ops reads is a few levels deep; anything deeper than ``MAX_DEPTH`` is
refused with :class:`TooDeep`, a ValueError, so callers that already turn ValueError into a clear
"malformed" message do so for this too.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class TooDeep(ValueError):
    """A JSON document nested deeper than the limit."""


def depth(value: Any) -> int:
    """Return how deeply *value* (parsed JSON) nests lists and objects; a scalar is 0. Iterative, no recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def loads(data: str | bytes, limit: int = MAX_DEPTH, **options: Any) -> Any:
    """``json.loads(data, **options)``, refusing a document nested more than *limit* levels (TooDeep)."""
    try:
        value = json.loads(data, **options)
    except RecursionError:
        raise TooDeep(f"nested more than {limit} levels deep (JSON that deep is never one lpse-ops writes)") from None
    if depth(value) > limit:
        raise TooDeep(f"nested more than {limit} levels deep (JSON that deep is never one lpse-ops writes)")
    return value
