"""The web view's ASGI app: server-rendered pages and the JSON API they are built from.

Every page is HTML rendered here (Jinja2, autoescaped) from the same documents the JSON API
serves under `/api/...`, which are the command line's `-o json` shapes (`orchestrator.shapes`):
a script, the page and the CLI read one thing. Static files ship in the package; nothing is
fetched from elsewhere.

It reads the store, and writes only through actions, which are off unless `actions` is set:
a cancel request or a resume (queued for a worker) is a POST carrying the page's CSRF token
(and, when the browser sends one, an Origin of this server). With a `token`, every request
must carry it (a cookie the `?token=` of a first visit sets, or `Authorization: Bearer`),
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.charts import loss_svg
from orchestrator.durations import format_duration
from orchestrator.errors import RunNotFound
from orchestrator.schedule.batch import batch_document, load_batch
from orchestrator.schedule.scheduler import Scheduled, schedule_documents
from orchestrator.shapes import (
    event_json,
    metrics_document,
    model_json,
    run_document,
    run_json,
    step_json,
)
from orchestrator.steps.builtin import stored_pipeline
from orchestrator.steps.order import ordered_steps, step_order
from orchestrator.store.base import StateStore
from orchestrator.store.records import (
    MetricPoint,
    RunRecord,
    RunStatus,
    StepRecord,
    parse_statuses,
)
from orchestrator.web.actions import ActionRefused, queue_resume
from orchestrator.web.dag import dag_svg
from orchestrator.web.grid import batch_grid

__all__ = ["MAX_PAGE", "create_app", "serving_app"]

MAX_PAGE = 500
"""The most runs one page (or API call) lists; `before` pages further back."""
DEFAULT_PAGE = 50
EVENTS_SHOWN = 500
SCHEDULE_RUNS = 5
"""A schedule's most recent runs, on the schedules page."""
MAX_STREAMS = 64
"""Pages following a live run at once; more are answered 503 with a Retry-After."""
FOLLOW_POLL = 0.5
"""Seconds between reads of the store for a page following a live run."""

Handler = Callable[[Request], Awaitable[Response]]


class BadQuery(ValueError):
    """A query parameter that cannot be used: 400, saying which."""


class Refused(PermissionError):
    """An action this server does not take (actions off, no CSRF token): 403, saying why."""


def _query(request: Request) -> dict[str, Any]:
    """The run filters of a runs page or `/api/runs`, checked."""
    params = request.query_params
    statuses = None
    if params.get("status"):
        try:
            statuses = parse_statuses(s for s in params["status"].split(",") if s.strip())
        except ValueError as exc:
            raise BadQuery(f"status {exc}") from None
    try:
        limit = int(params.get("limit", DEFAULT_PAGE))
        before = float(params["before"]) if params.get("before") else None
    except ValueError:
        msg = "limit must be an integer and before a number of seconds"
        raise BadQuery(msg) from None
    if not 1 <= limit <= MAX_PAGE:
        msg = f"limit must be 1 to {MAX_PAGE}"
        raise BadQuery(msg)
    return {"statuses": statuses, "pipeline": params.get("pipeline") or None,
            "batch_id": params.get("batch") or None, "limit": limit, "until": before}


class _Views:
    """The handlers of one app, over one store."""

    def __init__(self, store: StateStore, *, actions: bool,
                 scheduled: Sequence[Scheduled] | str) -> None:
        self.store = store
        self.actions = actions
        self.scheduled = scheduled
        """The schedules shown, or why they could not be read."""
        self.streams = 0
        """Live streams open now (at most MAX_STREAMS: each reads the store twice a second)."""
        self.csrf = secrets.token_urlsafe(32)
        """Put in each page's forms; a POST without it is refused (another site's form)."""
        self.templates = Environment(loader=PackageLoader("orchestrator.web", "templates"),
                                     autoescape=select_autoescape(["html"]), auto_reload=False)
        self.templates.filters["when"] = _when
        self.templates.filters["span"] = _span

    def page(self, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(name).render(
            actions=self.actions, csrf=self.csrf, **values), status_code=code)

    def guarded(self, handler: Handler, *, html: bool) -> Handler:
        """`handler`, an unknown id a 404 and a bad query a 400 (a page, or JSON)."""
        async def guard(request: Request) -> Response:
            try:
                return await handler(request)
            except RunNotFound as exc:
                code, message = 404, str(exc)
            except BadQuery as exc:
                code, message = 400, str(exc)
            except Refused as exc:
                code, message = 403, str(exc)
            if html:
                return self.page("error.html", code, message=message, status=code)
            return JSONResponse({"error": {"message": message}}, status_code=code)
        return guard

    async def runs_api(self, request: Request) -> Response:
        found = await self.store.list_runs(**_query(request))
        return JSONResponse([run_json(run) for run in found])

    async def runs_page(self, request: Request) -> Response:
        query = _query(request)
        found = await self.store.list_runs(**query)
        older = found[-1].created_at if len(found) == query["limit"] else None
        return self.page("runs.html", runs=[run_json(r) for r in found],
                         query=request.query_params, older=older,
                         statuses=[s.value for s in RunStatus])

    async def _read(self, run_id: str) -> tuple[RunRecord, dict[str, StepRecord],
                                                 list[MetricPoint]]:
        return (await self.store.get_run(run_id), await self.store.get_steps(run_id),
                await self.store.get_metrics(run_id))

    async def run_api(self, request: Request) -> Response:
        run, steps, points = await self._read(request.path_params["run_id"])
        return JSONResponse(run_document(run, ordered_steps(run, steps), points))

    async def metrics_api(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        await self.store.get_run(run_id)
        return JSONResponse(metrics_document(run_id, await self.store.get_metrics(run_id)))

    async def events_api(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        await self.store.get_run(run_id)
        events = await self.store.get_events(run_id, after=_after(request),
                                             limit=EVENTS_SHOWN)
        return JSONResponse([event_json(e) for e in events])

    async def stream_api(self, request: Request) -> Response:
        """Server-sent events of a run: `event` for each new entry of its log, `status` when
        its status changes, `end` once no one executes it (the browser stops listening)."""
        run_id = request.path_params["run_id"]
        await self.store.get_run(run_id)
        if self.streams >= MAX_STREAMS:
            return JSONResponse({"error": {"message": f"{MAX_STREAMS} pages already follow "
                                           "runs here; try again later"}}, status_code=503,
                                headers={"Retry-After": "5"})
        return StreamingResponse(self._counted(_follow(self.store, run_id, _after(request),
                                                       request)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def _counted(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """`stream`, counted among the open ones while it lasts."""
        self.streams += 1
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.streams -= 1

    async def run_page(self, request: Request) -> Response:
        run, steps, points = await self._read(request.path_params["run_id"])
        events = await self.store.get_events(run.id)
        pipeline = stored_pipeline(run.pipeline_text, run.pipeline_path)  # parsed once
        order = step_order(run, steps, pipeline)
        document = run_document(run, [steps[sid] for sid in order if sid in steps], points)
        graph = dag_svg(pipeline, steps) if pipeline is not None else None
        # Steps not started yet too (pending): their rows move live with the stream.
        rows = [step_json(steps.get(sid) or StepRecord(sid)) for sid in order]
        outputs = [s["outputs"] for s in document["steps"] if s["outputs"]]
        model = next((o["model_name"] for o in outputs if o.get("model_name")), None)
        smoke = next((o for o in outputs if "text" in o and "latency" in o), None)
        return self.page("run.html", doc=document, rows=rows, dag=graph,
                         chart=loss_svg(points, title=run.id) if points else None,
                         events=[event_json(e) for e in events[-EVENTS_SHOWN:]],
                         last_seq=events[-1].seq if events else 0, model=model, smoke=smoke)

    async def batch_api(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, request.path_params["batch_id"])
        return JSONResponse(batch_document(batch, cells))

    async def batch_page(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, request.path_params["batch_id"])
        document = batch_document(batch, cells)
        pipeline = stored_pipeline(batch.pipeline_text, batch.pipeline_path)
        matrix = pipeline.matrix if pipeline is not None else None
        axes = list(matrix.axes) if matrix is not None else []  # else as the cells have them
        return self.page("batch.html", batch=document, grid=batch_grid(document["cells"], axes),
                         status=document["status"])

    async def _action_form(self, request: Request) -> dict[str, str]:
        """The form of an action, once it is allowed: actions on, the page's CSRF token, and
        this server's origin when the browser names one. Refused (403) otherwise."""
        if not self.actions:
            msg = "actions are off: serve the web view with orchestrator ui --allow-actions"
            raise Refused(msg)
        form = await request.form(max_files=0, max_fields=4, max_part_size=1024)
        given = str(form.get("csrf", ""))
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if not hmac.compare_digest(given.encode(), self.csrf.encode()) or (
                origin is not None and origin.split("://", 1)[-1] != host):
            msg = "this form did not come from this web view (its CSRF token or origin is wrong)"
            raise Refused(msg)
        return {k: str(v) for k, v in form.items()}

    async def cancel(self, request: Request) -> Response:
        """POST /runs/RUN/cancel: ask for the run to be cancelled, as `orchestrator cancel`
        does (the process executing it, or the next worker, cancels its remote jobs)."""
        await self._action_form(request)
        run_id = request.path_params["run_id"]
        await self.store.get_run(run_id)
        await self.store.request_cancel([run_id])
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def resume(self, request: Request) -> Response:
        """POST /runs/RUN/resume [from]: queue the run for a worker to resume, as `resume
        RUN [--from STEP]` would (see `actions.queue_resume`)."""
        form = await self._action_form(request)
        run_id = request.path_params["run_id"]
        try:
            await queue_resume(self.store, run_id, form.get("from") or None)
        except ActionRefused as exc:
            raise Refused(str(exc)) from None
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def _schedules(self) -> list[dict[str, Any]]:
        if isinstance(self.scheduled, str):
            return []
        return await schedule_documents(self.store, self.scheduled, last=SCHEDULE_RUNS)

    async def schedules_api(self, request: Request) -> Response:
        return JSONResponse(await self._schedules())

    async def schedules_page(self, request: Request) -> Response:
        problem = self.scheduled if isinstance(self.scheduled, str) else None
        return self.page("schedules.html", schedules=await self._schedules(), problem=problem)

    async def models_api(self, request: Request) -> Response:
        models = await self.store.list_models(limit=MAX_PAGE)
        return JSONResponse([model_json(m) for m in models])

    async def models_page(self, request: Request) -> Response:
        models = await self.store.list_models(limit=MAX_PAGE)
        return self.page("models.html", models=[model_json(m) for m in models])


def create_app(store: StateStore, *, actions: bool = False, token: str | None = None,
               scheduled: Sequence[Scheduled] | str = ()) -> Starlette:
    """The web view of `store` (already open, left open); `actions` lets it cancel runs,
    `token` asks every request for it; `scheduled` are the schedules it shows (or why they
    could not be read)."""
    views = _Views(store, actions=actions, scheduled=scheduled)
    pages = {"/": views.runs_page, "/runs/{run_id}": views.run_page,
             "/batches/{batch_id}": views.batch_page, "/models": views.models_page,
             "/schedules": views.schedules_page}
    api = {"/api/runs": views.runs_api, "/api/runs/{run_id}": views.run_api,
           "/api/runs/{run_id}/metrics": views.metrics_api,
           "/api/runs/{run_id}/events": views.events_api,
           "/api/runs/{run_id}/stream": views.stream_api,
           "/api/batches/{batch_id}": views.batch_api, "/api/models": views.models_api,
           "/api/schedules": views.schedules_api}
    routes: list[Route | Mount] = [
        Route("/runs/{run_id}/cancel", views.guarded(views.cancel, html=True),
              methods=["POST"]),
        Route("/runs/{run_id}/resume", views.guarded(views.resume, html=True),
              methods=["POST"]),
        *(Route(path, views.guarded(handler, html=True)) for path, handler in pages.items()),
        *(Route(path, views.guarded(handler, html=False)) for path, handler in api.items()),
        Route("/favicon.ico", _no_icon),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="static"),
    ]
    middleware = [Middleware(_Headers)]
    if token:
        middleware.append(Middleware(_TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware)


SECURITY_HEADERS = [
    # Only this server's own script, styles and images; no frames, no plugins: a value a
    # step or a provider stored can never bring code in, even past the escaping.
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; connect-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: with it, a browser sends `Origin: null` on the page's own forms, which
    # the CSRF check must refuse. same-origin never shows an address to another site.
    (b"referrer-policy", b"same-origin"),
]


class _Headers:
    """Every response carries SECURITY_HEADERS."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class _TokenGate:
    """Every request carries the token, or is refused (401) before any handler runs."""

    COOKIE = "orchestrator_ui"

    def __init__(self, app: Any, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        bearer = request.headers.get("authorization", "")
        if self._matches(request.cookies.get(self.COOKIE)) or (
                bearer.startswith("Bearer ") and self._matches(bearer[7:])):
            await self.app(scope, receive, send)
            return
        response: Response
        if self._matches(request.query_params.get("token")):
            # A first visit with ?token=: remember it, and take it out of the address bar.
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(self.COOKIE, self._token.decode(), httponly=True,
                                samesite="strict")
        else:
            response = JSONResponse({"error": {"message": "this web view needs its token: "
                                               "open it once with ?token=... (the setting "
                                               "ui_token)"}}, status_code=401)
        await response(scope, receive, send)


def serving_app(open_store: Callable[[], AbstractAsyncContextManager[StateStore]],
                *, ready: Callable[[], None] | None = None, actions: bool = False,
                token: str | None = None, scheduled: Sequence[Scheduled] | str = ()
                ) -> Starlette:
    """The web view of the store `open_store` opens when the app starts (its lifespan, in
    the server's own event loop) and closes when it stops."""
    views: list[Starlette] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with open_store() as store:
            views.append(create_app(store, actions=actions, token=token,
                                    scheduled=scheduled))
            if ready is not None:
                ready()
            yield

    async def forward(scope: Any, receive: Any, send: Any) -> None:
        await views[0](scope, receive, send)

    return Starlette(lifespan=lifespan, routes=[Mount("/", app=forward)])


async def _no_icon(request: Request) -> Response:
    """No icon, said without a 404 in every page's console."""
    return Response(status_code=204)


def _after(request: Request) -> int:
    try:
        return int(request.query_params.get("after", 0))
    except ValueError:
        msg = "after must be an event number"
        raise BadQuery(msg) from None


async def _follow(store: StateStore, run_id: str, after: int,
                  request: Request) -> AsyncIterator[str]:
    """The stream of `stream_api`, read from the store every FOLLOW_POLL seconds."""
    shown = None
    while not await request.is_disconnected():
        run = await store.get_run(run_id)
        events = await store.get_events(run_id, after=after, limit=EVENTS_SHOWN)
        for event in events:
            after = event.seq
            yield f"event: event\nid: {event.seq}\ndata: {json.dumps(event_json(event))}\n\n"
        if run.status.value != shown:
            shown = run.status.value
            yield f"event: status\ndata: {json.dumps(run_json(run))}\n\n"
        if run.settled and not events:
            yield "event: end\ndata: {}\n\n"
            return
        await anyio.sleep(FOLLOW_POLL)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)
