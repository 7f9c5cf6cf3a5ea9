"""SDK 3.x's catalogue of base models: `GET /v2/supported-models` (`models.list_supported`,
the CLI's `models create`) and `GET /v2/supported-models/{id}` (`models.retrieve_supported`).

The local API's base models (`catalogue`, and with the real trainer the model folders
`local_base_models` maps), in the SDK's camelCase shape, a cursor page at a time. Each has one
deployment profile: the local API itself, serving adapters of any base on demand; its `model`
(`projects/together/models/ml_...`) is the id `models create` registers a model on.
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
ADAPTER_MODE = "ADAPTER_MODE_DYNAMIC"
"""The local API loads any adapter of a base when asked for it."""


def _supported(model: catalogue.BaseModel) -> dict[str, Any]:
    info = model.info()
    return {
        "id": model.id, "name": model.id, "displayName": model.display_name,
        "displayType": "chat", "publisher": model.organization,
        "description": model.display_name, "baseModel": f"projects/together/models/{model.id}",
        "baseModelId": model.id, "capabilities": ["CAPABILITY_CHAT"],
        "inputModalities": list(MODALITIES), "outputModalities": list(MODALITIES),
        "products": list(PRODUCTS), "status": "SUPPORTED_MODEL_STATUS_SUPPORTED",
        "contextLength": str(model.context_length), "deploymentProfiles": [_profile(model)],
        "createdAt": iso(model.created), "updatedAt": iso(model.created),
        "familyId": model.id.split("/")[0], "features": ["FEATURE_TOOL_CALLING"],
        "inputFormat": "chat", "outputFormat": "text", "serverlessEndpoint": model.id,
        "tags": ["fine-tunable"],
        "pricing": {"input": info["pricing"]["input"], "output": info["pricing"]["output"],
                    "cachedInput": info["pricing"]["input"]},
    }


def _profile(model: catalogue.BaseModel) -> dict[str, Any]:
    return {"profileId": f"local-{model.object_id}", "certifiedConfigRevisionId": "",
            "certifiedModelRevisionId": "", "config": "", "gpuCount": 0, "gpuType": "local",
            "model": f"projects/together/models/{model.object_id}", "modelName": model.id,
            "parallelism": "", "quantization": "", "adapterMode": ADAPTER_MODE,
            "performanceBenchmarks": {"maxContextLength": str(model.context_length)}}


async def list_supported(request: Request) -> Response:
    """Filtered as the SDK asks: `search` (ids, names, descriptions, any case), `product`,
    `modality`, `adapter_mode` (each model's one profile loads adapters dynamically)."""
    query = request.query_params
    search = (query.get("search") or "").casefold()
    items = [_supported(m) for m in api_of(request).base_models()
             if search in f"{m.id} {m.display_name}".casefold()]
    if query.get("product"):
        items = [i for i in items if query["product"] in i["products"]]
    if query.get("modality"):
        items = [i for i in items if query["modality"] in i["inputModalities"]]
    if query.get("adapter_mode") and query["adapter_mode"] != ADAPTER_MODE:
        items = []
    return JSONResponse(cursor_page(request, items))


async def retrieve_supported(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    found = next((m for m in api_of(request).base_models() if m.id == model_id), None)
    if found is None:
        raise not_found(f"no supported model {model_id!r} (GET /v2/supported-models lists "
                        "them)", "id")
    return JSONResponse(_supported(found))


ROUTES = [
    Route("/v2/supported-models", list_supported, methods=["GET"]),
    Route("/v2/supported-models/{model_id:path}", retrieve_supported, methods=["GET"]),
]
