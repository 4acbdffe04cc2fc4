"""The site's nginx log reader: parsing lpse_timed lines, window statistics, the canary verdict, seeking in
large and rotated logs, and the ``lpse-backup traffic`` subcommand."""

from __future__ import annotations

import argparse
import json

import pytest

from lpse_ops.site import cli, nginxlog

T0 = 1_764_342_000.0  # 2025-11-28 15:00:00 UTC


def line(moment: float, path: str = "/tenders", status: int = 200, request_s: float = 0.010,
         upstream: str | None = None, method: str = "GET", mode: str = "-") -> str:
    """One line as nginx writes it with log_format lpse_timed (roles/nginx/templates/spse.conf.j2)."""
    upstream = f"{request_s:.3f}" if upstream is None else upstream
    return f"{moment:.3f}\t{method}\t{path}\t{status}\t{request_s:.3f}\t{upstream}\t123\t{mode}\n"


def stats_of(durations_ms: list[float], errors: int = 0, start: float = T0) -> dict:
    lines = [line(start + i, status=500 if i < errors else 200, request_s=ms / 1000)
             for i, ms in enumerate(durations_ms)]
    return nginxlog.window_stats(lines, start, start + len(durations_ms))


# ---- parsing -------------------------------------------------------------------------------------------


def test_parse_line_reads_every_field_and_drops_the_query():
    request = nginxlog.parse_line("1764342000.123\tPOST\t/tenders?x=1\t201\t0.250\t0.248\t99\tread-only\n")
    assert request == nginxlog.Request(time=1764342000.123, method="POST", path="/tenders", status=201,
                                       request_s=0.25, upstream_s=0.248, maintenance="read-only")
    assert not request.answered_by_nginx


def test_parse_line_marks_answers_nginx_gave_itself_and_sums_upstream_tries():
    assert nginxlog.parse_line(line(T0, status=503, upstream="-", mode="full")).answered_by_nginx
    assert nginxlog.parse_line(line(T0, upstream="0.004, 0.010")).upstream_s == pytest.approx(0.014)


@pytest.mark.parametrize("text", ["", "\n", '127.0.0.1 - - [28/Nov/2025:15:00:00 +0000] "GET / HTTP/1.1" 200 5',
                                  "notatime\tGET\t/\t200\t0.1\t0.1\t1\t-", "1764342000.1\tGET\t/\t200"])
def test_parse_line_returns_none_for_other_formats(text):
    assert nginxlog.parse_line(text) is None


def test_parse_line_ignores_fields_added_later():
    assert nginxlog.parse_line(line(T0).rstrip("\n") + "\textra\tmore\n").status == 200


# ---- statistics ----------------------------------------------------------------------------------------


def test_nearest_rank_on_known_data():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert nginxlog.nearest_rank(values, 95) == 19.0  # ceil(0.95 * 20) = 19th
    assert nginxlog.nearest_rank(values, 50) == 10.0
    assert nginxlog.nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert nginxlog.nearest_rank(list(map(float, range(1, 101))), 95) == 95.0
    assert nginxlog.nearest_rank([7.0], 95) == 7.0
    assert nginxlog.nearest_rank([], 95) is None


def test_window_stats_counts_requests_5xx_and_percentiles():
    lines = [line(T0 + i, request_s=(i + 1) / 1000) for i in range(18)]  # 1..18 ms
    lines += [line(T0 + 18, status=502, request_s=0.019), line(T0 + 19, status=500, request_s=0.020)]
    lines.append(line(T0 + 19.5, status=404, request_s=0.001))  # a 4xx is a request, not an error
    stats = nginxlog.window_stats(lines, T0, T0 + 60)
    assert stats["requests"] == 21 and stats["errors_5xx"] == 2
    assert stats["rate_5xx"] == pytest.approx(2 / 21)
    # sorted: 1, 1, 2, ..., 20 ms (21 values): p95 rank ceil(19.95) = 20 -> 19 ms, p50 rank 11 -> 10 ms
    assert stats["p95_ms"] == pytest.approx(19.0) and stats["p50_ms"] == pytest.approx(10.0)
    assert stats["max_ms"] == pytest.approx(20.0)
    assert stats["first"] == T0 and stats["last"] == T0 + 19.5


def test_window_stats_leaves_out_health_and_the_maintenance_page():
    lines = [line(T0 + 1, path="/health", request_s=9.0),
             line(T0 + 2, path="/health?deep=1", status=503, request_s=9.0),
             line(T0 + 3, status=503, upstream="-", mode="full", method="POST", request_s=0.0),
             line(T0 + 4, status=503, upstream="-", mode="read-only", request_s=0.0),
             line(T0 + 5, status=200, request_s=0.005, mode="read-only")]
    assert nginxlog.parse_line(line(T0, mode="off")).maintenance is None
    stats = nginxlog.window_stats(lines, T0, T0 + 10)
    assert stats["requests"] == 1 and stats["errors_5xx"] == 0 and stats["max_ms"] == pytest.approx(5.0)
    assert stats["excluded_paths"] == 2 and stats["answered_by_nginx"] == 2


def test_window_stats_counts_a_502_from_a_dead_upstream():
    # nginx tried SPSE and got no answer: an upstream time is logged, so it counts as SPSE's 5xx
    stats = nginxlog.window_stats([line(T0, status=502, upstream="0.000")], T0, T0 + 1)
    assert stats["requests"] == 1 and stats["errors_5xx"] == 1


def test_window_stats_bounds_are_since_inclusive_until_exclusive():
    lines = [line(T0 - 0.001), line(T0), line(T0 + 59.999), line(T0 + 60)]
    stats = nginxlog.window_stats(lines, T0, T0 + 60)
    assert stats["requests"] == 2 and stats["first"] == T0 and stats["last"] == pytest.approx(T0 + 59.999)


def test_window_stats_of_an_empty_window_has_no_numbers_and_counts_unparsed_lines():
    stats = nginxlog.window_stats(["garbage\n", line(T0 - 100)], T0, T0 + 60)
    assert stats["requests"] == 0 and stats["rate_5xx"] is None and stats["p95_ms"] is None
    assert stats["first"] is None and stats["unparsed"] == 1


# ---- the canary verdict ---------------------------------------------------------------------------------

BEFORE = {"requests": 100, "rate_5xx": 0.0, "p95_ms": 50.0}


@pytest.mark.parametrize("after, verdict", [
    ({"requests": 100, "rate_5xx": 0.01, "p95_ms": 50.0}, "pass"),     # exactly +1 point: allowed
    ({"requests": 100, "rate_5xx": 0.0101, "p95_ms": 50.0}, "fail"),   # just above
    ({"requests": 100, "rate_5xx": 0.0, "p95_ms": 150.0}, "pass"),     # 50 + 100 ms slack beats 2 x 50
    ({"requests": 100, "rate_5xx": 0.0, "p95_ms": 150.5}, "fail"),
])
def test_compare_on_each_side_of_the_5xx_and_slack_thresholds(after, verdict):
    result = nginxlog.compare(BEFORE, after)
    assert result["verdict"] == verdict, result


@pytest.mark.parametrize("p95_after, verdict", [(800.0, "pass"), (800.5, "fail")])
def test_compare_uses_the_ratio_when_it_is_the_larger_limit(p95_after, verdict):
    before = {"requests": 50, "rate_5xx": 0.02, "p95_ms": 400.0}  # 2 x 400 = 800 beats 400 + 100
    after = {"requests": 50, "rate_5xx": 0.02, "p95_ms": p95_after}
    assert nginxlog.compare(before, after)["verdict"] == verdict


def test_compare_fail_names_every_failed_check():
    result = nginxlog.compare(BEFORE, {"requests": 100, "rate_5xx": 0.5, "p95_ms": 1000.0})
    assert result["verdict"] == "fail"
    assert any("5xx rate 0.5000 is above 0.0100" in r for r in result["reasons"])
    assert any("p95 1000 ms is above 150 ms" in r for r in result["reasons"])


@pytest.mark.parametrize("before_n, after_n, verdict", [(19, 100, "inconclusive"), (100, 19, "inconclusive"),
                                                        (20, 20, "pass"), (0, 0, "inconclusive")])
def test_compare_is_inconclusive_below_the_minimum_requests(before_n, after_n, verdict):
    before = {**BEFORE, "requests": before_n}
    after = {**BEFORE, "requests": after_n}
    if after_n == 0:
        after = {"requests": 0, "rate_5xx": None, "p95_ms": None}
    result = nginxlog.compare(before, after)
    assert result["verdict"] == verdict, result
    if verdict == "inconclusive":
        assert "fewer than 20" in result["reasons"][0]


def test_compare_on_real_window_stats():
    before = stats_of([10.0] * 30)
    assert nginxlog.compare(before, stats_of([12.0] * 30))["verdict"] == "pass"
    assert nginxlog.compare(before, stats_of([10.0] * 30, errors=2))["verdict"] == "fail"  # 2/30 > 0.01


# ---- reading large and rotated logs ---------------------------------------------------------------------


def write_log(path, start: float, count: int, step: float = 0.01) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line(start + i * step, request_s=0.001 * (1 + i % 7)) for i in range(count))


def test_file_lines_seeks_close_to_the_window_in_a_large_log(tmp_path):
    log = tmp_path / "spse-access.log"
    write_log(log, T0, 200_000)  # ~8 MB, 2000 s of 100 requests/s
    since, until = T0 + 1500, T0 + 1560
    read = list(nginxlog.file_lines(str(log), since, until))
    # the window holds 6000 lines; the read is that plus the slack on both sides and one search block
    assert 6000 < len(read) < 6000 + 2 * nginxlog.SLACK_S * 100 + nginxlog.BLOCK // 30
    stats = nginxlog.window_stats(read, since, until)
    assert stats["requests"] == 6000
    assert stats["first"] == pytest.approx(since) and stats["last"] == pytest.approx(until - 0.01)


def test_file_lines_survive_unparsed_lines_around_the_probes(tmp_path):
    log = tmp_path / "spse-access.log"
    with open(log, "w", encoding="utf-8") as handle:
        for i in range(50_000):
            handle.write(line(T0 + i * 0.01))
            if i % 3 == 0:
                handle.write("a line of another format\n")
    stats = nginxlog.window_stats(nginxlog.file_lines(str(log), T0 + 100, T0 + 200), T0 + 100, T0 + 200)
    assert stats["requests"] == 10_000


def test_window_lines_reads_the_rotated_file_when_the_window_starts_before_the_current_one(tmp_path):
    log = tmp_path / "spse-access.log"
    write_log(str(log) + ".1", T0, 1000, step=0.1)  # T0 .. T0+99.9
    write_log(log, T0 + 100, 1000, step=0.1)  # T0+100 .. T0+199.9
    stats = nginxlog.window_stats(nginxlog.window_lines(str(log), T0 + 90, T0 + 110), T0 + 90, T0 + 110)
    assert stats["requests"] == 200 and stats["first"] == pytest.approx(T0 + 90)


def test_window_lines_skips_the_rotated_file_when_the_current_one_covers_the_window(tmp_path):
    log = tmp_path / "spse-access.log"
    (tmp_path / "spse-access.log.1").write_text("a rotated line that would count as unparsed if read\n")
    write_log(log, T0, 1000, step=0.1)
    stats = nginxlog.window_stats(nginxlog.window_lines(str(log), T0 + 50, T0 + 60), T0 + 50, T0 + 60)
    assert stats["requests"] == 100 and stats["unparsed"] == 0


def test_window_lines_reads_only_the_rotated_file_just_after_a_rotation(tmp_path):
    log = tmp_path / "spse-access.log"
    write_log(str(log) + ".1", T0, 100, step=1)
    log.write_text("")
    assert nginxlog.window_stats(nginxlog.window_lines(str(log), T0, T0 + 100), T0, T0 + 100)["requests"] == 100


def test_window_lines_without_any_log_raises_log_missing(tmp_path):
    with pytest.raises(nginxlog.Failure) as caught:
        list(nginxlog.window_lines(str(tmp_path / "nope.log"), T0, T0 + 1))
    assert caught.value.code == "log_missing"


# ---- the subcommand -------------------------------------------------------------------------------------


def test_traffic_subcommand_prints_one_json_object_with_the_stats(tmp_path, capsys, monkeypatch):
    log = tmp_path / "spse-access.log"
    write_log(log, T0, 100, step=1)
    args = cli.parser().parse_args(["traffic", "--since", str(T0 + 10), "--until", str(T0 + 40), "--log", str(log)])
    monkeypatch.setattr(cli.settings, "load", lambda path: None)
    result = cli.dispatch(args, "unused", euid=0)
    json.dumps(result)
    assert result["action"] == "traffic" and result["ok"] is True
    assert result["requests"] == 30 and result["errors_5xx"] == 0 and result["p95_ms"] == pytest.approx(7.0)
    assert {"rate_5xx", "p50_ms", "max_ms", "first", "last", "since", "until", "log"} <= result.keys()


def test_traffic_subcommand_refuses_an_empty_window():
    args = argparse.Namespace(since=T0, until=T0, log="/nonexistent")
    with pytest.raises(nginxlog.Failure) as caught:
        nginxlog.main(None, args)
    assert caught.value.code == "bad_window"
