"""``lpse-ops report monthly|compliance``: gather a period's facts from the state store, render, record.

:func:`generate` gathers (:func:`lpse_ops.actions.report_gather.gather`, into a typed ``ReportData``), renders
the HTML (``reports/monthly.py``), prints it to PDF when asked (``backends/chromium.py``), writes the files
and records the report as a run (``report.monthly`` / ``report.compliance``) with the files' sha256,
so the audit log shows which report was issued from which data (clauses 13.3, 13.4). What a report is asked
for (kind, formats, period, work plan) is in :mod:`lpse_ops.actions.report_request`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from lpse_ops import config
from lpse_ops.actions.report_gather import gather
from lpse_ops.actions.report_request import FORMATS, ReportFailed, ReportRefused, ReportRequest
from lpse_ops.reports import dates
from lpse_ops.reports.data import NATIONAL_ZONE, ReportData

# -- generating -----------------------------------------------------------------------------------


@dataclass
class ReportOutcome:
    """What :func:`generate` wrote: the run id, each file and its sha256, and the data behind them."""

    run_id: int | None
    files: dict[str, Path]
    sha256: dict[str, str]
    data: ReportData

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "files": {kind: str(path) for kind, path in self.files.items()},
                "sha256": self.sha256, "period": self.data.period.as_dict(), "kind": self.data.kind,
                "sources": {key: asdict(source) for key, source in self.data.sources.items()},
                "data": self.data.as_dict()}


def file_stem(data: ReportData) -> str:
    """Return the files' name without extension: ``laporan-bulanan-2026-11`` or ``laporan-kepatuhan-...``."""
    start = data.period.since.astimezone(dates.zone(NATIONAL_ZONE))
    if data.kind == "monthly":
        return f"laporan-bulanan-{start:%Y-%m}"
    last = (data.period.until - timedelta(seconds=1)).astimezone(dates.zone(NATIONAL_ZONE))
    return f"laporan-kepatuhan-{start:%Y-%m-%d}_{last:%Y-%m-%d}"


def generate(request: ReportRequest) -> ReportOutcome:
    """Gather, render HTML (and PDF), write them to *out_dir*, and record the report as a run.

    Raises ReportRefused (nothing written) on a bad request, or when PDF is asked for and no Chromium
    is installed; a PDF engine that fails after the HTML was written finishes the run as failed.
    """
    from lpse_ops.backends import chromium
    from lpse_ops.reports import monthly
    from lpse_ops.state import StateStore

    say = request.progress or (lambda _text: None)
    unknown = [name for name in request.formats if name not in FORMATS]
    if unknown or not request.formats:
        raise ReportRefused(f"--format takes {', '.join(FORMATS)} (comma-separated), not {','.join(unknown) or '-'}")
    if "pdf" in request.formats:
        try:
            chromium.binary()
        except chromium.ChromiumError as error:
            raise ReportRefused(str(error)) from error
    out_dir = request.out_dir or Path.cwd()
    store = StateStore.open(request.state_url or config.state_url())
    try:
        say("reading the state store")
        data = gather(store, request)
        run_id = store.start_run(f"report.{request.kind}", {
            "period": data.period.as_dict(), "formats": list(request.formats), "out_dir": str(out_dir),
            "release": request.release, "work_plan": str(request.work_plan) if request.work_plan else None}, [])
        files: dict[str, Path] = {}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            say("rendering the charts and the HTML")
            html_path = out_dir / f"{file_stem(data)}.html"
            html_path.write_text(monthly.render_html(data), encoding="utf-8")
            files["html"] = html_path
            if "pdf" in request.formats:
                say("printing the PDF with headless Chromium")
                files["pdf"] = chromium.print_to_pdf(html_path, out_dir / f"{file_stem(data)}.pdf")
            if "html" not in request.formats:
                html_path.unlink()
                files.pop("html")
        except BaseException as error:
            store.finish_run(run_id, "failed" if isinstance(error, Exception) else "aborted",
                             summary={"error": str(error)[:500],
                                      "files": {kind: str(path) for kind, path in files.items()}})
            if isinstance(error, chromium.ChromiumError):
                written = f"; {files['html']} was written" if "html" in files else ""
                raise ReportFailed(f"{error}{written} (run {run_id} recorded as failed)") from error
            raise
        digests = {kind: hashlib.sha256(path.read_bytes()).hexdigest() for kind, path in files.items()}
        store.finish_run(run_id, "ok", artifact_dir=out_dir, summary={
            "files": {kind: str(path) for kind, path in files.items()}, "sha256": digests,
            "sources": {key: source.state for key, source in data.sources.items()}})
    finally:
        store.close()
    return ReportOutcome(run_id, files, digests, data)
