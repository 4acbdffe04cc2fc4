"""Server lost (runbooks/server-lost.md; clauses 10.2, 10.4), drilled with ``lpse-ops drill run server-lost``:
the site's container is destroyed and a bare Debian host takes its name and ports; the runbook's steps, run
by the drill with the real CLI, rebuild it from the offsite bucket and the inventory alone, while the drill's
marker workload has been writing through the app up to the loss. Afterwards the rebuilt site serves with
its data and its backups running, for the lab tests after this one (it runs late: ``LATE_MODULES``).

The moments under test, on the old server before it is lost (both documents timers stopped, so the
snapshots are the test's own):

1. tender KEEP and document SNAP, then a full documents snapshot;
2. tender AFTERSNAP and document DELTA, then a delta snapshot (``run --type delta``: just the new file);
3. document LOST: uploaded after the delta, so its file is lost with the server;
4. tender LATE, and the WAL holding everything so far pushed offsite;
5. then the drill's markers (tenders and documents, all after the delta) until the loss.

Recovering to ``latest`` replays all of it; DELTA's file comes from the delta snapshot (without it the
database would have to go back to before DELTA), LOST's file (and every marker's) is in no snapshot: the
database is recovered again to just before LOST, so KEEP, SNAP, AFTERSNAP and DELTA are back, LOST, LATE
and every marker are not, and every document the database references is present with its sha256. The
drill measures that honestly: RPO figures that are lower bounds, recorded, and the RTO from the loss to
the verified site. The rebuilt site runs the release the lost one ran (in the full run an upgraded one).

Serve first, then hydrate (issue 20), over a shaped link (``lab wan set --mbit 16``) with a first budget of 1 MB
(``site_restore_first_mb``): OPEN's small documents (the open tenders' where the release's schema has a status,
else the newest files) are back before SPSE serves, LATER's (1.5 MB each) come back afterwards. A watcher outside
the drill sees, the moment SPSE serves again, OPEN's document answer 200 with its exact bytes and LATER's answer
503 with Retry-After and the Indonesian page; it then kills the hydration once (SIGKILL), which systemd starts
again and which finishes; the drill reports the RTO to serving, the first and the last hydrated document.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import yaml

from lpse_ops.lab import lab as lab_actions
from lpse_ops.state import StateStore
from tests.lab.labkit import (
    SITE,
    archived_now,
    backup_cli,
    container_of,
    documents_not_matching,
    on_site,
    run_cli,
    sql,
    stop_documents_timers,
    upload_documents,
)

LATER_SIZE = 3 << 19  # 1.5 MB: more than the first budget, so never among the first documents


class ServingWatch(threading.Thread):
    """From the control node, while the drill runs (issue 20: serve first, then hydrate): waits for the site to go
    (the loss) and to serve again, then fetches a first and a later document through nginx and kills the
    hydration service once."""

    def __init__(self, port: int, tender: str, first: tuple[str, str], later: tuple[str, str]) -> None:
        super().__init__(daemon=True)
        self.port, self.tender, self.first, self.later = port, tender, first, later
        self.seen: dict = {}
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def get(self, path: str) -> tuple[int, dict, bytes]:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=self.context,  # noqa: S310
                                        timeout=5) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()
        except OSError:
            return 0, {}, b""

    def wait(self, condition, what: str, bound_s: float) -> None:
        deadline = time.monotonic() + bound_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not happen within {bound_s:.0f} s")
            time.sleep(0.2)

    def recovered(self) -> bool:
        """SPSE answers with the lost database: its newest tender is at least the open tender (the fresh install's
        database has none)."""
        status, _headers, body = self.get("/tenders?limit=1")
        try:
            newest = json.loads(body) if status == 200 else []
        except ValueError:
            return False
        return bool(newest) and int(newest[0]["id"]) >= int(self.tender)

    def run(self) -> None:
        try:
            self.wait(lambda: self.get("/health")[0] != 200, "the loss", 900)
            # the rebuilt host serves an empty SPSE after its install; the recovered data is served once the open
            # tender (a row of the lost database) answers: the documents are fetched at that moment
            self.wait(self.recovered, "serving the recovered data", 1800)
            self.seen["first"] = self.get(f"/documents/{self.first[0]}")
            self.seen["later"] = self.get(f"/documents/{self.later[0]}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # killed once it is at work (its run recorded), not before it began (ci17: a kill in the service's
                # first second left nothing for the restart to go on from)
                status = subprocess.run(["docker", "exec", container_of(SITE), "cat",
                                         "/var/lib/lpse-backup/hydration.json"], capture_output=True, text=True,
                                        check=False)
                try:
                    hydration = json.loads(status.stdout) if status.returncode == 0 else {}
                except ValueError:
                    hydration = {}
                if hydration.get("state") == "running" and (hydration.get("runs") or 0) >= 1:
                    subprocess.run(["docker", "exec", container_of(SITE), "systemctl", "kill", "--signal=SIGKILL",
                                    "lpse-backup-hydrate.service"], check=True, capture_output=True, timeout=60)
                    self.seen["killed"] = True
                    break
                time.sleep(0.2)
        except Exception as error:  # noqa: BLE001 - reported by the test's assertions
            self.seen["error"] = repr(error)


def document_id(name: str) -> str:
    return sql(f"SELECT id FROM documents WHERE name = '{name}'")


def test_server_lost_drill_rebuilds_the_site_from_the_offsite_bucket_and_the_inventory(lab, release, backed_up,
                                                                                       monkeypatch):
    stamp = time.time_ns()
    stop_documents_timers()
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('KEEP-{stamp}', 'sebelum', 'x')")
    kept = upload_documents(f"SNAP{stamp}", 1)
    later = upload_documents(f"LATER{stamp}", 16, size=LATER_SIZE)
    opened = upload_documents(f"OPEN{stamp}", 2)  # the newest files; published where the schema has a status
    has_status = sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'tenders' "
                     "AND column_name = 'status'") == "1"
    if has_status:
        sql(f"UPDATE tenders SET status = CASE WHEN code LIKE 'OPEN{stamp}-%' THEN 'published' ELSE 'draft' END")
    code, _, output = backup_cli("run", "--type", "files")
    assert code == 0, output
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('AFTERSNAP-{stamp}', 'setelah snapshot', 'x')")
    delta = upload_documents(f"DELTA{stamp}", 1)
    code, report, output = backup_cli("run", "--type", "delta")
    assert code == 0, output
    taken = report["outputs"][SITE]
    # DELTA's file (SNAP's too if it changed within the 1 s slack before the full snapshot began)
    assert 1 <= taken["files"] <= 2 and set(taken["restic"]) == {"local", "offsite"}, taken
    lost = upload_documents(f"LOST{stamp}", 1)
    sql(f"INSERT INTO tenders (code, title, agency) VALUES ('LATE-{stamp}', 'setelah dokumen hilang', 'x')")
    archived_now()  # what the lost server wrote up to here is offsite; the markers' last seconds may not be
    documents_before = int(sql("SELECT count(*) FROM documents"))
    version_before = on_site("readlink -f /opt/spse/current").strip().rsplit("/", 1)[-1]

    (first_name, first_sha), (later_name, later_sha) = next(iter(opened.items())), next(iter(later.items()))
    port = next(h["https_port"] for h in lab["hosts"] if h["name"] == SITE)
    tender = sql(f"SELECT tender_id FROM documents WHERE name = '{first_name}'")
    watch = ServingWatch(port, tender, (document_id(first_name), first_sha), (document_id(later_name), later_sha))
    host_vars = lab_actions.inventory_path().parent / "host_vars" / SITE
    (host_vars / "restore.yml").write_text(yaml.safe_dump({"site_restore_first_mb": 1}))

    monkeypatch.setenv("LPSE_OPS_TRUSTED_KEYS", str(release["trusted"]))
    code, _, output = run_cli("lab", "wan", "set", "--mbit", "16", check_json=False)
    assert code == 0, output
    watch.start()
    try:
        code, report, output = run_cli("drill", "run", "server-lost", "--site", SITE, "--warmup-markers", "5",
                                       "--json", timeout=3600)
    finally:
        (host_vars / "restore.yml").unlink()
        run_cli("lab", "wan", "off", check_json=False)
        watch.join(timeout=120)
    assert report["ok"] is True and report["failed_step"] is None, output
    # recovered AND within the runbook's targets (600 s / 60 s / 300 s; the lab measures ~180 s / 5 s / 5 s):
    # exit 3 would be "recovered but a target missed", which is a failed drill for this test
    measured = {key: report[key] for key in ("rto_s", "rpo_db_s", "rpo_docs_s")}
    assert report["met"] is True and code == 0, (measured, report["targets"], output)
    events = {event["event"]: event for event in report["timeline"]}
    assert "a bare host started in its place" in events["fault_injected"]["fault"]
    steps = {step["id"]: step for step in report["runbook"]["steps"]}
    # on the fresh cluster the first setup refuses, creating nothing (repo2 holds the lost server's database)
    assert steps["setup-backups"]["status"] == "failed", steps["setup-backups"]
    assert "holds stanza spse of another database" in steps["setup-backups"]["output_tail"]
    assert "setup-backups" in report["runbook"]["continued_failures"], report["runbook"]
    for step in ("install-spse", "restore-from-offsite", "setup-backups-again", "verify-offsite"):
        assert steps[step]["status"] == "ok", steps[step]
    assert report["rto_s"] is not None and report["rto_s"] > 0
    # the release the site ran (in the full run an upgraded one, not the first install's), reinstalled
    assert events["version_verified"]["version"] == version_before
    assert events["runbook_started"]["values"]["bundle"].endswith(f"spse-{version_before}.tar.gz")

    # served first: the open tenders' documents were there, byte for byte, the moment SPSE served again; a later one
    # answered 503 with Retry-After and the Indonesian page; the hydration, killed once, started again and finished
    assert "error" not in watch.seen, watch.seen
    status, _headers, body = watch.seen["first"]
    assert status == 200 and hashlib.sha256(body).hexdigest() == first_sha, (status, body[:200])
    status, headers, body = watch.seen["later"]
    assert status == 503 and int(headers["Retry-After"]) > 0, (status, headers)
    assert "Dokumen sedang dipulihkan" in body.decode(), body[:300]
    assert watch.seen.get("killed") is True, watch.seen
    restored = next(o for o in report["runbook"]["steps"] if o["id"] == "restore-from-offsite")
    assert "--serve-first" in restored["command"]
    hydration = report["detail"]["hydration"]
    assert hydration["hydration"]["state"] == "done" and hydration["hydration"]["runs"] == 2, hydration
    assert hydration["hydration"]["files_total"] >= 16, hydration
    assert report["rto_s"] == hydration["rto_serving_s"] < hydration["rto_verified_s"], (report["rto_s"], hydration)
    assert hydration["rto_serving_s"] < hydration["first_document_s"] <= hydration["finished_s"], hydration
    events = [event["event"] for event in report["timeline"]]
    assert events.index("serving_again") < events.index("hydration_first_document") < events.index("hydrated")
    for name, sha in {**opened, **later}.items():  # every document, hydrated or first, served with its bytes
        status, _headers, body = watch.get(f"/documents/{document_id(name)}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == sha, (name, status)

    # the moments: back to just before LOST, the first document no snapshot holds
    assert documents_not_matching() == [], "a document the rebuilt database references is missing"
    markers = report["markers"]
    assert markers["consistency"]["not_matching_count"] == 0
    assert markers["acknowledged"] >= 5 and markers["tenders_present"] == 0  # every marker came after LOST
    assert markers["rpo_db_lower_bound"] is True
    codes = sql(f"SELECT string_agg(code, ' ' ORDER BY code) FROM tenders WHERE code LIKE '%-{stamp}'")
    assert codes == f"AFTERSNAP-{stamp} KEEP-{stamp}", codes
    (snap_name,), (delta_name,), (lost_name,) = kept, delta, lost
    assert sql(f"SELECT count(*) FROM documents WHERE name = '{snap_name}'") == "1"
    assert sql(f"SELECT count(*) FROM documents WHERE name = '{delta_name}'") == "1"  # its file: the delta's
    assert sql(f"SELECT count(*) FROM documents WHERE name = '{lost_name}'") == "0"
    assert int(sql("SELECT count(*) FROM documents")) == documents_before - 1
    # the backups run again on the recovered database, and the site is the drill's to release
    assert on_site("systemctl is-active lpse-backup-files.timer lpse-backup-delta.timer").split() == ["active"] * 2
    with StateStore.open() as store:
        assert store.list_locks() == []
