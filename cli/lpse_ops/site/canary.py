"""The canary verdict of an upgrade: the bake's traffic against the baseline's, as a pure function.

Given two ``nginxlog.window_stats`` results (the baseline before the upgrade, the bake after it) and the
limits (``upgrade_canary_*`` of playbooks/upgrade.yml), ``decide`` returns the verdict record the
upgrade's result record carries under ``canary``. The rules (docs/upgrade.md, "The canary verdict"):

* the baseline is *usable* when it saw at least ``min_requests`` requests;
* the 5xx limit is the baseline's 5xx rate (0 when the baseline is not usable) + ``max_5xx_increase``;
* the p95 limit is ``max(baseline p95 * max_p95_ratio, baseline p95 + p95_slack_ms)``, or
  ``max_p95_ms`` when the baseline is not usable;
* reasons, in this order: too few requests during the bake (inconclusive), the 5xx rate above its
  limit, the p95 above its limit; the verdict is ``pass`` without reasons, else ``fail``.

The texts are the ones the playbook's Jinja wrote before this module (operators and tests grep them).
Standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """The canary's knobs: the playbook's ``upgrade_canary_*`` variables (defaults as there)."""

    min_requests: int = 20
    max_5xx_increase: float = 0.01
    max_p95_ratio: float = 2.0
    p95_slack_ms: float = 250.0
    max_p95_ms: float = 2000.0


def _number(value) -> float:
    """A window figure as a float: None (no requests) and anything unreadable count as 0.0, as in Jinja."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def decide(baseline: dict, bake: dict, limits: Limits) -> dict:
    """Judge the bake against the baseline; return ``{baseline, bake, baseline_usable, limits, reasons, verdict}``.

    *baseline* and *bake* need ``requests``, ``rate_5xx`` and ``p95_ms`` (None when a window had no
    requests); they are returned as given. ``limits`` in the result holds the 5xx rate and p95 limits
    applied and the minimum number of requests.
    """
    usable = int(baseline.get("requests") or 0) >= limits.min_requests
    base_rate, base_p95 = _number(baseline.get("rate_5xx")), _number(baseline.get("p95_ms"))
    rate_limit = (base_rate if usable else 0.0) + float(limits.max_5xx_increase)
    p95_limit = (max(base_p95 * limits.max_p95_ratio, base_p95 + limits.p95_slack_ms) if usable
                 else float(limits.max_p95_ms))
    bake_requests = int(bake.get("requests") or 0)
    reasons: list[str] = []
    if bake_requests < limits.min_requests:
        reasons.append(f"inconclusive: {bake.get('requests')} request(s) during the bake, at least "
                       f"{limits.min_requests} needed to judge")
    bake_rate = _number(bake.get("rate_5xx"))
    if bake_rate > rate_limit:
        reasons.append(f"5xx rate {round(bake_rate * 100, 1)}% during the bake, limit {round(rate_limit * 100, 1)}% "
                       f"(baseline {round(base_rate * 100, 1)}%)")
    if _number(bake.get("p95_ms")) > p95_limit:
        reasons.append(f"p95 latency {bake.get('p95_ms')} ms during the bake, limit {round(p95_limit, 0)} ms "
                       f"(baseline {baseline.get('p95_ms')} ms)")
    return {"baseline": baseline, "bake": bake, "baseline_usable": usable,
            "limits": {"rate_5xx": rate_limit, "p95_ms": p95_limit, "min_requests": limits.min_requests},
            "reasons": reasons, "verdict": "fail" if reasons else "pass"}


def limits_of(args) -> Limits:
    """The Limits a parsed command line names (``--min-requests``, ``--max-5xx-increase``, ...)."""
    return Limits(**{name: getattr(args, name) for name in asdict(Limits())})
