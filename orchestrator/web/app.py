"""The web view's ASGI app: server-rendered pages and the JSON API they are built from.

Every page is HTML rendered here (Jinja2, autoescaped) from the same documents the JSON API
serves under `/api/...`, which are the command line's `-o json` shapes (`views.shapes`):
a script, the page and the CLI read one thing. Static files ship in the package; nothing is
fetched from elsewhere. The pages follow what changes without a reload (`static/live.js`:
the runs list polls `/api/runs`, a run's page listens to its stream and reads the run again).

It reads the store, and writes only through `actions` (None: off): a cancel, a resume, a
schedule fired now or paused, each a POST carrying the page's CSRF token (and, when the
browser sends one, an Origin of this server). The gates in front of it (`gates`) check the
Host and the token and put the security headers on every answer.

Whatever is stored, the pages answer (`display` turns values into text, `params` checks what
an address asks for). A page is rendered in a worker thread, so a big one (a 10,000-step run)
never holds up the other requests; its steps and events come in pages.

(Over 400 lines: the handlers of every page and API route, one per route, kept together so
that each page and the JSON it is built from sit side by side.)
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from orchestrator.errors import RunNotFound
from orchestrator.log import get_logger
from orchestrator.steps.builtin import stored_pipeline
from orchestrator.store.base import StateStore
from orchestrator.store.records import RunRecord, RunStatus, StepRecord
from orchestrator.views.batches import batch_document, batch_status, eval_figures, load_batch
from orchestrator.views.charts import cells_svg, loss_svg
from orchestrator.views.order import ordered_steps, step_order
from orchestrator.views.schedules import Scheduled, schedule_documents
from orchestrator.views.shapes import (
    batch_json,
    document_text,
    estimated_price,
    event_json,
    metrics_document,
    model_json,
    run_document,
    run_json,
    step_json,
)
from orchestrator.web import display
from orchestrator.web.actions import ActionRefused, Actions
from orchestrator.web.dag import dag_svg
from orchestrator.web.gates import guarded_app
from orchestrator.web.grid import batch_layout
from orchestrator.web.params import (
    MAX_PAGE,
    BadQuery,
    path_id,
    plain,
    run_filters,
    whole,
)

__all__ = ["DAG_MAX_STEPS", "EVENTS_SHOWN", "MAX_PAGE", "STEPS_SHOWN", "create_app",
           "serving_app"]

EVENTS_SHOWN = 500
"""A run's events on its page, and in one answer of its events API; `before` pages back."""
STEPS_SHOWN = 200
"""A run's steps in one page of its steps table; `steps=N` shows them from the N-th on."""
CURVES_SHOWN = 50
"""Cells whose loss curves a batch page overlays (a bigger sweep: its first cells')."""
DAG_MAX_STEPS = 300
"""The most steps a run's graph is drawn for; a bigger run's page has its table alone."""
SCHEDULE_RUNS = 5
"""A schedule's most recent runs, on the schedules page."""
BATCHES_SHOWN = 100
"""Batches on the batches page, the newest first."""
MAX_STREAMS = 64
"""Pages following a live run at once; more are answered 503 with a Retry-After."""
FOLLOW_POLL = 0.5
"""Seconds between reads of the store for a page following a live run."""
ARTIFACT_SUFFIXES = {".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json",
                     ".csv": "text/csv", ".txt": "text/plain"}
"""What a run's folder may hold that the page links to and serves (a loss curve...)."""

Handler = Callable[[Request], Awaitable[Response]]
_log = get_logger(component="web")


class Refused(PermissionError):
    """An action this server does not take (actions off, no CSRF token): 403, saying why."""


class _JSON(JSONResponse):
    """JSON that every reader takes: a NaN or infinity a step stored is null (`shapes`)."""

    def render(self, content: Any) -> bytes:
        return document_text(content).encode()


class _Views:
    """The handlers of one app, over one store."""

    def __init__(self, store: StateStore, *, actions: Actions | None,
                 scheduled: Sequence[Scheduled] | str, artifacts: Path | None) -> None:
        self.store = store
        self.actions = actions
        self.scheduled = scheduled
        """The schedules shown, or why they could not be read."""
        self.artifacts = artifacts
        """Where runs keep their files (setting artifacts_dir), a folder per run."""
        self.streams = 0
        """Live streams open now (at most MAX_STREAMS: each reads the store twice a second)."""
        self.csrf = secrets.token_urlsafe(32)
        """Put in each page's forms; a POST without it is refused (another site's form)."""
        self.templates = Environment(loader=PackageLoader("orchestrator.web", "templates"),
                                     autoescape=select_autoescape(["html"]), auto_reload=False)
        self.templates.filters.update(when=display.when, span=display.span,
                                      show=display.shown, when_in=display.when_in)

    def _render(self, name: str, values: dict[str, Any]) -> str:
        return self.templates.get_template(name).render(
            actions=self.actions is not None, csrf=self.csrf, **values)

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
            except (Refused, ActionRefused) as exc:
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

    # -- runs --------------------------------------------------------------------------------

    async def runs_api(self, request: Request) -> Response:
        found = await self.store.list_runs(**run_filters(request))
        return _JSON([run_json(run) for run in found])

    async def runs_page(self, request: Request) -> Response:
        query = run_filters(request)
        found = await self.store.list_runs(**query)
        older = found[-1].created_at if len(found) == query["limit"] else None
        return await self.page("runs.html", runs=[run_json(r) for r in found],
                               query=dict(request.query_params), older=older,
                               statuses=[s.value for s in RunStatus])

    async def run_api(self, request: Request) -> Response:
        run_id = path_id(request, "run_id")
        run = await self.store.get_run(run_id)
        steps, points = await self.store.get_steps(run_id), await self.store.get_metrics(run_id)
        return _JSON(run_document(run, ordered_steps(run, steps, parse=stored_pipeline),
                                  points))

    async def metrics_api(self, request: Request) -> Response:
        run_id = path_id(request, "run_id")
        await self.store.get_run(run_id)
        return _JSON(metrics_document(run_id, await self.store.get_metrics(run_id),
                                      eval_figures(await self.store.get_steps(run_id))))

    async def events_api(self, request: Request) -> Response:
        """`?after=N`: the events after the N-th, oldest first; `?before=N`: the newest
        before the N-th (paging back from the end); EVENTS_SHOWN at most."""
        run_id = path_id(request, "run_id")
        after, before = whole(request, "after", 0), whole(request, "before", 0)
        await self.store.get_run(run_id)
        events = await self.store.get_events(run_id, after=after, before=before or None,
                                             limit=EVENTS_SHOWN, newest=bool(before))
        return _JSON([event_json(e) for e in events])

    async def stream_api(self, request: Request) -> Response:
        """Server-sent events of a run: `event` for each new entry of its log, `status` when
        its status changes, `end` once no one executes it (the browser stops listening)."""
        run_id = path_id(request, "run_id")
        after = whole(request, "after", 0)
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
        run_id = path_id(request, "run_id")
        first = whole(request, "steps", 0)
        before = whole(request, "events_before", 0)
        run = await self.store.get_run(run_id)
        steps, points = await self.store.get_steps(run_id), await self.store.get_metrics(run_id)
        events = await self.store.get_events(run_id, before=before or None,
                                             limit=EVENTS_SHOWN, newest=True)
        return await self.page("run.html", **self._run_view(run, steps, points, events,
                                                            first=first, before=before))

    def _run_view(self, run: RunRecord, steps: dict[str, StepRecord], points: Any,
                  events: Any, *, first: int, before: int) -> dict[str, Any]:
        """What the run page shows, every value as text it can print."""
        size = len(run.step_ids) if run.step_ids is not None else len(steps)
        pipeline = (stored_pipeline(run.pipeline_text, run.pipeline_path)
                    if size <= DAG_MAX_STEPS else None)
        order = step_order(run, steps, pipeline, parse=stored_pipeline)
        shown_ids = order[first:first + STEPS_SHOWN]
        # Steps not started yet too (pending): their rows move live with the stream.
        rows = [step_json(steps.get(sid) or StepRecord(sid)) for sid in shown_ids]
        outputs = [dict(r.outputs) for r in steps.values() if r.outputs]
        model = next((o["model_name"] for o in outputs if o.get("model_name")), None)
        document = run_document(run, (), points)  # the steps: a page of them, below
        price = estimated_price(steps.values())
        return {
            "doc": document, "price": price, "rows": rows,
            "model": None if model is None else str(model),
            "smoke": display.smoke(outputs),
            "evaluations": display.evaluations({sid: (r.outputs, r.checkpoint)
                                                for sid, r in steps.items()}),
            "dag": dag_svg(pipeline, steps) if pipeline is not None else None,
            "dag_skipped": size if pipeline is None and size > DAG_MAX_STEPS else None,
            "chart": loss_svg(points, title=run.id) if points else None,
            "events": [display.event_row(event_json(e)) for e in events
                       if e.kind != "checkpoint"],
            "last_seq": max((e.seq for e in events), default=0) if not before else None,
            "older_events": events[0].seq if len(events) == EVENTS_SHOWN else None,
            "steps_total": len(order), "steps_first": first,
            "steps_next": first + STEPS_SHOWN if first + STEPS_SHOWN < len(order) else None,
            "steps_prev": max(0, first - STEPS_SHOWN) if first else None,
            "live_steps": len(order) <= STEPS_SHOWN,
            # A choice of steps to resume from, or (too many to list) a field to name one.
            "resumable": ([sid for sid in order if "." not in sid]
                          if len(order) <= STEPS_SHOWN else None),
            "artifacts": self._artifacts(run.id),
        }

    def _artifacts(self, run_id: str) -> list[str]:
        """The files of the run's folder the page links to (its loss curves...)."""
        folder = self.artifacts / run_id if self.artifacts is not None else None
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir()
                      if p.suffix in ARTIFACT_SUFFIXES and p.is_file() and not p.is_symlink())

    async def artifact(self, request: Request) -> Response:
        """GET /runs/RUN/artifacts/NAME: one of the files `_artifacts` lists, nothing else
        (a name is taken only as one of them: no path reaches the disk from the address)."""
        run_id = path_id(request, "run_id")
        await self.store.get_run(run_id)
        name = request.path_params["name"]
        if name not in self._artifacts(run_id):
            raise RunNotFound(f"run {run_id} has no file {name[:60]!r}")
        assert self.artifacts is not None
        path = self.artifacts / run_id / name
        return FileResponse(path, media_type=ARTIFACT_SUFFIXES[path.suffix])

    # -- batches -----------------------------------------------------------------------------

    async def batches_api(self, request: Request) -> Response:
        return _JSON(await self._batches())

    async def batches_page(self, request: Request) -> Response:
        return await self.page("batches.html", batches=await self._batches())

    async def _batches(self) -> list[dict[str, Any]]:
        """The newest batches with their counts by status (`batches -o json`'s shape)."""
        listed = []
        for batch in await self.store.list_batches(limit=BATCHES_SHOWN):
            runs = await self.store.list_runs(batch_id=batch.id, limit=None)
            listed.append({**batch_json(batch, batch_status(runs),
                                        [{"status": r.status.value} for r in runs]),
                           "cells": None})
        return listed

    async def batch_api(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, path_id(request, "batch_id"))
        return _JSON(batch_document(batch, cells))

    async def batch_page(self, request: Request) -> Response:
        batch, cells = await load_batch(self.store, path_id(request, "batch_id"))
        document = batch_document(batch, cells)
        pipeline = stored_pipeline(batch.pipeline_text, batch.pipeline_path)
        matrix = pipeline.matrix if pipeline is not None else None
        axes = list(matrix.axes) if matrix is not None else []  # else as the cells have them
        selection = document["selection"]
        layout = batch_layout(document["cells"], axes, objective=selection)
        curves = {c.run.id: await self.store.get_metrics(c.run.id)
                  for c in cells[:CURVES_SHOWN]}
        chart = cells_svg(curves, winner=selection["winner"] if selection else None) \
            if any(curves.values()) else None
        return await self.page("batch.html", batch=document, layout=layout,
                               status=document["status"], selection=selection, chart=chart)

    # -- actions -----------------------------------------------------------------------------

    async def _action_form(self, request: Request) -> tuple[Actions, dict[str, str]]:
        """The actions and the form of one, once it is allowed: actions on, the page's CSRF
        token, and this server's origin when the browser names one. Refused (403)
        otherwise."""
        if self.actions is None:
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
        return self.actions, {k: str(v) for k, v in form.items()}

    async def cancel(self, request: Request) -> Response:
        """POST /runs/RUN/cancel: ask for the run to be cancelled, as `orchestrator cancel`."""
        actions, _ = await self._action_form(request)
        run_id = path_id(request, "run_id")
        await actions.cancel(run_id)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def resume(self, request: Request) -> Response:
        """POST /runs/RUN/resume [from]: queue the run for a worker to resume, as `resume
        RUN [--from STEP] --detach` would."""
        actions, form = await self._action_form(request)
        run_id = path_id(request, "run_id")
        await actions.resume(run_id, plain(form.get("from") or "", "from") or None)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def fire_now(self, request: Request) -> Response:
        """POST /schedules/ID/run: a run of the schedule's pipeline, queued now."""
        actions, _ = await self._action_form(request)
        made = await actions.fire_now(path_id(request, "schedule_id"))
        where = "batches" if made.startswith("b-") else "runs"
        return RedirectResponse(f"/{where}/{made}", status_code=303)

    async def pause(self, request: Request) -> Response:
        """POST /schedules/ID/pause or /resume."""
        actions, _ = await self._action_form(request)
        await actions.pause(path_id(request, "schedule_id"),
                            request.url.path.endswith("/pause"))
        return RedirectResponse("/schedules", status_code=303)

    # -- schedules and models ----------------------------------------------------------------

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


def create_app(store: StateStore, *, actions: Actions | None = None, token: str | None = None,
               scheduled: Sequence[Scheduled] | str = (),
               hosts: frozenset[str] | None = None,
               artifacts: Path | None = None) -> ASGIApp:
    """The web view of `store` (already open, left open); `actions` (None: off) carry out
    what its buttons ask; `token` asks every request for it; `scheduled` are the schedules it
    shows (or why they could not be read); `hosts`, the Host values it answers to
    (`gates.allowed_hosts`: a server names them; None, in process, takes any); `artifacts`,
    the folder of the runs' files (setting artifacts_dir)."""
    views = _Views(store, actions=actions, scheduled=scheduled, artifacts=artifacts)
    pages = {"/": views.runs_page, "/runs/{run_id}": views.run_page,
             "/batches": views.batches_page, "/batches/{batch_id}": views.batch_page,
             "/models": views.models_page, "/schedules": views.schedules_page,
             "/runs/{run_id}/artifacts/{name}": views.artifact}
    api = {"/api/runs": views.runs_api, "/api/runs/{run_id}": views.run_api,
           "/api/runs/{run_id}/metrics": views.metrics_api,
           "/api/runs/{run_id}/events": views.events_api,
           "/api/runs/{run_id}/stream": views.stream_api, "/api/batches": views.batches_api,
           "/api/batches/{batch_id}": views.batch_api, "/api/models": views.models_api,
           "/api/schedules": views.schedules_api}
    posts = {"/runs/{run_id}/cancel": views.cancel, "/runs/{run_id}/resume": views.resume,
             "/schedules/{schedule_id}/run": views.fire_now,
             "/schedules/{schedule_id}/pause": views.pause,
             "/schedules/{schedule_id}/resume": views.pause}
    routes: list[Route | Mount] = [
        *(Route(path, views.guarded(handler, html=True), methods=["POST"])
          for path, handler in posts.items()),
        *(Route(path, views.guarded(handler, html=True)) for path, handler in pages.items()),
        *(Route(path, views.guarded(handler, html=False)) for path, handler in api.items()),
        Route("/favicon.ico", _no_icon),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="static"),
    ]
    app: ASGIApp = guarded_app(Starlette(routes=routes), hosts=hosts, token=token)
    return app


def serving_app(opener: Callable[[], AbstractAsyncContextManager[StateStore]],
                *, ready: Callable[[], None] | None = None,
                actions: Callable[[StateStore], Actions] | None = None,
                token: str | None = None, scheduled: Sequence[Scheduled] | str = (),
                hosts: frozenset[str] | None = None,
                artifacts: Path | None = None) -> Starlette:
    """The web view of the store `opener` opens when the app starts (its lifespan, in
    the server's own event loop) and closes when it stops; `actions` makes its actions on
    that store (None: off)."""
    views: list[ASGIApp] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with opener() as store:
            views.append(create_app(store, actions=actions(store) if actions else None,
                                    token=token, scheduled=scheduled, hosts=hosts,
                                    artifacts=artifacts))
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
            if event.kind != "checkpoint":
                yield (f"event: event\nid: {event.seq}\n"
                       f"data: {document_text(event_json(event))}\n\n")
        if run.status.value != shown:
            shown = run.status.value
            yield f"event: status\ndata: {document_text(run_json(run))}\n\n"
        if run.settled and not events:
            yield "event: end\ndata: {}\n\n"
            return
        await anyio.sleep(FOLLOW_POLL)
