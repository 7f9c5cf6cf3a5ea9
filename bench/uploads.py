"""The upload step's cost for a large dataset: how often it reads the file, and how fast it
sends it, in one request and in parts.

A pipeline of one `together/upload-file` step runs in this process on provider `together`,
pointed at an `orchestrator local-api` process over loopback (a fresh one each time, so nothing
is deduplicated). The figure `reads` is the bytes this process read (`rchar` of
/proc/self/io: the check, the hash and the upload, plus a few KiB of state) per byte of the
file: the step checks and hashes in one pass, then streams the file once, so 2.0 is the floor.
The multipart case cuts the file into parts of `--part-mib` (threshold lowered to one part).

    python -m bench.uploads [--repeat 3] [--mib 256] [--part-mib 32]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from bench import report_medians, serve_local_api
from bench.hostile import write_training_file

PIPELINE = """\
name: upload-only
steps:
  upload:
    uses: together/upload-file
    with: {path: data.jsonl}
"""
TARGETS = {"reads": 2.05}


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError


def upload_once(folder: Path, size: int, **settings: object) -> dict[str, float]:
    """Upload the dataset in `folder` to a fresh local API; the step's figures."""
    from orchestrator.api import run_file

    server, root = serve_local_api(folder / "api")
    base = f"{root}/v1"
    try:
        before, started = _rchar(), time.perf_counter()
        result = run_file(folder / "upload.yaml", provider="together",
                          together_api_key="local-key", together_base_url=base,
                          state_url=f"sqlite:///{folder}/state.db", log_level="warning",
                          **settings)
        wall = time.perf_counter() - started
        read = _rchar() - before
    finally:
        server.terminate()
        server.wait(timeout=30)
    if result.status != "succeeded":
        raise SystemExit(f"the upload failed: {result.error}")
    for leftover in (folder / "api", folder / "state.db"):
        subprocess.run(["rm", "-rf", str(leftover)], check=True)
    return {"wall": wall, "MiB/s": size / 2**20 / wall, "reads": read / size}


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--part-mib", type=int, default=32)
    args = parser.parse_args(argv)
    rows: list[tuple[str, float]] = []
    fields = (("wall", "s"), ("MiB/s", ""), ("reads", "x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_training_file(folder / "data.jsonl", args.mib * 2**20)
        (folder / "upload.yaml").write_text(PIPELINE)
        size = (folder / "data.jsonl").stat().st_size
        part = args.part_mib * 2**20
        for label, settings in (
                (f"upload of {size / 2**20:.0f} MiB in one request", {}),
                (f"upload of {size / 2**20:.0f} MiB in parts of {args.part_mib} MiB",
                 {"upload_multipart_threshold": part, "upload_part_size": part})):
            print(label)
            runs = [upload_once(folder, size, **settings) for _ in range(args.repeat)]
            rows += report_medians(label, runs, fields, TARGETS)
            print("  reads, exactly: " + ", ".join(f"{r['reads']:.4f}" for r in runs))
    return rows


if __name__ == "__main__":
    main()
