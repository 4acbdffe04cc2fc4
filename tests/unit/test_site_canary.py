"""The canary verdict (site/canary.py): the bake against the baseline, table-driven."""

from __future__ import annotations

import pytest

from lpse_ops.site import canary

LIMITS = canary.Limits(min_requests=20, max_5xx_increase=0.01, max_p95_ratio=2.0, p95_slack_ms=250,
                       max_p95_ms=2000)


def window(requests: int, rate_5xx: float | None, p95_ms: float | None) -> dict:
    return {"requests": requests, "rate_5xx": rate_5xx, "p95_ms": p95_ms}


BASELINE = window(300, 0.0, 90.0)  # usable; p95 limit max(180, 340) = 340 ms, 5xx limit 1 %


@pytest.mark.parametrize("name, baseline, bake, verdict, reasons", [
    ("a quiet release passes", BASELINE, window(100, 0.0, 120.0), "pass", []),
    ("5xx exactly one point above the baseline passes", BASELINE, window(100, 0.01, 90.0), "pass", []),
    ("5xx above the limit fails", BASELINE, window(100, 0.3, 90.0), "fail",
     ["5xx rate 30.0% during the bake, limit 1.0% (baseline 0.0%)"]),
    ("the 5xx limit starts from the baseline's own rate", window(300, 0.05, 90.0), window(100, 0.055, 90.0), "pass",
     []),
    ("p95 at the slack limit passes", BASELINE, window(100, 0.0, 340.0), "pass", []),
    ("p95 above the slack limit fails", BASELINE, window(100, 0.0, 340.5), "fail",
     ["p95 latency 340.5 ms during the bake, limit 340.0 ms (baseline 90.0 ms)"]),
    ("the ratio is the limit when it is larger", window(300, 0.0, 400.0), window(100, 0.0, 800.0), "pass", []),
    ("above the ratio fails", window(300, 0.0, 400.0), window(100, 0.0, 801.0), "fail",
     ["p95 latency 801.0 ms during the bake, limit 800.0 ms (baseline 400.0 ms)"]),
    ("too few requests in the bake is inconclusive, a fail", BASELINE, window(19, 0.0, 50.0), "fail",
     ["inconclusive: 19 request(s) during the bake, at least 20 needed to judge"]),
    ("a bake without requests names only the count", BASELINE, window(0, None, None), "fail",
     ["inconclusive: 0 request(s) during the bake, at least 20 needed to judge"]),
    ("an unusable baseline: fixed limits of 1 % and 2000 ms", window(5, 0.4, 10.0), window(100, 0.01, 1999.0), "pass",
     []),
    ("an unusable baseline's 5xx rate is not a licence", window(5, 0.4, 10.0), window(100, 0.2, 50.0), "fail",
     ["5xx rate 20.0% during the bake, limit 1.0% (baseline 40.0%)"]),
    ("an unusable baseline fails a p95 above 2000 ms", window(0, None, None), window(100, 0.0, 2500.0), "fail",
     ["p95 latency 2500.0 ms during the bake, limit 2000.0 ms (baseline None ms)"]),
    ("every failed check is named, in order", BASELINE, window(3, 1.0, 5000.0), "fail",
     ["inconclusive: 3 request(s) during the bake, at least 20 needed to judge",
      "5xx rate 100.0% during the bake, limit 1.0% (baseline 0.0%)",
      "p95 latency 5000.0 ms during the bake, limit 340.0 ms (baseline 90.0 ms)"]),
])
def test_decide_table(name, baseline, bake, verdict, reasons):
    result = canary.decide(baseline, bake, LIMITS)
    assert (result["verdict"], result["reasons"]) == (verdict, reasons), name


def test_decide_returns_the_record_shape_with_the_limits_applied():
    result = canary.decide(BASELINE, window(100, 0.0, 120.0), LIMITS)
    assert set(result) == {"baseline", "bake", "baseline_usable", "limits", "reasons", "verdict"}
    assert result["baseline"] is BASELINE and result["baseline_usable"] is True
    assert result["limits"] == {"rate_5xx": pytest.approx(0.01), "p95_ms": 340.0, "min_requests": 20}


@pytest.mark.parametrize("requests, usable", [(19, False), (20, True)])
def test_decide_baseline_usable_from_min_requests(requests, usable):
    result = canary.decide(window(requests, 0.0, 100.0), window(100, 0.0, 100.0), LIMITS)
    assert result["baseline_usable"] is usable
    assert result["limits"]["p95_ms"] == (350.0 if usable else 2000.0)


def test_decide_with_min_requests_zero_passes_an_empty_bake():
    """--bake 0 --min-requests 0 (the benchmark): nothing to judge, nothing failed."""
    limits = canary.Limits(min_requests=0)
    result = canary.decide(window(0, None, None), window(0, None, None), limits)
    assert result["verdict"] == "pass" and result["baseline_usable"] is True, result
