// The live parts of the pages, without a framework (no build, nothing fetched from elsewhere):
// - a form with data-confirm asks before it is sent (cancel, resume, run now, pause);
// - the runs list reads /api/runs again every few seconds: new runs appear at the top, the
//   others' statuses and durations change in place;
// - a run's page follows its run through /api/runs/RUN/stream (server-sent events: new log
//   entries, status changes) until it ends, and reads the run again when something changed:
//   its badge, duration, error, actions, the graph's boxes and the steps table move with it.
(function () {
  "use strict";
  const STOPPED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
  const STEP_STATUS = {  // what a step's event says of it at once (the run read again follows)
    step_started: "running", step_succeeded: "succeeded", step_failed: "failed",
    step_cancelled: "cancelled", step_interrupted: "interrupted", attempt_failed: "retrying",
  };
  const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted", "stranded"]);

  function duration(seconds) {  // as orchestrator.durations.format_duration writes it
    if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) return "-";
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${seconds.toFixed(1)}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m${String(Math.floor(seconds) % 60).padStart(2, "0")}s`;
    return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
  }

  function localTime(ts) {
    if (ts === null || ts === undefined) return "-";
    const d = new Date(ts * 1000), pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
           `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function setBadge(badge, status, suffix) {
    if (!badge) return;
    badge.textContent = status + (suffix || "");
    badge.className = `badge status-${status}`;
    if (badge.dataset.status !== undefined) badge.dataset.status = status;
  }

  // A duration that grows while its run (or step) goes on: data-started, data-finished.
  function tick() {
    const now = Date.now() / 1000;
    for (const cell of document.querySelectorAll("[data-started][data-ticking]")) {
      const started = parseFloat(cell.dataset.started);
      if (isFinite(started)) cell.textContent = duration(now - started);
    }
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // -- the runs list ----------------------------------------------------------------------
  const runs = document.getElementById("runs");
  if (runs && runs.dataset.live === "1") {
    const body = runs.tBodies[0];
    const query = runs.dataset.query ? `?${runs.dataset.query}` : "";
    function row(run) {
      const tr = document.createElement("tr");
      tr.dataset.run = run.id;
      const cells = ["id", "", "", "", "when", "duration"].map((cls) => {
        const td = tr.insertCell(-1);
        if (cls) td.className = cls;
        return td;
      });
      const link = document.createElement("a");
      link.href = `/runs/${encodeURIComponent(run.id)}`;
      link.textContent = run.id;
      cells[0].append(link);
      if (run.batch_id) {
        const batch = document.createElement("a");
        batch.className = "batch";
        batch.href = `/batches/${encodeURIComponent(run.batch_id)}`;
        batch.textContent = run.batch_id;
        cells[0].append(" ", batch);
      }
      const badge = document.createElement("span");
      badge.className = "badge";
      cells[1].append(badge);
      cells[2].textContent = run.pipeline;
      cells[3].textContent = run.provider || "-";
      return tr;
    }
    function update(tr, run) {
      setBadge(tr.cells[1].querySelector(".badge"), run.status,
               run.executor_gone ? " (executor gone)" : "");
      tr.cells[4].textContent = localTime(run.started_at || run.created_at);
      const cell = tr.cells[5];
      cell.dataset.started = run.started_at || "";
      if (run.status === "running" && run.started_at) {
        cell.dataset.ticking = "1";
      } else {
        delete cell.dataset.ticking;
        cell.textContent = duration(run.duration);
      }
    }
    async function refresh() {
      let listed;
      try {
        const answer = await fetch(`/api/runs${query}`, {headers: {Accept: "application/json"}});
        if (!answer.ok) return;
        listed = await answer.json();
      } catch (error) {
        return;  // the server is away for a moment: the next poll tries again
      }
      const rows = new Map([...body.rows].map((tr) => [tr.dataset.run, tr]));
      let previous = null;
      for (const run of listed) {
        let tr = rows.get(run.id);
        if (!tr) {
          tr = row(run);
          if (previous) previous.after(tr); else body.prepend(tr);
        }
        update(tr, run);
        previous = tr;
      }
      const none = document.getElementById("no-runs");
      if (none) none.hidden = listed.length > 0 || body.rows.length > 0;
    }
    refresh();
    setInterval(refresh, 2000);
  }

  // -- a run's page -----------------------------------------------------------------------
  const status = document.getElementById("run-status");
  const events = document.getElementById("events");
  if (status && events) {
    const runId = status.dataset.run;
    const steps = document.getElementById("steps");

    function showStep(step) {
      const stopped = STOPPED.has(step.status) && step.duration !== null;
      for (const box of document.querySelectorAll(`svg.dag g.step[data-step="${CSS.escape(step.id)}"]`)) {
        box.classList.remove(`status-${box.dataset.status}`);
        box.classList.add(`status-${step.status}`);
        box.dataset.status = step.status;
        const parts = [step.status];
        if (step.attempts > 1) parts.push(`${step.attempts} attempts`);
        if (stopped) parts.push(duration(step.duration));
        const label = box.querySelector(".state");
        if (label) label.textContent = parts.join(", ").slice(0, 30);
      }
      const tr = steps && steps.querySelector(`tr[data-step="${CSS.escape(step.id)}"]`);
      if (!tr) return;
      setBadge(tr.querySelector(".badge"), step.status);
      if (step.started_at === null) return;  // from an event alone: its status, no figures
      tr.querySelector(".attempts").textContent = step.attempts;
      const cell = tr.querySelector(".duration");
      cell.dataset.started = step.started_at || "";
      if (step.status === "running" && step.started_at) cell.dataset.ticking = "1";
      else { delete cell.dataset.ticking; cell.textContent = duration(step.duration); }
      tr.querySelector(".error").textContent = step.error ? step.error.message : "";
    }

    function showRun(run) {
      setBadge(status, run.status);
      status.dataset.status = run.status;
      const cancelState = document.getElementById("cancel-state");
      if (cancelState) cancelState.hidden = !run.cancel_requested;
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.hidden = FINISHED.has(run.status) || run.cancel_requested;
      const resume = document.getElementById("resume-form");
      if (resume) resume.hidden = !(STOPPED.has(run.status) && !run.executor);
      const took = document.getElementById("run-duration");
      if (took) {
        took.dataset.started = run.started_at || "";
        if (run.status === "running" && run.started_at) took.dataset.ticking = "1";
        else { delete took.dataset.ticking; took.textContent = duration(run.duration); }
      }
      const error = document.getElementById("run-error");
      const label = document.getElementById("run-error-label");
      if (error) {
        error.textContent = run.error || "";
        error.hidden = label.hidden = !run.error;
      }
    }

    let pending = null;
    async function reread() {  // at most once a second, however much happens
      if (pending) return;
      pending = setTimeout(async () => {
        pending = null;
        try {
          const answer = await fetch(`/api/runs/${encodeURIComponent(runId)}`);
          if (!answer.ok) return;
          const doc = await answer.json();
          showRun(doc.run);
          if (steps && steps.dataset.live === "1") doc.steps.forEach(showStep);
        } catch (error) { /* the next change reads it again */ }
      }, 300);
    }

    if (events.dataset.after !== undefined && window.EventSource) {
      const source = new EventSource(`/api/runs/${encodeURIComponent(runId)}/stream?after=${events.dataset.after}`);
      source.addEventListener("status", (message) => {
        showRun(JSON.parse(message.data));
        reread();
      });
      source.addEventListener("event", (message) => {
        const e = JSON.parse(message.data);
        events.dataset.after = e.seq;
        if (e.step && STEP_STATUS[e.kind]) {
          showStep({id: e.step, status: STEP_STATUS[e.kind], attempts: e.attempt || 0,
                    duration: null, started_at: null, error: null});
        }
        if (e.step) reread();
        const data = e.data || {};
        const what = e.kind === "log" ? (data.level || "log") : e.kind;
        const fields = data.fields && Object.keys(data.fields).length ? ` ${JSON.stringify(data.fields)}` : "";
        const detail = e.kind === "log" ? `${data.message ?? ""}${fields}`
                                        : (Object.keys(data).length ? JSON.stringify(data) : "");
        const row = events.insertRow(-1);
        [localTime(e.ts), (e.step || "-") + (e.attempt ? `#${e.attempt}` : ""), what, detail]
          .forEach((text) => { row.insertCell(-1).textContent = text; });
      });
      source.addEventListener("end", () => { source.close(); reread(); });
    }
    reread();
  }

  setInterval(tick, 1000);
})();
