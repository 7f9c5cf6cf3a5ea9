"""The v2 model API of Together's SDK 3.x: models registered in a project, filled by remote
uploads.

`POST /v2/projects/{project}/models` registers a model or adapter (name, base model by name
or by its `ml_` id from `/v2/supported-models`, type);
`POST /v2/projects/{project}/models/uploads` imports its files from a Hugging Face repository
or a presigned archive URL into it. Nothing is downloaded: the upload goes PENDING -> RUNNING
-> SUCCEEDED by the clock, like a v0 import (`local_upload_duration`, `X-Local-Job`), and each
one that succeeded is a revision of its model, which then serves inference under its name.
The wire format is the SDK's: camelCase fields, cursor pages (`data`, `next_cursor`, `after`).
The project is the local one (`GET /v3/whoami`): its id or its slug.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.localapi import catalogue
from orchestrator.localapi.errors import bad_request, not_found
from orchestrator.localapi.handlers import api_of, json_body
from orchestrator.localapi.models import (
    NAME,
    PHASE_MESSAGES,
    check_base_model,
    import_phases,
    import_plan,
    local_adapter_folder,
    name_taken,
    source_kind,
    upload_succeeded,
)
from orchestrator.localapi.responses import JSONResponse, iso
from orchestrator.localapi.training import keep_adapter

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI

__all__ = ["BASE", "ORGANIZATION_ID", "PROJECT_ID", "ROUTES", "cursor_page", "project_model",
           "revision_id"]

PROJECT_ID = "proj-local"
ORGANIZATION_ID = "org-local"
MAX_PAGE = 100
STATUS = {"queued": "REMOTE_UPLOAD_STATUS_PENDING", "running": "REMOTE_UPLOAD_STATUS_RUNNING",
          "complete": "REMOTE_UPLOAD_STATUS_SUCCEEDED", "failed": "REMOTE_UPLOAD_STATUS_FAILED"}
EVENT = {"queued": ("upload.queued", "LEVEL_INFO"), "running": ("download.started", "LEVEL_INFO"),
         "complete": ("upload.succeeded", "LEVEL_INFO"), "failed": ("upload.failed",
                                                                     "LEVEL_ERROR")}
TYPES = {"model": "model", "models": "model", "adapter": "adapter", "adapters": "adapter"}
VISIBILITIES = ("VISIBILITY_PRIVATE", "VISIBILITY_INTERNAL")


def _project(request: Request) -> str:
    """The project in the path: the local one, by id or slug; 404 for any other."""
    given = request.path_params["project_id"]
    api = api_of(request)
    if given not in (PROJECT_ID, api.config.namespace):
        raise not_found(f"no project {given!r}: the local API's project is {PROJECT_ID} "
                        f"(slug {api.config.namespace})", "project_id")
    return PROJECT_ID


def _string(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} is required: a non-empty string", key)
    return value


def _qualified(api: LocalAPI, name: str) -> str:
    """`<project_slug>/<name>` for a bare or qualified name; 400 for another project's slug or
    a name the API cannot serve under."""
    slug = api.config.namespace
    prefix, _, bare = name.rpartition("/")
    if prefix and prefix != slug:
        raise bad_request(f"name {name!r} names project {prefix!r}; this project's slug is "
                          f"{slug!r}", "name")
    if not NAME.match(bare):
        raise bad_request("name must be 1-100 letters, digits, '.', '_' or '-' (optionally "
                          "after '<project_slug>/')", "name")
    return f"{slug}/{bare}"


def project_model(request: Request, model_id: str, param: str) -> dict[str, Any]:
    """The registered model `model_id` of the project in the path; 404 naming `param`."""
    _project(request)
    row = api_of(request).state.project_model(model_id)
    if row is None:
        raise not_found(f"no model with id {model_id[:60]}", param)
    return row


def _model(request: Request) -> dict[str, Any]:
    return project_model(request, request.path_params["model_id"], "id")


def cursor_page(request: Request, items: list[dict[str, Any]], key: str = "id") -> dict[str, Any]:
    """A cursor page of `items` (each with a `key`, in a stable order): those after the
    `after` one, at most `limit`, with the cursor of the next page."""
    try:
        limit = int(request.query_params.get("limit", MAX_PAGE))
    except ValueError:
        raise bad_request("limit must be an integer", "limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"limit must be between 1 and {MAX_PAGE}", "limit")
    after = request.query_params.get("after")
    if after:
        ids = [item[key] for item in items]
        if after not in ids:
            raise bad_request(f"after {after!r} is not a cursor of this list", "after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    more = len(items) > limit
    return {"object": "list", "data": page, "next_cursor": page[-1][key] if more else None}


# -- remote uploads ----------------------------------------------------------------------

def _phases(api: LocalAPI, row: dict[str, Any]) -> list[tuple[float, str]]:
    return import_phases(api, row["plan"], row["created_at"])


def _upload_json(api: LocalAPI, row: dict[str, Any]) -> dict[str, Any]:
    at, phase = _phases(api, row)[-1]
    return {"id": row["id"], "createdAt": iso(row["created_at"]), "modelId": row["model_id"],
            "projectId": PROJECT_ID, "remoteUrl": row["request"]["remote_url"],
            "status": STATUS[phase], "statusMessage": PHASE_MESSAGES[phase],
            "maxRestarts": 3, "restartCount": 0, "updatedAt": iso(at)}


def _remote(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The remote uploads among a model's revisions (the others are files uploaded direct)."""
    return [row for row in rows if not row["request"].get("direct")]


def _upload(request: Request) -> dict[str, Any]:
    _project(request)
    upload_id = request.path_params["upload_id"]
    row = api_of(request).state.remote_upload(upload_id)
    if row is None or not _remote([row]):
        raise not_found(f"no remote upload with id {upload_id}", "id")
    return row


async def create_upload(request: Request) -> Response:
    _project(request)
    api = api_of(request)
    body = await json_body(request)
    model_id = _string(body, "modelId", required=True)
    remote_url = _string(body, "remoteUrl", required=True)
    assert model_id is not None and remote_url is not None
    registered = api.state.project_model(model_id)
    if registered is None:
        raise not_found(f"no model with id {model_id}: register it first "
                        "(POST /v2/projects/{project_id}/models)", "modelId")
    local = local_adapter_folder(api, remote_url, model_type=registered["request"]["type"],
                                 base=registered["request"]["base_model_id"], param="remoteUrl")
    if local is None and source_kind(remote_url) is None:
        raise bad_request("remoteUrl must be a Hugging Face repository URL "
                          "(https://huggingface.co/org/name) or a presigned S3 URL of a .zip or "
                          ".tar.gz archive", "remoteUrl")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise bad_request("token must be a string", "token")
    upload_id = f"upload-{uuid.uuid4()}"
    # The source credential is write-only: only whether one was given is kept.
    asked: dict[str, Any] = {"remote_url": remote_url, "token_given": bool(token)}
    plan = import_plan(api, request)
    if local is not None:  # a real adapter: copied in at once, served when the call returns
        asked["local_adapter"] = await keep_adapter(api, local[0], upload_id, "remoteUrl")
        plan = {"duration": 0.0, "outcome": "completed"}
    row = {"id": upload_id, "model_id": model_id, "created_at": api.clock(), "request": asked,
           "plan": plan}
    api.state.add_remote_upload(row)
    return JSONResponse(_upload_json(api, row))


async def retrieve_upload(request: Request) -> Response:
    return JSONResponse(_upload_json(api_of(request), _upload(request)))


async def list_uploads(request: Request) -> Response:
    _project(request)
    api = api_of(request)
    return JSONResponse(cursor_page(request, [_upload_json(api, r)
                                        for r in _remote(api.state.remote_uploads())]))


async def upload_events(request: Request) -> Response:
    api = api_of(request)
    row = _upload(request)
    events = []
    for n, (at, phase) in enumerate(_phases(api, row)):
        kind, level = EVENT[phase]
        events.append({"id": f"{row['id']}-event-{n}", "createdAt": iso(at), "level": level,
                       "message": PHASE_MESSAGES[phase], "type": kind})
    return JSONResponse(cursor_page(request, events))


# -- registered models -------------------------------------------------------------------

def _model_json(row: dict[str, Any]) -> dict[str, Any]:
    req = row["request"]
    base = req["base_model_id"]
    found = catalogue.find(base)
    weights: dict[str, Any] = {
        "type": "WEIGHTS_TYPE_ADAPTER" if req["type"] == "adapter" else "WEIGHTS_TYPE_DEFAULT"}
    if found is not None:
        weights["contextLength"] = str(found.context_length)
    return {"id": row["id"], "name": row["name"], "organizationId": ORGANIZATION_ID,
            "projectId": PROJECT_ID, "visibility": req["visibility"], "weights": weights,
            "baseModel": f"projects/together/models/{req.get('base_model_ref', base)}",
            "baseModelId": req.get("base_model_ref", base),
            "description": req["description"]}


async def create_model(request: Request) -> Response:
    _project(request)
    api = api_of(request)
    body = await json_body(request)
    name = _qualified(api, _string(body, "name", required=True) or "")
    given = body.get("baseModelId")
    base = next((m.id for m in api.base_models() if m.object_id == given), given)
    check_base_model(api, base, "baseModelId")
    kind = TYPES.get(str(body.get("type")))
    if kind is None:
        raise bad_request("type must be 'model' or 'adapter' (or 'models', 'adapters')", "type")
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise bad_request("description must be a string", "description")
    if name_taken(api, name):
        raise bad_request("Model name already exists", "name")
    row = {"id": f"model-{uuid.uuid4()}", "name": name, "created_at": api.clock(),
           "request": {"base_model_id": base, "base_model_ref": given, "type": kind,
                       "description": description, "visibility": "VISIBILITY_PRIVATE"}}
    api.state.add_project_model(row)
    return JSONResponse(_model_json(row))


async def retrieve_model(request: Request) -> Response:
    return JSONResponse(_model_json(_model(request)))


async def list_models(request: Request) -> Response:
    _project(request)
    visibility = request.query_params.get("visibility")
    rows = api_of(request).state.project_models()
    items = [_model_json(r) for r in rows
             if visibility is None or r["request"]["visibility"] == visibility]
    return JSONResponse(cursor_page(request, items))


async def update_model(request: Request) -> Response:
    api = api_of(request)
    row = _model(request)
    body = await json_body(request)
    mask = request.query_params.get("update_mask")
    fields = {f.strip() for f in mask.split(",")} if mask else {"name", "description",
                                                                "visibility"}
    req = dict(row["request"])
    name = row["name"]
    if "name" in fields and body.get("name") is not None:
        name = _qualified(api, _string(body, "name") or "")
        if name != row["name"] and name_taken(api, name):
            raise bad_request("Model name already exists", "name")
    if "description" in fields and body.get("description") is not None:
        req["description"] = str(body["description"])
    if "visibility" in fields and body.get("visibility") is not None:
        if body["visibility"] not in VISIBILITIES:
            raise bad_request(f"visibility must be one of {', '.join(VISIBILITIES)}",
                              "visibility")
        req["visibility"] = body["visibility"]
    api.state.update_project_model(row["id"], name=name, request=req)
    return JSONResponse(_model_json({**row, "name": name, "request": req}))


async def delete_model(request: Request) -> Response:
    row = _model(request)
    api_of(request).state.delete_project_model(row["id"])
    return JSONResponse({})


def _revisions(api: LocalAPI, model_id: str) -> list[tuple[float, dict[str, Any]]]:
    """The model's revisions, newest first: one per remote upload that succeeded."""
    done = [(at, row) for row in api.state.remote_uploads(model_id)
            if (at := upload_succeeded(api, row)) is not None]
    return sorted(done, key=lambda pair: pair[0], reverse=True)


def revision_id(upload: dict[str, Any]) -> str:
    """The id of the revision a remote upload that succeeded (or a direct one) made."""
    return "rev-" + str(upload["id"]).removeprefix("upload-")


async def list_revisions(request: Request) -> Response:
    api = api_of(request)
    row = _model(request)
    data: list[dict[str, Any]] = [
        {"revisionId": revision_id(up), "createdAt": iso(at), "lastValidatedAt": iso(at),
         "validationErrors": [], "validationStatus": "REVISION_VALIDATION_STATUS_SUCCESS"}
        for at, up in _revisions(api, row["id"])]
    return JSONResponse(cursor_page(request, data, key="revisionId"))


async def list_model_files(request: Request) -> Response:
    api = api_of(request)
    row = _model(request)
    revisions = _revisions(api, row["id"])
    wanted = request.query_params.get("revision_id")
    chosen = next(((at, up) for at, up in revisions
                   if wanted is None or revision_id(up) == wanted), None)
    if chosen is None:
        if wanted is not None:
            raise not_found(f"no revision {wanted} of model {row['id']}", "revision_id")
        return JSONResponse({"object": "list", "data": [], "next_cursor": None})
    at, upload = chosen
    adapter = row["request"]["type"] == "adapter"
    names = ["adapter_config.json", "adapter_model.safetensors"] if adapter else \
        ["config.json", "model.safetensors"]
    files = [{"path": f["path"], "sizeBytes": str(f["bytes"]), "hash": f["hash"]}
             for f in upload["request"].get("files", ())] or \
        [{"path": name, "sizeBytes": "0", "hash": f"simulated-{upload['id'][-12:]}-{n}"}
         for n, name in enumerate(names)]
    return JSONResponse({"object": "list", "data": files, "next_cursor": None,
                         "revisionId": revision_id(upload), "revisionCreatedAt": iso(at),
                         "totalSizeBytes": str(sum(int(f["sizeBytes"]) for f in files))})


BASE = "/v2/projects/{project_id}/models"
ROUTES = [
    Route(f"{BASE}/uploads", create_upload, methods=["POST"]),
    Route(f"{BASE}/uploads", list_uploads, methods=["GET"]),
    Route(f"{BASE}/uploads/{{upload_id}}", retrieve_upload, methods=["GET"]),
    Route(f"{BASE}/uploads/{{upload_id}}/events", upload_events, methods=["GET"]),
    Route(BASE, create_model, methods=["POST"]),
    Route(BASE, list_models, methods=["GET"]),
    Route(f"{BASE}/{{model_id}}", retrieve_model, methods=["GET"]),
    Route(f"{BASE}/{{model_id}}", update_model, methods=["PATCH"]),
    Route(f"{BASE}/{{model_id}}", delete_model, methods=["DELETE"]),
    Route(f"{BASE}/{{model_id}}/revisions", list_revisions, methods=["GET"]),
    Route(f"{BASE}/{{model_id}}/files", list_model_files, methods=["GET"]),
]
