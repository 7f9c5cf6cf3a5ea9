"""The local Together-compatible API: fine-tuning that runs offline, simulated.

It serves the Together endpoints a fine-tuning pipeline uses (files, fine-tunes, models and
jobs, completions and chat), with Together's request and response shapes, so a pipeline runs
unchanged against it or against api.together.xyz. Training is simulated: a job's progress is a
function of the clock (see `timeline`), and a fine-tuned model answers from its training data.

Use it in-process (`local_client`), the default provider of every run, or as a server:
`orchestrator local-api --port 8765`, then point any client at http://127.0.0.1:8765/v1.
"""

from orchestrator.localapi.app import DOCS, LocalAPI
from orchestrator.localapi.config import LocalAPIConfig, parse_faults
from orchestrator.localapi.errors import ConnectionDropped
from orchestrator.localapi.transport import LocalTransport, local_client

__all__ = [
    "DOCS",
    "ConnectionDropped",
    "LocalAPI",
    "LocalAPIConfig",
    "LocalTransport",
    "local_client",
    "parse_faults",
]
