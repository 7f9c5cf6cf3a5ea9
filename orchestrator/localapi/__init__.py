"""The local Together-compatible API: fine-tuning that runs offline, simulated.

It serves the Together endpoints a fine-tuning pipeline uses (files, fine-tunes, models and
jobs, completions and chat), with Together's request and response shapes, so a pipeline runs
unchanged against it or against api.together.xyz. Training is simulated: a job's progress is a
function of the clock (see `timeline`), and a fine-tuned model answers from its training data.

Use it in-process (`local_client`), the default provider of every run, or as a server:
`orchestrator local-api --port 8765`, then point any client at http://127.0.0.1:8765/v1.
"""

from orchestrator.localapi.app import ConnectionDropped, LocalAPI
from orchestrator.localapi.config import LocalAPIConfig, parse_faults
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

DOCS = """\
orchestrator local Together-compatible API
==========================================

SIMULATED: no model is trained here. Fine-tuning jobs move through
pending -> queued -> running -> compressing -> uploading -> completed by the clock
(setting local_job_duration; 10s by default, set e.g. 20m for realistic timing),
and a fine-tuned model answers from the examples it was trained on.

Base URL: /v1 (also accepted: /v1/v1, which Together's SDK 3.x sends when its base URL
already ends in /v1). Every /v1 and /v0 request needs Authorization: Bearer <local_api_key>.

Files        GET /v1/files, POST /v1/files (302 + Location + X-Together-File-Id, or 409 with
             file_id when the same bytes, by sha256 checksum, are there), PUT <Location>,
             POST /v1/files/{id}/preprocess, POST /v1/files/upload (multipart),
             GET|DELETE /v1/files/{id}, GET /v1/files/{id}/content
Fine-tunes   POST|GET /v1/fine-tunes, GET|DELETE /v1/fine-tunes/{id},
             POST /v1/fine-tunes/{id}/cancel, GET /v1/fine-tunes/{id}/events|checkpoints|metrics,
             POST /v1/fine-tunes/estimate-price, GET /v1/fine-tunes/models/limits?model_name=,
             GET /v1/fine-tunes/models/supported, GET /v1/finetune/download?ft_id=
Models       GET /v1/models, POST /v1/models (also /v0/models), GET /v1/jobs, GET /v1/jobs/{id}
Inference    POST /v1/completions, POST /v1/chat/completions (stream: true for SSE)

Bounds: a request body up to local_max_request_bytes, a file upload up to
local_max_upload_bytes (else 413); headers, and a body that is not an upload, within
local_request_timeout, and no upload pausing longer (else 408 and the connection closes).
SDK arguments that are not request fields (lora, lora_r, dpo_beta, ...) are refused, with
where they go (training_type.lora_r, training_method.dpo_beta, ...).

Testing aids (headers): X-Local-Fault: 429|500|503|drop|none, X-Local-Latency: 200ms (<= 60s),
X-Local-Job: {"duration": "2s", "outcome": "error"|"user_error", "fail_at": 0.5} on create.
Settings: local_faults ("429=0.05,500=0.02,503=0.02,drop=0.01"), local_latency,
local_retry_after, local_fault_seed, local_job_outcome, local_upload_duration,
local_max_request_bytes, local_max_upload_bytes, local_request_timeout.
"""
