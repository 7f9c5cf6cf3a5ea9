"""`python -m bench` (or `make bench`): every benchmark, one after the other, then a summary.

Each benchmark can also run alone (each takes --help): `python -m bench.engine_overhead`,
`python -m bench.waiting`, `python -m bench.localapi_status`, `python -m bench.finetune_runs`,
`python -m bench.sweep` (about 5 minutes: ten waves of 30 s jobs), `python -m bench.serve_idle`,
`python -m bench.startup`, `python -m bench.hostile`, `python -m bench.fleet` (worker processes
on SQLite and on the machine's PostgreSQL: a few minutes, most of it starting 10,000 runs),
`python -m bench.web` (the web view's pages with 100,000 runs in the store), `python -m
bench.uploads` (a large dataset uploaded in one request and in parts: reads and speed),
`python -m bench.scale` (big pipelines, big runs, state per step, memory per waiting run: a few
minutes), `python -m bench.trainer` (the local trainer's tokens/s beside a bare peft loop, a
job's overhead warm and cold, its memory: about a minute; needs the train extra). Not run
here: `python -m bench.soak` (a fleet under a stream of LoRA runs with kills, partitions and a
database restart: 10 minutes by default).
Figures are medians of several runs; the machines these run on are shared, so run twice
before believing a change.
"""

from __future__ import annotations

from bench import (
    engine_overhead,
    finetune_runs,
    fleet,
    hostile,
    localapi_status,
    scale,
    serve_idle,
    startup,
    sweep,
    trainer,
    uploads,
    waiting,
    web,
)


def main() -> None:
    rows = []
    for module in (engine_overhead, waiting, localapi_status, finetune_runs, sweep, serve_idle,
                   startup, hostile, uploads, scale, fleet, web, trainer):
        rows += module.main([])
        print()
    print("summary")
    for label, value in rows:
        print(f"  {label:<60} {value:10.3f}")


if __name__ == "__main__":
    main()
