"""The local API's own OpenAPI document, served at `GET /openapi.json`.

It describes what this server takes, operation by operation: the paths and methods it routes
(a test checks the two agree), their path and query parameters, and the request bodies with
the fields and types its handlers check. Together's published document describes their
service; this one describes ours, so that a client generator, a fuzzer (the test suite runs
schemathesis over it: no request it describes, valid or not, gets a 5xx) or a person reading
it learns what this server does, no more.
"""

from __future__ import annotations

from typing import Any

__all__ = ["V1_ALIASED", "document"]

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUMBER: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}


def _object(properties: dict[str, Schema], *required: str) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required)}


_LORA = _object({"type": {"enum": ["Lora"]}, "lora_r": _INT, "lora_alpha": _INT,
                 "lora_dropout": _NUMBER, "lora_trainable_modules": _STRING}, "type")
_FINE_TUNE = _object({
    "training_file": _STRING, "validation_file": _STRING, "model": _STRING,
    "from_checkpoint": _STRING, "n_epochs": _INT, "n_checkpoints": _INT, "n_evals": _INT,
    "batch_size": {"oneOf": [_INT, {"enum": ["max"]}]}, "learning_rate": _NUMBER,
    "lr_scheduler": _object({"lr_scheduler_type": {"enum": ["linear", "cosine"]},
                             "lr_scheduler_args": _object({"min_lr_ratio": _NUMBER,
                                                           "num_cycles": _NUMBER})}),
    "warmup_ratio": _NUMBER, "max_grad_norm": _NUMBER, "weight_decay": _NUMBER,
    "suffix": _STRING, "packing": _BOOL, "max_seq_length": _INT,
    "random_seed": {"type": ["integer", "null"]},
    "training_type": {"oneOf": [_LORA, _object({"type": {"enum": ["Full"]}}, "type"),
                                {"type": "null"}]},
    "training_method": {"oneOf": [
        _object({"method": {"enum": ["sft"]},
                 "train_on_inputs": {"oneOf": [_BOOL, {"enum": ["auto"]}]}}, "method"),
        _object({"method": {"enum": ["dpo"]}, "dpo_beta": _NUMBER, "rpo_alpha": _NUMBER,
                 "simpo_gamma": _NUMBER}, "method")]},
    "train_on_inputs": {"oneOf": [_BOOL, {"enum": ["auto"]}]},
    "multimodal_params": _object({"train_vision": _BOOL}),
    "wandb_api_key": _STRING, "wandb_base_url": _STRING, "wandb_project_name": _STRING,
    "wandb_name": _STRING, "wandb_entity": _STRING, "from_hf_model": _STRING,
    "hf_model_revision": _STRING, "hf_api_token": _STRING, "hf_output_repo_name": _STRING,
}, "training_file")
_CONTENT = {"oneOf": [_STRING, {"type": "array", "items": _object(
    {"type": _STRING, "text": _STRING}, "type")}]}
_SAMPLING = {"max_tokens": _INT, "stop": {"oneOf": [_STRING, {"type": "array",
                                                              "items": _STRING}]},
             "n": _INT, "stream": _BOOL, "temperature": _NUMBER, "top_p": _NUMBER}
_IMPORT = _object({"model_name": _STRING, "model_source": _STRING,
                   "model_type": {"enum": ["model", "adapter"]}, "base_model": _STRING,
                   "lora_model": _STRING, "hf_token": _STRING, "description": _STRING},
                  "model_name", "model_source")


def _json(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _bytes() -> Schema:
    return {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}


def _param(name: str, where: str = "query", schema: Schema = _STRING, *,
           required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema}


_OPERATIONS: list[tuple[str, str, str, list[Schema], Schema | None]] = [
    # (method, path, summary, parameters, request body)
    ("get", "/", "what this server is", [], None),
    ("get", "/docs", "the same, in a few lines of text", [], None),
    ("get", "/openapi.json", "this document", [], None),
    ("get", "/v3/whoami", "the key's user and project", [], None),
    ("get", "/v1/files", "the files", [], None),
    ("post", "/v1/files", "announce an upload: a signed URL to PUT the bytes to (302)", [],
     {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _object(
         {"file_name": _STRING, "purpose": {"enum": ["fine-tune", "eval"]},
          "file_type": {"enum": ["jsonl", "parquet", "csv"]}, "checksum": _STRING},
         "file_name")}}}),
    ("post", "/v1/files/upload", "upload a file in one multipart request", [],
     {"required": True, "content": {"multipart/form-data": {"schema": _object(
         {"file": {"type": "string", "format": "binary"}, "file_name": _STRING,
          "purpose": _STRING, "file_type": _STRING}, "file")}}}),
    ("put", "/uploads/{file_id}", "the bytes of an announced file",
     [_param("file_id", "path"), _param("token", required=True)], _bytes()),
    ("get", "/v1/files/{file_id}", "a file", [_param("file_id", "path")], None),
    ("delete", "/v1/files/{file_id}", "delete a file", [_param("file_id", "path")], None),
    ("get", "/v1/files/{file_id}/content", "a file's bytes (Range honoured)",
     [_param("file_id", "path"), _param("Range", "header")], None),
    ("post", "/v1/files/{file_id}/preprocess", "check a file as training data",
     [_param("file_id", "path")], None),
    ("post", "/v1/files/multipart/initiate", "begin an upload in parts", [], _json(_object(
        {"file_name": _STRING, "file_size": _INT, "num_parts": _INT, "purpose": _STRING,
         "file_type": _STRING, "checksum": _STRING}, "file_name", "file_size", "num_parts"))),
    ("put", "/uploads/{file_id}/parts/{number}", "one part's bytes",
     [_param("file_id", "path"), _param("number", "path", _INT),
      _param("upload_id", required=True), _param("token", required=True)], _bytes()),
    ("post", "/v1/files/multipart/complete", "finish an upload in parts", [], _json(_object(
        {"upload_id": _STRING, "file_id": _STRING, "parts": {"type": "array", "items": _object(
            {"part_number": _INT, "etag": _STRING})}}, "upload_id", "file_id", "parts"))),
    ("post", "/v1/files/multipart/abort", "abandon an upload in parts", [], _json(_object(
        {"upload_id": _STRING, "file_id": _STRING}, "upload_id", "file_id"))),
    ("post", "/v1/fine-tunes", "create a fine-tuning job", [], _json(_FINE_TUNE)),
    ("get", "/v1/fine-tunes", "the fine-tuning jobs", [], None),
    ("post", "/v1/fine-tunes/estimate-price", "what a job would cost", [], _json(_FINE_TUNE)),
    ("get", "/v1/fine-tunes/models/limits", "what a base model allows",
     [_param("model_name", required=True)], None),
    ("get", "/v1/fine-tunes/models/supported", "the base models", [], None),
    ("get", "/v1/fine-tunes/{job_id}", "a job", [_param("job_id", "path")], None),
    ("delete", "/v1/fine-tunes/{job_id}", "delete a job", [_param("job_id", "path"),
                                                           _param("force", schema=_BOOL)],
     None),
    ("post", "/v1/fine-tunes/{job_id}/cancel", "cancel a job", [_param("job_id", "path")],
     None),
    ("get", "/v1/fine-tunes/{job_id}/events", "a job's events", [_param("job_id", "path")],
     None),
    ("get", "/v1/fine-tunes/{job_id}/checkpoints", "a job's checkpoints",
     [_param("job_id", "path")], None),
    ("get", "/v1/fine-tunes/{job_id}/metrics", "a job's figures per training step",
     [_param("job_id", "path"), _param("global_step_min", schema=_INT),
      _param("global_step_max", schema=_INT)], None),
    ("get", "/v1/finetune/download", "a job's weights (Range honoured)",
     [_param("ft_id", required=True), _param("checkpoint"), _param("checkpoint_step",
                                                                   schema=_INT),
      _param("Range", "header")], None),
    ("post", "/v1/completions", "complete a prompt", [], _json(_object(
        {"model": _STRING, "prompt": _STRING, "echo": _BOOL, **_SAMPLING}, "model",
        "prompt"))),
    ("post", "/v1/chat/completions", "answer a conversation", [], _json(_object(
        {"model": _STRING, "messages": {"type": "array", "items": _object(
            {"role": {"enum": ["system", "user", "assistant", "tool"]}, "content": _CONTENT},
            "role")}, **_SAMPLING}, "model", "messages"))),
    ("post", "/v1/fine-tunes/preview", "how a training file's first rows tokenize", [],
     _json(_object({"model": _STRING, "training_file": _STRING,
                    "top_k": {"type": "integer"}, "train_on_inputs": {"type": "boolean"},
                    "training_method": {"enum": ["sft"]}}, "model", "training_file"))),
    ("get", "/v1/fine-tunes/{job_id}/download-tokenized-dataset",
     "a signed URL of the job's training file, tokenized", [_param("job_id", "path")], None),
    ("get", "/downloads/tokenized/{job_id}", "the tokenized dataset (a signed URL's)",
     [_param("job_id", "path"), _param("expires", "query"), _param("signature", "query")],
     None),
    ("get", "/v2/supported-models", "the base models, a cursor page at a time",
     [_param("search", "query"), _param("product", "query"), _param("modality", "query"),
      _param("after", "query"), _param("limit", "query")], None),
    ("get", "/v2/supported-models/{model_id}", "a base model", [_param("model_id", "path")],
     None),
    ("get", "/v1/local/inference", "every inference request taken, by model and prompt (a "
                                   "testing aid)", [], None),
    ("get", "/v1/models", "the models", [], None),
    ("post", "/v1/models", "import a model or adapter", [], _json(_IMPORT)),
    ("post", "/v0/models", "import a model or adapter (the documented path)", [],
     _json(_IMPORT)),
    ("get", "/v1/jobs", "the import jobs", [], None),
    ("get", "/v1/jobs/{job_id}", "an import job", [_param("job_id", "path")], None),
]

_PROJECT = [_param("project_id", "path")]
_PROJECT_BASE = "/v2/projects/{project_id}/models"
_OPERATIONS += [
    ("post", _PROJECT_BASE, "register a model in the project", _PROJECT, _json(_object(
        {"name": _STRING, "baseModelId": _STRING, "type": {"enum": ["model", "adapter"]},
         "description": _STRING}, "name", "type"))),
    ("get", _PROJECT_BASE, "the project's models",
     [*_PROJECT, _param("visibility"), _param("limit", schema=_INT), _param("after")], None),
    ("post", f"{_PROJECT_BASE}/uploads", "fill a model from a remote source", _PROJECT,
     _json(_object({"modelId": _STRING, "remoteUrl": _STRING, "token": _STRING}, "modelId",
                   "remoteUrl"))),
    ("get", f"{_PROJECT_BASE}/uploads", "the project's uploads",
     [*_PROJECT, _param("limit", schema=_INT), _param("after")], None),
    ("get", f"{_PROJECT_BASE}/uploads/{{upload_id}}", "an upload",
     [*_PROJECT, _param("upload_id", "path")], None),
    ("get", f"{_PROJECT_BASE}/uploads/{{upload_id}}/events", "an upload's events",
     [*_PROJECT, _param("upload_id", "path")], None),
    ("get", f"{_PROJECT_BASE}/{{model_id}}", "a model",
     [*_PROJECT, _param("model_id", "path")], None),
    ("patch", f"{_PROJECT_BASE}/{{model_id}}", "rename or describe a model",
     [*_PROJECT, _param("model_id", "path"), _param("update_mask")],
     _json(_object({"name": _STRING, "description": _STRING, "visibility": _STRING}))),
    ("delete", f"{_PROJECT_BASE}/{{model_id}}", "delete a model",
     [*_PROJECT, _param("model_id", "path")], None),
    ("get", f"{_PROJECT_BASE}/{{model_id}}/revisions", "a model's revisions",
     [*_PROJECT, _param("model_id", "path"), _param("revision_id")], None),
    ("get", f"{_PROJECT_BASE}/{{model_id}}/files", "a model's files",
     [*_PROJECT, _param("model_id", "path"), _param("revision_id")], None),
    ("post", f"{_PROJECT_BASE}/upload/create", "begin uploading a folder's files to a model",
     _PROJECT, _json(_object({"objectId": _STRING, "files": {"type": "array", "items": _object(
         {"path": _STRING, "hash": _STRING, "numParts": _INT}, "path", "hash")}},
                             "objectId", "files"))),
    ("post", f"{_PROJECT_BASE}/upload/complete", "finish an upload: a revision of the model",
     _PROJECT, _json(_object({"objectId": _STRING, "files": {"type": "array", "items": _object(
         {"path": _STRING, "hash": _STRING, "skipUpload": _BOOL, "uploadDetails": _object(
             {"uploadId": _STRING, "parts": {"type": "array", "items": _object(
                 {"partNumber": _INT, "hash": _STRING})}})}, "path", "hash")}},
                             "objectId", "files"))),
    ("put", "/uploads/model-files/{upload_id}/parts/{number}", "one part of a model's file",
     [_param("upload_id", "path"), _param("number", "path", _INT),
      _param("token", required=True)], _bytes()),
]

V1_ALIASED = ("/v2/projects/", "/v2/supported-models")
"""Paths also served under /v1: SDK 2.x, given a base URL (which ends in /v1), sends its v2
calls beside the v1 ones."""

_ANSWERS = {"200": {"description": "done"}, "400": {"description": "refused, saying why "
                                                                     "(Together's error shape)"}}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation this server routes."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, parameters, body in _OPERATIONS:
        operation: dict[str, Any] = {"summary": summary, "responses": _ANSWERS}
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = body
        paths.setdefault(path, {})[method] = operation
        if path.startswith(V1_ALIASED):
            paths.setdefault("/v1" + path.removeprefix("/v2"), {})[method] = {
                **operation, "summary": f"{summary} (SDK 2.x's path)", "x-alias-of": path}
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator local-api", "version": "1",
                 "description": "A Together-compatible fine-tuning API on your own machine."},
        "servers": [{"url": "/"}],
        "security": [{"key": []}],
        "components": {"securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
