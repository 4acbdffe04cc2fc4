"""The Disaster Recovery Plan (clause 10.2), in Bahasa Indonesia, as Markdown and HTML.

``scenario_from_runbook`` turns a parsed runbook (``lpse_ops.runbooks``) into a :class:`Scenario`;
``render`` fills the templates ``drp.md.j2`` and ``drp.html.j2`` with the scenarios, their targets,
steps and latest drill results, and the contacts (clause 7.2). Pure: no I/O but reading the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lpse_ops.reports import dates, templating
from lpse_ops.reports.notice import AGREEMENT, HELPDESK, SENDER

FORMATS = ("md", "html")
CLAUSE = "10.2"
CLAUSE_TEXT = "LKPP bersama dengan LPSE mempersiapkan Business Continuity Plan dan Disaster Recovery Plan sesuai " \
              "kebutuhan."
"""Clause 10.2 in the agreement's own words (its OCR corrected)."""
NEVER_DRILLED = "belum pernah diuji"

SCENARIO_TEXT: dict[str, tuple[str, str]] = {
    "database-corrupted": ("Basis data rusak",
                           "Berkas data PostgreSQL di satu lokasi rusak atau tidak dapat dijalankan; folder dokumen "
                           "dan cadangan utuh. Pemulihan: point-in-time recovery dari repositori cadangan lokal."),
    "documents-lost": ("Folder dokumen hilang",
                       "Folder dokumen tender hilang atau kosong sementara basis data utuh. Pemulihan: basis data "
                       "dan dokumen dikembalikan ke snapshot terakhir agar keduanya selalu sesuai."),
    "failed-upgrade": ("Pembaruan SPSE gagal",
                       "Pembaruan SPSE gagal di tengah jalan. Pemulihan: rollback otomatis atau "
                       "`lpse-ops upgrade rollback` ke titik sebelum pembaruan."),
    "ransomware": ("Serangan ransomware",
                   "Berkas lokasi dan cadangan lokal terenkripsi atau terhapus. Pemulihan: salinan offsite yang "
                   "terkunci (Object Lock) sebagaimana keadaannya sebelum serangan."),
    "rows-deleted": ("Data terhapus karena kesalahan",
                     "Baris data terhapus atau terubah karena kesalahan. Pemulihan: point-in-time recovery ke saat "
                     "tepat sebelum kesalahan."),
    "server-lost": ("Server hilang",
                    "Server lokasi hilang atau rusak total. Pemulihan: server baru dibangun dari bucket offsite dan "
                    "inventaris saja."),
}
"""Indonesian name and summary of each known scenario; others keep the runbook's own title and meaning."""

SECTION_TEXT = {"Diagnosis": "Diagnosis", "Recovery": "Pemulihan", "Verification": "Verifikasi"}
ON_FAILURE_TEXT = {"stop": "berhenti", "continue": "lanjut", "ask": "operator memutuskan"}


@dataclass
class Step:
    """One executable step of a scenario's runbook."""

    id: str
    section: str
    command: str
    on_failure: str


@dataclass
class DrillResult:
    """The latest drill of a scenario on one site (``state.drills.list_drills`` keys, zone resolved)."""

    site: str
    started_at: datetime | None
    timezone: str
    ok: bool | None
    met: bool | None
    failed_step: str | None
    rto_s: float | None
    rpo_db_s: float | None
    rpo_docs_s: float | None
    count: int = 1


@dataclass
class Scenario:
    """One disaster scenario: its runbook, targets, steps and drill results (empty: never drilled)."""

    scenario: str
    name: str
    summary: str
    runbook: str
    owner: str
    rto_s: int
    rpo_db_s: int
    rpo_docs_s: int
    clauses: list[str]
    steps: list[Step]
    drills: list[DrillResult] = field(default_factory=list)


@dataclass
class SiteContacts:
    """A site's contacts from the inventory (clause 7.2)."""

    host: str
    name: str
    timezone: str
    helpdesk: str | None
    contacts: list[dict[str, str]]


@dataclass
class DrpContent:
    """Everything the plan holds."""

    generated_at: datetime
    zone: str
    scenarios: list[Scenario]
    sites: list[SiteContacts] | None
    drills_available: bool
    notes: list[str] = field(default_factory=list)
    helpdesk: str = HELPDESK
    sender: str = SENDER
    rto_model: dict[str, Any] | None = None
    """The server-lost RTO by size and link (actions/drp_rto.py): ``rates`` (a drill's), ``estimates`` (per site),
    ``target_s``; None without an inventory."""


def scenario_from_runbook(runbook: Any, path: str) -> Scenario | None:
    """Return the Scenario of a parsed runbook (``runbooks.parse``), or None when its front matter is unusable."""
    front = runbook.front_matter or {}
    scenario = front.get("scenario")
    try:
        rto_s = int(front["rto_target_minutes"]) * 60
        rpo_db_s, rpo_docs_s = int(front["rpo_target_seconds"]), int(front["rpo_documents_target_seconds"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(scenario, str):
        return None
    name, summary = SCENARIO_TEXT.get(scenario, (runbook.title or scenario, ""))
    steps = [Step(id=step.id or "?", section=SECTION_TEXT.get(step.section or "", step.section or "-"),
                  command=step.command, on_failure=ON_FAILURE_TEXT.get(step.on_failure or "", step.on_failure or "-"))
             for step in runbook.steps]
    return Scenario(scenario=scenario, name=name, summary=summary, runbook=path, owner=str(front.get("owner", "")),
                    rto_s=rto_s, rpo_db_s=rpo_db_s, rpo_docs_s=rpo_docs_s,
                    clauses=[str(clause) for clause in front.get("clauses") or []], steps=steps)


def seconds_text(seconds: float | None) -> str:
    """Return a duration in Indonesian: "45 detik", "30 menit", "1 jam 5 menit"; "-" when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} detik"
    return dates.format_duration(timedelta(seconds=seconds))


_environment = templating.environment


def _verdict(drill: DrillResult) -> str:
    if drill.ok is None:
        return "sedang berjalan"
    if not drill.ok:
        return f"gagal (langkah {drill.failed_step})" if drill.failed_step else "gagal"
    return "berhasil, target tercapai" if drill.met else "berhasil, target tidak tercapai"


def context(content: DrpContent) -> dict[str, Any]:
    """Return the template variables: every duration and date in Indonesian, drill dates in each site's zone."""
    scenarios = []
    for item in content.scenarios:
        drills = [{"site": drill.site, "count": drill.count, "verdict": _verdict(drill), "ok": drill.ok,
                   "met": drill.met,
                   "when": dates.format_datetime(drill.started_at, drill.timezone) if drill.started_at else "-",
                   "rto": seconds_text(drill.rto_s), "rpo_db": seconds_text(drill.rpo_db_s),
                   "rpo_docs": seconds_text(drill.rpo_docs_s)} for drill in item.drills]
        scenarios.append({"scenario": item.scenario, "name": item.name, "summary": item.summary,
                          "runbook": item.runbook, "owner": item.owner, "rto": seconds_text(item.rto_s),
                          "rpo_db": seconds_text(item.rpo_db_s), "rpo_docs": seconds_text(item.rpo_docs_s),
                          "clauses": item.clauses, "steps": item.steps, "drills": drills,
                          "status": drills and ("teruji, target tercapai" if all(d["met"] for d in drills)
                                                else "teruji, ada target yang belum tercapai") or NEVER_DRILLED})
    return {
        "generated_text": dates.format_datetime(content.generated_at, content.zone),
        "scenarios": scenarios,
        "sites": content.sites,
        "drills_available": content.drills_available,
        "notes": content.notes,
        "helpdesk": content.helpdesk,
        "sender": content.sender,
        "clause": CLAUSE,
        "clause_text": CLAUSE_TEXT,
        "agreement": AGREEMENT,
        "never_drilled": NEVER_DRILLED,
        "rto_model": rto_model_context(content.rto_model),
    }


def _decimal_comma(number: float) -> str:
    """``1,234.5`` as Indonesian writes it: ``1.234,5``."""
    return f"{number:,.1f}".replace(",", "X").replace(".", ",").replace("X", ".")


def _gb(value: float | None) -> str:
    return "-" if value is None else _decimal_comma(value / 1e9)


def rto_model_context(model: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model's rates and each site's estimate as Indonesian text (sizes in GB with a decimal comma)."""
    if model is None:
        return None
    rates = model.get("rates")
    target = model.get("target_s")
    rows = []
    for item in model.get("estimates") or []:
        rto = item.get("rto_serving_s")
        rows.append({"host": item["host"], "link": f"{item['link_mbit']:g} Mbit/s" if item.get("link_mbit") else "-",
                     "database": _gb(item.get("database_bytes")), "files": _gb(item.get("files_bytes")),
                     "first": _gb(item.get("first_bytes")), "rto": seconds_text(rto),
                     "hydration": seconds_text(item.get("hydration_s")),
                     "verdict": ("data belum lengkap: " + item["missing"]) if item.get("missing") else
                     ("dalam target" if target is None or rto <= target else "melebihi target")})
    return {"rates": rates and {
        "drill": rates["drill_id"], "site": rates["site"], "link": f"{rates['link_mbit']:g} Mbit/s",
        "fixed": seconds_text(rates["fixed_s"]),
        "database_rate": f"{_decimal_comma(rates['database_bytes_s'] / 1e6)} MB/detik",
        "efficiency": f"{rates['efficiency'] * 100:.0f}%"}, "rows": rows, "target": seconds_text(target)}


def render(content: DrpContent, output_format: str) -> str:
    """Render the plan as ``md`` or ``html``; raise ValueError on another format."""
    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {output_format!r}")
    return _environment().get_template(f"drp.{output_format}.j2").render(context(content))
