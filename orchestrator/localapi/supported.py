"""SDK 3.x's catalogue of base models: `GET /v2/supported-models` (`models.list_supported`,
the CLI's `models create`) and `GET /v2/supported-models/{id}` (`models.retrieve_supported`).

The local API's base models (`catalogue`, and with the real trainer the model folders
`local_base_models` maps), in the SDK's camelCase shape, a cursor page at a time. Nothing here
deploys: no model has a dedicated deployment profile.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.localapi import catalogue
from orchestrator.localapi.errors import not_found
from orchestrator.localapi.handlers import api_of
from orchestrator.localapi.projects import cursor_page
from orchestrator.localapi.responses import JSONResponse, iso

__all__ = ["ROUTES"]

PRODUCTS = ("PRODUCT_SERVERLESS", "PRODUCT_FINE_TUNING")
MODALITIES = ("MODALITY_TEXT",)


def _supported(model: catalogue.BaseModel) -> dict[str, Any]:
    info = model.info()
    return {
        "id": model.id, "name": model.id, "displayName": model.display_name,
        "displayType": "chat", "publisher": model.organization,
        "description": model.display_name, "baseModel": f"projects/together/models/{model.id}",
        "baseModelId": model.id, "capabilities": ["CAPABILITY_CHAT"],
        "inputModalities": list(MODALITIES), "outputModalities": list(MODALITIES),
        "products": list(PRODUCTS), "status": "SUPPORTED_MODEL_STATUS_SUPPORTED",
        "contextLength": str(model.context_length), "deploymentProfiles": [],
        "createdAt": iso(model.created), "updatedAt": iso(model.created),
        "familyId": model.id.split("/")[0], "features": ["FEATURE_TOOL_CALLING"],
        "inputFormat": "chat", "outputFormat": "text", "serverlessEndpoint": model.id,
        "tags": ["fine-tunable"],
        "pricing": {"input": info["pricing"]["input"], "output": info["pricing"]["output"],
                    "cachedInput": info["pricing"]["input"]},
    }


def _models(request: Request) -> list[catalogue.BaseModel]:
    api = api_of(request)
    mapped = sorted(api.config.base_models) if api.config.trainer == "peft" else []
    return [*catalogue.BASE_MODELS, *(m for m in map(api.base_model, mapped) if m)]


async def list_supported(request: Request) -> Response:
    """Filtered as the SDK asks: `search` (ids, names, descriptions, any case), `product`,
    `modality`, `adapter_mode` (no model here has a deployment, so none matches one)."""
    query = request.query_params
    search = (query.get("search") or "").casefold()
    items = [_supported(m) for m in _models(request)
             if search in f"{m.id} {m.display_name}".casefold()]
    if query.get("product"):
        items = [i for i in items if query["product"] in i["products"]]
    if query.get("modality"):
        items = [i for i in items if query["modality"] in i["inputModalities"]]
    if query.get("adapter_mode"):
        items = []
    return JSONResponse(cursor_page(request, items))


async def retrieve_supported(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    found = next((m for m in _models(request) if m.id == model_id), None)
    if found is None:
        raise not_found(f"no supported model {model_id!r} (GET /v2/supported-models lists "
                        "them)", "id")
    return JSONResponse(_supported(found))


ROUTES = [
    Route("/v2/supported-models", list_supported, methods=["GET"]),
    Route("/v2/supported-models/{model_id:path}", retrieve_supported, methods=["GET"]),
]
