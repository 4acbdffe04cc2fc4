"""The monthly report for a 600-site fleet: how long gathering, rendering and printing take (issue 11, item 3).

A throwaway SQLite state store is filled with one month (November 2026) of a fleet of N sites: one probe
per site every 6 hours (120 per site: 72,000 rows at 600 sites), an install and an upgrade rollout, a
weekly restore verification per site, and, when those areas are installed, incidents (one per 10 sites),
drills (one per 50 sites) and audits (one per site). Probes, runs and verifications are written in bulk
through the store's models in one transaction (the store's one-row-per-call writers would take minutes
for 72,000 probes; what is measured is reading and rendering, not writing); incidents, drills and audits
go through their areas' writers.

Then, ``--rounds`` times: ``gather`` (actions/report_gather.py, every query of the report), ``render_html``
(templates and the four matplotlib charts) and ``print_to_pdf`` (headless Chromium), each timed with
``time.perf_counter``; the PDF's pages are counted with ``pdfinfo``. Written as min/median/max to
``bench/results/report_600.json``. Usage::

    .venv/bin/python bench/report_600.py [--sites 600] [--rounds 3] [--out bench/results/report_600.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ZONES = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")


def fill(url: str, sites: int) -> dict[str, int]:
    """Write one month of an N-site fleet into the store at *url*; return the row counts."""
    from lpse_ops.state import StateStore
    from lpse_ops.state.models import RestoreVerification, Run, RunHost, SiteProbe

    start = datetime(2026, 10, 31, 17, 0, tzinfo=UTC)  # 1 November 00:00 WIB
    hosts = [f"lpse{number:03d}" for number in range(1, sites + 1)]
    counts = {"probes": 0, "verifications": 0, "incidents": 0, "drills": 0, "audits": 0}
    store = StateStore.open(url)
    try:
        with store._write() as session:
            install = Run(operation="install", actor="bench", args={"version": "1.1"}, hosts=hosts,
                          started_at=start - timedelta(days=40), finished_at=start - timedelta(days=40),
                          result="ok")
            rollout = Run(operation="upgrade.rollout", actor="bench", args={"target": "1.2"}, hosts=hosts,
                          started_at=start + timedelta(days=12), finished_at=start + timedelta(days=12, hours=3),
                          result="ok")
            session.add_all([install, rollout])
            session.flush()
            for index, host in enumerate(hosts):
                behind = index % 17 == 0
                session.add(RunHost(run_id=install.id, host=host, status="ok"))
                session.add(RunHost(run_id=rollout.id, host=host, status="failed" if behind else "ok"))
                for step in range(120):
                    moment = start + timedelta(hours=6 * step, minutes=index % 60)
                    session.add(SiteProbe(
                        host=host, probed_at=moment, reachable=step % 97 != index % 97, error=None,
                        spse_version="1.2" if step > 48 and not behind else "1.1", fault_codes=[],
                        disk_used_percent=30 + (index % 50) + step * 0.1, memory_available_percent=20 + index % 40,
                        load_5m=0.2 + (step % 8) / 4, cpus=4, duration_s=0.4, facts={}))
                    counts["probes"] += 1
                for week in range(4):
                    session.add(RestoreVerification(host=host, verified_at=start + timedelta(days=7 * week + 1),
                                                    ok=(index + week) % 23 != 0, restore_duration_s=60.0 + index % 90))
                    counts["verifications"] += 1
        try:
            from lpse_ops.state import incidents
        except ModuleNotFoundError:
            incidents = None
        if incidents is not None:
            for number, host in enumerate(hosts[::10]):
                opened = start + timedelta(days=number % 29, hours=3)
                priority = ("P1", "P2", "P3", "P4")[number % 4]
                record = incidents.create_incident(
                    store, kind="incident" if number % 3 else "request", site=host, site_name=host,
                    site_timezone=ZONES[number % 3], priority=priority, title=f"Gangguan {number}",
                    opened_at=opened, response_due=opened + timedelta(hours=1),
                    resolution_due=opened + timedelta(hours=8),
                    response_target_s=3600, resolution_target_s=8 * 3600)
                incidents.update_incident(store, record["id"], status="resolved", at=opened + timedelta(hours=2))
                counts["incidents"] += 1
        try:
            from lpse_ops.state.drills import finish_drill, start_drill
        except ModuleNotFoundError:
            start_drill = None
        if start_drill is not None:
            for number, host in enumerate(hosts[::50]):
                began = start + timedelta(days=number % 29, hours=2)
                drill = start_drill(store, "database-corrupted", host, {"rto_s": 3600, "rpo_db_s": 300,
                                                                       "rpo_docs_s": 300}, started_at=began)
                finish_drill(store, drill, ok=True, rto_s=1800 + number * 300, rpo_db_s=10, rpo_docs_s=200,
                             met=number % 4 != 3, finished_at=began + timedelta(hours=1))
                counts["drills"] += 1
        try:
            from lpse_ops.state.audits import record_audit
        except ModuleNotFoundError:
            record_audit = None
        if record_audit is not None:
            for index, host in enumerate(hosts):
                record_audit(store, host, score=60 + index % 40, failed=[f"c{index % 7}"], lynis_index=70,
                             audited_at=start + timedelta(days=14, hours=index % 24))
                counts["audits"] += 1
    finally:
        store.close()
    return counts


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "report_600.json")
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lpse-report-bench-"))
    os.environ["LPSE_OPS_HOME"] = str(folder / "home")
    from lpse_ops.actions import report_gather, report_request
    from lpse_ops.backends import chromium
    from lpse_ops.reports import monthly
    from lpse_ops.state import StateStore

    url = f"sqlite:///{folder / 'state.db'}"
    began = time.perf_counter()
    counts = fill(url, options.sites)
    fill_s = time.perf_counter() - began
    timings: dict[str, list[float]] = {"gather_s": [], "render_html_s": [], "print_pdf_s": []}
    pages = html_bytes = pdf_bytes = 0
    request = report_request.ReportRequest(
        kind="monthly", period=report_request.month_period("2026-11"),
        site_zones={f"lpse{n:03d}": ZONES[n % 3] for n in range(1, options.sites + 1)})
    for round_number in range(options.rounds):
        store = StateStore.open(url)
        try:
            began = time.perf_counter()
            data = report_gather.gather(store, request)
            timings["gather_s"].append(time.perf_counter() - began)
        finally:
            store.close()
        began = time.perf_counter()
        html = monthly.render_html(data)
        timings["render_html_s"].append(time.perf_counter() - began)
        html_path = folder / f"report-{round_number}.html"
        html_path.write_text(html, encoding="utf-8")
        began = time.perf_counter()
        pdf = chromium.print_to_pdf(html_path, folder / f"report-{round_number}.pdf")
        timings["print_pdf_s"].append(time.perf_counter() - began)
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
        pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
        html_bytes, pdf_bytes = len(html.encode()), pdf.stat().st_size
    result = {
        "bench": "report_600", "sites": options.sites, "rounds": options.rounds, "rows": counts,
        "fill_s": round(fill_s, 1), **{name: spread(values) for name, values in timings.items()},
        "pdf_pages": pages, "html_bytes": html_bytes, "pdf_bytes": pdf_bytes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1m_at_end": round(os.getloadavg()[0], 1)},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
