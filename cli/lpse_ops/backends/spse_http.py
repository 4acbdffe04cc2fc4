"""The SPSE app's HTTPS API as a drill uses it: the marker workload (one tender and one document every few
seconds, each acknowledged write logged) and the ``/health`` answer. The site's certificate is not verified
(a fresh site's nginx certificate is self-signed); nothing secret is sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MARKER_AGENCY = "lpse-ops drill"


class MarkerWorkload:
    """One tender and one document every *interval* s through the site's HTTPS API, in a thread.

    Every acknowledged write is appended to *log_path* (JSON lines: seq, tender code and ack time,
    document name, sha256 and ack time). The site's certificate is not verified (a fresh site's nginx
    certificate is self-signed); nothing secret is sent.
    """

    def __init__(self, base_url: str, prefix: str, log_path: Path, interval: float = 1.0) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.prefix = prefix
        self.log_path = log_path
        self.interval = interval
        self.acks: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="drill-markers", daemon=True)
        self.lock = threading.Lock()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.conn: http.client.HTTPSConnection | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def acked(self) -> int:
        with self.lock:
            return sum(1 for ack in self.acks if ack.get("doc_ack"))

    def _request(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=10)
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": content_type})
            answer = self.conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        try:
            return answer.status, json.loads(data or b"{}")
        except ValueError:
            return answer.status, {}

    def _write(self, seq: int) -> dict[str, Any] | None:
        code = f"{self.prefix}-{seq:06d}"
        written = datetime.now(UTC).isoformat(timespec="microseconds")
        status, tender = self._request("POST", "/tenders", json.dumps(
            {"code": code, "title": f"Drill marker {seq} written {written}", "agency": MARKER_AGENCY}).encode(),
            "application/json")
        if status != 201:
            raise RuntimeError(f"tender {code}: HTTP {status} {tender.get('error', '')}")
        record: dict[str, Any] = {"seq": seq, "tender_code": code, "tender_id": tender.get("id"), "written": written,
                                  "tender_ack": datetime.now(UTC).isoformat(timespec="microseconds")}
        content = f"drill marker {seq} {code} written {written}\n".encode() + os.urandom(1024)
        name = f"{code}.txt"
        status, document = self._request("POST", f"/tenders/{tender.get('id')}/documents?name={name}", content,
                                         "application/octet-stream")
        if status == 201:
            record.update(doc_name=name, doc_sha256=hashlib.sha256(content).hexdigest(),
                          doc_ack=datetime.now(UTC).isoformat(timespec="microseconds"))
        return record

    def _loop(self) -> None:
        seq = 0
        with self.log_path.open("a", encoding="utf-8") as log:
            while not self.stop_event.is_set():
                began = time.monotonic()
                seq += 1
                try:
                    record = self._write(seq)
                except (OSError, RuntimeError, http.client.HTTPException, ValueError) as error:
                    with self.lock:
                        self.errors.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} seq {seq}: {error}")
                    record = None
                if record:
                    log.write(json.dumps(record, sort_keys=True) + "\n")
                    log.flush()
                    with self.lock:
                        self.acks.append(record)
                self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))
        if self.conn is not None:
            self.conn.close()


def health(base_url: str) -> dict[str, Any] | None:
    """The site's ``/health`` answer through nginx at *base_url*, or None when it does not answer with JSON."""
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{base_url}/health", context=context, timeout=5) as answer:  # noqa: S310
            data = json.loads(answer.read() or b"{}")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
