"""A file above the provider's single-request limit, uploaded in parts by real processes on
provider `together` (`orchestrator local-api` over loopback), killed mid-way and resumed: every
part reaches the provider once, and the file it joins is the file on disk.

The limits are lowered by settings (1 MiB instead of Together's 5 GiB) so the file is small.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import popen, run_id_from, state
from tests.localapi.test_multipart import dataset
from tests.localapi.test_server import KEY, free_port, serving

MIB = 2**20
PIPELINE = """\
name: big-upload
steps:
  upload:
    uses: together/upload-file
    with: {path: big.jsonl}
"""


def single_request_status(base: str, size: int) -> int:
    """The status the server answers a one-request upload of `size` bytes with, from its
    headers alone (it refuses a declared size at once; sending the body first would race its
    closing the connection)."""
    url = httpx.URL(base)
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(f"POST {url.path}/files/upload HTTP/1.1\r\nHost: {url.host}\r\n"
                     f"Authorization: Bearer {KEY}\r\nContent-Length: {size}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode())
        return int(conn.recv(64).split()[1])


@pytest.mark.slow
def test_a_multipart_upload_killed_mid_way_resumes_with_the_missing_parts(
        tmp_path: Path) -> None:
    data = dataset(tmp_path / "big.jsonl", 5 * MIB)
    (tmp_path / "big.yaml").write_text(PIPELINE)
    parts = -(-len(data) // MIB)
    with serving(tmp_path, free_port(), local_max_upload_bytes=str(MIB)) as base:
        assert single_request_status(base, len(data)) == 413  # one request cannot carry it
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base,
               "ORCH_UPLOAD_MULTIPART_THRESHOLD": str(MIB), "ORCH_UPLOAD_PART_SIZE": str(MIB),
               "ORCH_UPLOAD_PART_CONCURRENCY": "1"}
        killed = popen(tmp_path, "run", "big.yaml", "--provider", "together",
                       env={**env, "ORCH_FAULTS": "after_upload_part:upload"})
        _, err = killed.communicate(timeout=60)
        assert killed.returncode == -signal.SIGKILL, err
        run_id = run_id_from(err)
        [(checkpoint,)] = state(tmp_path, "SELECT checkpoint FROM steps WHERE step_id = "
                                          "'upload'")
        saved = json.loads(str(checkpoint))
        interrupted = saved["multipart"]
        sent = [k for k in saved if k.startswith("multipart_part_")]
        assert sent == ["multipart_part_1"]  # killed after its first part
        resumed = popen(tmp_path, "resume", run_id, env=env)
        _, err = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, err
    db = sqlite3.connect(tmp_path / "api-data" / "local-api.db")
    try:
        received = db.execute("SELECT part_number, received FROM upload_parts "
                              "ORDER BY part_number").fetchall()
        files = db.execute("SELECT id, bytes, checksum FROM files WHERE state = 'processed'"
                           ).fetchall()
        uploads = db.execute("SELECT upload_id, state FROM multipart_uploads").fetchall()
    finally:
        db.close()
    assert uploads == [(interrupted["upload_id"], "completed")]  # continued, not begun again
    events = [json.loads(str(data)) for (data,) in state(
        tmp_path, "SELECT data FROM events WHERE kind = 'checkpoint' AND step_id = 'upload'")]
    # The event log holds each fact once: the upload's part URLs in one event, each part's
    # ETag in its own (not the whole checkpoint again every part).
    assert sum("multipart" in e for e in events) == 1
    assert sorted(k for e in events for k in e if k.startswith("multipart_part_")) == sorted(
        f"multipart_part_{n}" for n in range(1, parts + 1))
    assert received == [(n, 1) for n in range(1, parts + 1)]  # each part sent once
    [(file_id, size, checksum)] = files
    assert (size, checksum) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "api-data" / "files" / file_id).read_bytes() == data
