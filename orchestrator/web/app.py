"""The web view's ASGI app: server-rendered pages and the JSON API they are built from.

Every page is HTML rendered here (Jinja2, autoescaped) from the same documents the JSON API
serves under `/api/...`, which are the command line's `-o json` shapes (`orchestrator.shapes`):
a script, the page and the CLI read one thing. Static files ship in the package; nothing is
fetched from elsewhere.

It reads the store, and writes only through actions, which are off unless `actions` is set:
a cancel request or a resume (queued for a worker) is a POST carrying the page's CSRF token
(and, when the browser sends one, an Origin of this server). The gates in front of it
(`gates`) check the Host and the token and put the security headers on every answer.

Whatever is stored, the pages answer: values are turned into text here, in Python, where
any shape a step stored is expected (a log line without fields, a loss that is NaN, a time
past the year 9999), and a query value that cannot be used is a 400 saying which, before
the store is asked. A page is rendered in a worker thread, so a big one (a 10,000-step run)
never holds up the other requests; its steps and events come in pages.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
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
from starlette.types import ASGIApp

from orchestrator.charts import loss_svg
from orchestrator.durations import format_duration
from orchestrator.errors import RunNotFound
from orchestrator.schedule.batch import batch_document, load_batch
from orchestrator.schedule.scheduler import Scheduled, schedule_documents
from orchestrator.shapes import (
    document_text,
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
from orchestrator.store.policy import no_such_batch, no_such_run
from orchestrator.store.records import RunStatus, StepRecord, parse_statuses
from orchestrator.store.rows import EVENTS_END
from orchestrator.web.actions import ActionRefused, queue_resume
from orchestrator.web.dag import dag_svg
from orchestrator.web.gates import guarded_app
from orchestrator.web.grid import batch_grid

__all__ = ["DAG_MAX_STEPS", "EVENTS_SHOWN", "MAX_PAGE", "STEPS_SHOWN", "create_app",
           "serving_app"]

MAX_PAGE = 500
"""The most runs one page (or API call) lists; `before` pages further back."""
DEFAULT_PAGE = 50
EVENTS_SHOWN = 500
"""A run's events on its page, and in one answer of its events API; `before` pages back."""
STEPS_SHOWN = 200
"""A run's steps in one page of its steps table; `steps=N` shows them from the N-th on."""
DAG_MAX_STEPS = 300
"""The most steps a run's graph is drawn for; a bigger run's page has its table alone."""
SCHEDULE_RUNS = 5
"""A schedule's most recent runs, on the schedules page."""
MAX_STREAMS = 64
"""Pages following a live run at once; more are answered 503 with a Retry-After."""
FOLLOW_POLL = 0.5
"""Seconds between reads of the store for a page following a live run."""
MAX_QUERY_TEXT = 200
"""The longest id or filter value taken from an address; ids are far shorter."""
SHOWN_CHARS = 2000
"""Characters of one stored value a page shows (a step's answer, an event's data); the JSON
API gives every value whole."""

Handler = Callable[[Request], Awaitable[Response]]
_log = structlog.get_logger("orchestrator.web")


class BadQuery(ValueError):
    """A query parameter that cannot be used: 400, saying which."""


class Refused(PermissionError):
    """An action this server does not take (actions off, no CSRF token): 403, saying why."""


class _JSON(JSONResponse):
    """JSON that every reader takes: a NaN or infinity a step stored is null (`shapes`)."""

    def render(self, content: Any) -> bytes:
        return document_text(content).encode()


# -- what an address may ask for -------------------------------------------------------------


def _plain(value: str, name: str) -> str:
    """A value from the address that may reach the store: short, no control characters
    (PostgreSQL refuses a NUL in text; nothing stored has one in an id or a name)."""
    if len(value) > MAX_QUERY_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        msg = f"{name} must be at most {MAX_QUERY_TEXT} printable characters"
        raise BadQuery(msg)
    return value


def _whole(request: Request, name: str, default: int, *, low: int = 0,
           high: int = EVENTS_END) -> int:
    """An integer query parameter, within [low, high]."""
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = int(raw) if len(raw) <= 20 else high + 1
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        msg = f"{name} must be a whole number from {low} to {high}"
        raise BadQuery(msg)
    return value


def _path_id(request: Request, key: str) -> str:
    """A run's or batch's id from the path; one no run could have is not found, unasked."""
    value = request.path_params[key]
    try:
        return _plain(value, key)
    except BadQuery:
        shown = value[:40]
        raise (no_such_batch(shown) if key == "batch_id" else no_such_run(shown)) from None


def _query(request: Request) -> dict[str, Any]:
    """The run filters of a runs page or `/api/runs`, checked."""
    params = request.query_params
    statuses = None
    if params.get("status"):
        try:
            statuses = parse_statuses(s for s in _plain(params["status"], "status").split(",")
                                      if s.strip())
        except ValueError as exc:
            raise BadQuery(f"status {exc}") from None
    limit = _whole(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    before = None
    if params.get("before"):
        try:
            before = float(params["before"][:40])
        except ValueError:
            before = math.nan
        if not 0 <= before < 1e12:
            msg = "before must be a time in seconds since the epoch"
            raise BadQuery(msg)
    return {"statuses": statuses,
            "pipeline": _plain(params.get("pipeline", ""), "pipeline") or None,
            "batch_id": _plain(params.get("batch", ""), "batch") or None, "limit": limit,
            "until": before}


# -- stored values as a page shows them ------------------------------------------------------


def _when(ts: Any) -> str:
    """A stored time as local time; anything else as it is (a page shows what is stored)."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return _cut(str(ts), 40)


def _span(seconds: Any) -> str:
    if seconds is None:
        return "-"
    if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0:
        return format_duration(seconds)
    return _cut(str(seconds), 40)


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _compact(value: Any) -> str:
    return _cut(document_text(value))


def event_row(event: Mapping[str, Any]) -> dict[str, str]:
    """An event (`event_json`) as a row of a page's event table: when, where, what, detail.
    A `log` event shows its level, message and fields; any part may be missing."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {"data": data}
    where = str(event.get("step") or "-") + (f"#{event['attempt']}" if event.get("attempt")
                                              else "")
    if event.get("kind") == "log":
        fields = data.get("fields")
        message = str(data.get("message", ""))
        detail = message if not fields else f"{message} {_compact(fields)}"
        return {"when": _when(event.get("ts")), "where": where,
                "what": str(data.get("level", "log")), "detail": _cut(detail)}
    return {"when": _when(event.get("ts")), "where": where, "what": str(event.get("kind")),
            "detail": _compact(data) if data else ""}


def _smoke(outputs: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The smoke test's answer and latency, from the outputs that hold them."""
    found = next((o for o in outputs if "text" in o and "latency" in o), None)
    if found is None:
        return None
    latency = found["latency"]
    shown = f"{latency} s" if isinstance(latency, int | float) else _cut(str(latency), 40)
    return {"text": _cut(str(found["text"])), "latency": shown}


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

    def _render(self, name: str, values: dict[str, Any]) -> str:
        return self.templates.get_template(name).render(actions=self.actions, csrf=self.csrf,
                                                        **values)

    async def page(self, name: str, code: int = 200, **values: Any) -> HTMLResponse:
        """The page `name` rendered in a worker thread: a big one holds up no request."""
        html = await anyio.to_thread.run_sync(self._render, name, values)
        return HTMLResponse(html, status_code=code)

    def guarded(self, handler: Handler, *, html: bool) -> Handler:
        """`handler`, an unknown id a 404, a bad query a 400, a refusal a 403 (a page, or
        JSON); anything unforeseen a 500 that says so in one line (and is logged)."""
        async def guard(request: Request) -> Response:
            try:
                return await handler(request)
            except RunNotFound as exc:
                code, message = 404, str(exc)
            except BadQuery as exc:
                code, message = 400, str(exc)
            except Refused as exc:
                code, message = 403, str(exc)
            except Exception as exc:  # noqa: BLE001  (the answer must still be a page)
                _log.exception("web view request failed", path=request.url.path[:200])
                code = 500
                message = (f"this page could not be made ({type(exc).__name__}); the web "
                           "view's log has the details")
            if html:
                return HTMLResponse(self._render("error.html", {"message": message,
                                                                "status": code}),
                                    status_code=code)
            return _JSON({"error": {"message": message}}, status_code=code)
        return guard

    async def runs_api(self, request: Request) -> Response:
        found = await self.store.list_runs(**_query(request))
        return _JSON([run_json(run) for run in found])

    async def runs_page(self, request: Request) -> Response:
        query = _query(request)
        found = await self.store.list_runs(**query)
        older = found[-1].created_at if len(found) == query["limit"] else None
        return await self.page("runs.html", runs=[run_json(r) for r in found],
                               query=dict(request.query_params), older=older,
                               statuses=[s.value for s in RunStatus])

    async def run_api(self, request: Request) -> Response:
        run_id = _path_id(request, "run_id")
        run = await self.store.get_run(run_id)
        steps, points = await self.store.get_steps(run_id), await self.store.get_metrics(run_id)
        return _JSON(run_document(run, ordered_steps(run, steps), points))

    async def metrics_api(self, request: Request) -> Response:
        run_id = _path_id(request, "run_id")
        await self.store.get_run(run_id)
        return _JSON(metrics_document(run_id, await self.store.get_metrics(run_id)))

    async def events_api(self, request: Request) -> Response:
        """`?after=N`: the events after the N-th, oldest first; `?before=N`: the newest
        before the N-th (paging back from the end); EVENTS_SHOWN at most."""
        run_id = _path_id(request, "run_id")
        after, before = _whole(request, "after", 0), _whole(request, "before", 0)
        await self.store.get_run(run_id)
        events = await self.store.get_events(run_id, after=after, before=before or None,
                                             limit=EVENTS_SHOWN, newest=bool(before))
        return _JSON([event_json(e) for e in events])

    async def stream_api(self, request: Request) -> Response:
        """Server-sent events of a run: `event` for each new entry of its log, `status` when
        its status changes, `end` once no one executes it (the browser stops listening)."""
        run_id = _path_id(request, "run_id")
        after = _whole(request, "after", 0)
        await self.store.get_run(run_id)
        if self.streams >= MAX_STREAMS:
            return _JSON({"error": {"message": f"{MAX_STREAMS} pages already follow "
                                    "runs here; try again later"}}, status_code=503,
                         headers={"Retry-After": "5"})
        return StreamingResponse(self._counted(_follow(self.store, run_id, after, request)),
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
        """A run: facts, graph (up to DAG_MAX_STEPS), a page of its steps (`?steps=N`
        starts at the N-th) and the newest of its events (`?events_before=SEQ` pages back)."""
        run_id = _path_id(request, "run_id")
        first = _whole(request, "steps", 0)
        before = _whole(request, "events_before", 0)
        run = await self.store.get_run(run_id)
        steps, points = await self.store.get_steps(run_id), await self.store.get_metrics(run_id)
        events = await self.store.get_events(run_id, before=before or None,
                                             limit=EVENTS_SHOWN, newest=True)
        return await self.page("run.html", **self._run_view(run, steps, points, events,
                                                            first=first, before=before))

    def _run_view(self, run: Any, steps: dict[str, StepRecord], points: Any, events: Any, *,
                  first: int, before: int) -> dict[str, Any]:
        """What the run page shows, every value as text it can print."""
        size = len(run.step_ids) if run.step_ids is not None else len(steps)
        pipeline = (stored_pipeline(run.pipeline_text, run.pipeline_path)
                    if size <= DAG_MAX_STEPS else None)
        order = step_order(run, steps, pipeline)
        shown = order[first:first + STEPS_SHOWN]
        # Steps not started yet too (pending): their rows move live with the stream.
        rows = [step_json(steps.get(sid) or StepRecord(sid)) for sid in shown]
        outputs = [dict(r.outputs) for r in steps.values() if r.outputs]
        model = next((o["model_name"] for o in outputs if o.get("model_name")), None)
        document = run_document(run, (), points)
        return {
            "doc": document, "rows": rows, "model": None if model is None else str(model),
            "smoke": _smoke(outputs),
            "dag": dag_svg(pipeline, steps) if pipeline is not None else None,
            "dag_skipped": size if pipeline is None and size > DAG_MAX_STEPS else None,
            "chart": loss_svg(points, title=run.id) if points else None,
            "events": [event_row(event_json(e)) for e in events],
            "last_seq": max((e.seq for e in events), default=0) if not before else None,
            "older_events": events[0].seq if len(events) == EVENTS_SHOWN else None,
            "steps_total": len(order), "steps_first": first,
            "steps_next": first + STEPS_SHOWN if first + STEPS_SHOWN < len(order) else None,
            "steps_prev": max(0, first - STEPS_SHOWN) if first else None,
            # A choice of steps to resume from, or (too many to list) a field to name one.
            "resumable": ([sid for sid in order if "." not in sid]
                          if len(order) <= STEPS_SHOWN else None),
        }

    async def batch_api(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, _path_id(request, "batch_id"))
        return _JSON(batch_document(batch, cells))

    async def batch_page(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, _path_id(request, "batch_id"))
        document = batch_document(batch, cells)
        pipeline = stored_pipeline(batch.pipeline_text, batch.pipeline_path)
        matrix = pipeline.matrix if pipeline is not None else None
        axes = list(matrix.axes) if matrix is not None else []  # else as the cells have them
        return await self.page("batch.html", batch=document,
                               grid=batch_grid(document["cells"], axes),
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
        run_id = _path_id(request, "run_id")
        await self.store.get_run(run_id)
        await self.store.request_cancel([run_id])
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def resume(self, request: Request) -> Response:
        """POST /runs/RUN/resume [from]: queue the run for a worker to resume, as `resume
        RUN [--from STEP]` would (see `actions.queue_resume`)."""
        form = await self._action_form(request)
        run_id = _path_id(request, "run_id")
        try:
            await queue_resume(self.store, run_id, _plain(form.get("from") or "", "from")
                               or None)
        except ActionRefused as exc:
            raise Refused(str(exc)) from None
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def _schedules(self) -> list[dict[str, Any]]:
        if isinstance(self.scheduled, str):
            return []
        return await schedule_documents(self.store, self.scheduled, last=SCHEDULE_RUNS)

    async def schedules_api(self, request: Request) -> Response:
        return _JSON(await self._schedules())

    async def schedules_page(self, request: Request) -> Response:
        problem = self.scheduled if isinstance(self.scheduled, str) else None
        return await self.page("schedules.html", schedules=await self._schedules(),
                               problem=problem)

    async def models_api(self, request: Request) -> Response:
        models = await self.store.list_models(limit=MAX_PAGE)
        return _JSON([model_json(m) for m in models])

    async def models_page(self, request: Request) -> Response:
        models = await self.store.list_models(limit=MAX_PAGE)
        return await self.page("models.html", models=[model_json(m) for m in models])


def create_app(store: StateStore, *, actions: bool = False, token: str | None = None,
               scheduled: Sequence[Scheduled] | str = (),
               hosts: frozenset[str] | None = None) -> ASGIApp:
    """The web view of `store` (already open, left open); `actions` lets it cancel runs,
    `token` asks every request for it; `scheduled` are the schedules it shows (or why they
    could not be read); `hosts`, the Host values it answers to (`gates.allowed_hosts`: a
    server names them; None, in process, takes any)."""
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
    app: ASGIApp = guarded_app(Starlette(routes=routes), hosts=hosts, token=token)
    return app


def serving_app(open_store: Callable[[], AbstractAsyncContextManager[StateStore]],
                *, ready: Callable[[], None] | None = None, actions: bool = False,
                token: str | None = None, scheduled: Sequence[Scheduled] | str = (),
                hosts: frozenset[str] | None = None) -> Starlette:
    """The web view of the store `open_store` opens when the app starts (its lifespan, in
    the server's own event loop) and closes when it stops."""
    views: list[ASGIApp] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with open_store() as store:
            views.append(create_app(store, actions=actions, token=token,
                                    scheduled=scheduled, hosts=hosts))
            if ready is not None:
                ready()
            yield

    async def forward(scope: Any, receive: Any, send: Any) -> None:
        await views[0](scope, receive, send)

    return Starlette(lifespan=lifespan, routes=[Mount("/", app=forward)])


async def _no_icon(request: Request) -> Response:
    """No icon, said without a 404 in every page's console."""
    return Response(status_code=204)


async def _follow(store: StateStore, run_id: str, after: int,
                  request: Request) -> AsyncIterator[str]:
    """The stream of `stream_api`, read from the store every FOLLOW_POLL seconds."""
    shown = None
    while not await request.is_disconnected():
        run = await store.get_run(run_id)
        events = await store.get_events(run_id, after=after, limit=EVENTS_SHOWN)
        for event in events:
            after = event.seq
            yield (f"event: event\nid: {event.seq}\ndata: {document_text(event_json(event))}"
                   "\n\n")
        if run.status.value != shown:
            shown = run.status.value
            yield f"event: status\ndata: {document_text(run_json(run))}\n\n"
        if run.settled and not events:
            yield "event: end\ndata: {}\n\n"
            return
        await anyio.sleep(FOLLOW_POLL)
