"""Hostile input costs a bounded amount: what refusing it, or streaming through it, takes.

Each case runs `orchestrator` as its own process and reads that process's wall time, CPU time
and peak memory (os.wait4):

- `check-data` of a 1 GiB training file (conversations of five messages, ~320 bytes a line,
  3.4 million lines), on one core (`taskset -c 0` where there is one): streamed, so memory
  is bounded by the longest line, not the file;
- `validate` of a 380-byte YAML alias bomb (9**9 nodes if expanded), of 8 MiB of `1,1,1,...`
  (4 million nodes), and of a value nested 100 deep: each refused in one line;
- `orchestrator local-api` taking a 300 MiB upload, by the SDKs' PUT and by the spec's
  multipart POST: the server's peak memory (VmHWM) stays far below the file's size.

    python -m bench.hostile [--repeat 3] [--gigabytes 1] [--upload-mib 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

from bench import ProcessCost, measure_process, report_medians, serve_local_api

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "hostile" / "pipelines"
DATA_TARGETS = {"wall": 30.0, "peak": 256.0}
REFUSAL_TARGETS = {"wall": 1.0, "peak": 200.0}


def write_training_file(path: Path, size: int) -> int:
    """About `size` bytes of valid instruction samples; returns the number of lines."""
    lines = [json.dumps({"messages": [
        {"role": "system", "content": "You answer arithmetic questions briefly."},
        {"role": "user", "content": f"What is {i} squared?"},
        {"role": "assistant", "content": f"{i * i}: the number times itself."},
        {"role": "user", "content": f"And {i} plus {i}?"},
        {"role": "assistant", "content": f"{2 * i}.", "weight": 1},
    ]}).encode() + b"\n" for i in range(1000)]
    block = b"".join(lines)
    count = 0
    with path.open("wb") as out:
        while count * len(block) < size:
            out.write(block)
            count += 1
    return count * len(lines)


def write_flat_file(path: Path) -> None:
    path.write_text("name: flat\nsteps:\n  s: {uses: core/echo, with: {x: [" +
                    "1," * (4 * 2**20 - 64) + "1]}}\n")


def orchestrator(*args: str, one_core: bool = False) -> ProcessCost:
    pinned = ["taskset", "-c", "0"] if one_core and shutil.which("taskset") else []
    return measure_process([*pinned, sys.executable, "-m", "orchestrator", *args], cwd=REPO)


def figures(cost: ProcessCost, expected_code: int) -> dict[str, float]:
    if cost.code != expected_code:
        msg = f"exit code {cost.code}, expected {expected_code}: {cost.stderr.strip()[:300]}"
        raise SystemExit(msg)
    return {"wall": cost.wall, "cpu": cost.cpu, "peak": cost.peak_mib}


FIELDS = (("wall", "s"), ("cpu", "s"), ("peak", "MiB"))
UPLOAD_TARGETS = {"peak": 200.0}


def _peak_mib(pid: int) -> float:
    """The high-water mark of a running process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError


def upload_peaks(folder: Path, size_mib: int) -> dict[str, float]:
    """Serve a fresh local API, upload `size_mib` MiB both ways; its peak memory after each."""
    data = folder / "upload.jsonl"
    write_training_file(data, size_mib * 2**20)
    server, base = serve_local_api(folder / "api")
    try:
        with httpx.Client(base_url=base, headers={"Authorization": "Bearer local-key"},
                          timeout=300) as client:
            idle = _peak_mib(server.pid)
            start = client.post("/v1/files", data={"purpose": "fine-tune",
                                                   "file_name": "a.jsonl"})
            with data.open("rb") as body:
                assert client.put(start.headers["location"], content=body).status_code == 200
            assert client.post(f"/v1/files/{start.headers['x-together-file-id']}/preprocess"
                               ).status_code == 200
            put = _peak_mib(server.pid)
            with data.open("rb") as body:
                answer = client.post("/v1/files/upload", files={"file": ("b.jsonl", body)},
                                     data={"purpose": "fine-tune", "file_name": "b.jsonl"})
            assert answer.status_code == 200, answer.text
            multipart = _peak_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        data.unlink()
    return {"idle": idle, "put": put, "multipart": multipart}


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--upload-mib", type=int, default=300)
    args = parser.parse_args(argv)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        lines = write_training_file(data, int(args.gigabytes * 2**30))
        label = f"check-data of {data.stat().st_size / 2**30:.2f} GiB ({lines:,} lines)"
        print(label)
        rows += report_medians(label, [figures(orchestrator("check-data", str(data),
                                                            one_core=True), 0)
                                       for _ in range(args.repeat)], FIELDS, DATA_TARGETS)
        data.unlink()
        flat = Path(tmp) / "flat.yaml"
        write_flat_file(flat)
        for name, path in (("alias bomb (380 bytes)", CORPUS / "alias-bomb.yaml"),
                           ("8 MiB of 4 million nodes", flat),
                           ("nested 100 deep", CORPUS / "deep-flow.yaml")):
            label = f"validate refuses {name}"
            print(label)
            rows += report_medians(label, [figures(orchestrator("validate", str(path)), 2)
                                           for _ in range(args.repeat)], FIELDS,
                                   REFUSAL_TARGETS)
        label = f"local-api peak memory taking a {args.upload_mib} MiB upload"
        print(label)
        peaks = [upload_peaks(Path(tmp), args.upload_mib) for _ in range(args.repeat)]
        rows += report_medians(label, peaks, (("idle", "MiB"), ("put", "MiB"),
                                              ("multipart", "MiB")),
                               {"put": UPLOAD_TARGETS["peak"],
                                "multipart": UPLOAD_TARGETS["peak"]})
    return rows


if __name__ == "__main__":
    main()
