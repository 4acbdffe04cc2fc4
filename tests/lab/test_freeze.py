"""Freeze (clause 6.2.20) on a real site: a frozen SPSE refuses writes through nginx with the notice page and 423,
keeps serving reads, is left out of an upgrade plan with the reason ``frozen``; after unfreeze, uploads work again.

Ordered late (conftest LATE_MODULES); the module always ends with the site unfrozen.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.labkit import SITE, on_site, run_cli

REASON = "Uji pembekuan: penyalahgunaan akun penyedia"
WRITE = ("curl -sk -o /tmp/freeze-body -w '%{{http_code}}' -X POST https://127.0.0.1/tenders "
         "-H 'Content-Type: application/json' -d '{{\"code\":\"{code}\",\"title\":\"Uji\",\"agency\":\"Dinas\"}}'")


def _post_tender(code: str) -> tuple[int, str]:
    status = on_site(WRITE.format(code=code)).strip()
    return int(status), on_site("cat /tmp/freeze-body")


def _upload(tender_id: int) -> tuple[int, str]:
    status = on_site(f"head -c 4096 /dev/urandom > /tmp/freeze-doc && curl -sk -o /tmp/freeze-body -w '%{{http_code}}' "
                     f"-X POST 'https://127.0.0.1/tenders/{tender_id}/documents?name=freeze.pdf' "
                     "--data-binary @/tmp/freeze-doc").strip()
    return int(status), on_site("cat /tmp/freeze-body")


@pytest.fixture(scope="module")
def frozen(installed):
    """site1 frozen through the CLI, with a tender created before the freeze; unfrozen at the end, whatever happens."""
    status, body = _post_tender(f"FRZ-BEFORE-{int(time.time())}")
    assert status == 201, body
    tender_id = json.loads(body)["id"]
    status, body = _upload(tender_id)
    assert status == 201, body
    document_id = json.loads(body)["id"]
    code, report, output = run_cli("freeze", "--site", SITE, "--reason", REASON, "--yes", "--json")
    try:
        assert code == 0, output
        yield {"report": report, "tender_id": tender_id, "document_id": document_id}
    finally:  # the lab stays usable for the tests after this module, even when one of these failed
        still = on_site("test -e /etc/spse/frozen -o -e /etc/nginx/spse-maintenance/frozen && echo yes || echo no")
        if still.strip() == "yes":
            code, _, output = run_cli("unfreeze", "--site", SITE, "--reason", "Uji selesai", "--yes", "--json")
            assert code == 0, output


def test_freeze_refuses_writes_with_the_notice_and_serves_reads(frozen):
    record = frozen["report"]["record"]
    assert record["frozen"] is True and record["complete"] is True, frozen["report"]
    assert frozen["report"]["sanction"]["applied"] is True
    flag = json.loads(on_site("cat /etc/spse/frozen"))
    assert flag["reason"] == REASON and flag["clause"] == "6.2.20" and flag["at"].endswith("Z") and flag["by"]

    status, page = _post_tender(f"FRZ-DURING-{int(time.time())}")
    assert status == 423, page
    assert "dibekukan" in page and "Pasal 6.2.20" in page and REASON in page, page
    status, page = _upload(frozen["tender_id"])
    assert status == 423 and "Pasal 6.2.20" in page, page
    # Nothing reached SPSE: the tender still has only the document uploaded before the freeze.
    assert on_site(f"runuser -u postgres -- psql -d spse -AtX -c "
                   f"'SELECT count(*) FROM documents WHERE tender_id = {frozen['tender_id']}'").strip() == "1"

    reads = on_site("curl -sk -o /dev/null -w '%{http_code} ' https://127.0.0.1/tenders; "
                    f"curl -sk -o /dev/null -w '%{{http_code}} ' https://127.0.0.1/documents/{frozen['document_id']}; "
                    "curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health").split()
    assert reads == ["200", "200", "200"], reads


def test_freeze_leaves_the_site_out_of_an_upgrade_plan(frozen, release):
    code, plan, output = run_cli("upgrade", "plan", "--to", "1.1", "--releases", str(release["bundles"]["1.1"].parent),
                                 "--trusted-keys", str(release["trusted"]), "--limit", SITE, "--json")
    assert plan is not None, output
    excluded = {item["host"]: item for item in plan["excluded"]}
    assert excluded[SITE]["code"] == "frozen", plan["excluded"]
    assert SITE not in plan["steps"]
    assert code == 3, output  # no site left to upgrade


def test_freeze_is_listed_and_audited(frozen):
    # Read in-process from the same state store the CLI wrote (the CLI's `freeze list` has its unit test).
    from lpse_ops.actions import freeze
    from lpse_ops.state import StateStore

    listed = {site["site"]: site for site in freeze.status()}
    assert listed[SITE]["frozen"] is True and listed[SITE]["freeze"]["reason"] == REASON
    with StateStore.open() as store:
        entries = [e for e in store.audit_entries(limit=50) if e["operation"] == "site.freeze"]
    assert entries and entries[-1]["detail"]["reason"] == REASON and entries[-1]["detail"]["site"] == SITE


def test_unfreeze_lets_uploads_through_again(frozen):
    code, report, output = run_cli("unfreeze", "--site", SITE, "--reason", "Uji selesai: sanksi dicabut", "--yes",
                                   "--json")
    assert code == 0 and report["record"]["frozen"] is False, output
    assert on_site("test -e /etc/spse/frozen && echo yes || echo no").strip() == "no"
    status, body = _upload(frozen["tender_id"])
    assert status == 201, body
    status, body = _post_tender(f"FRZ-AFTER-{int(time.time())}")
    assert status == 201, body
