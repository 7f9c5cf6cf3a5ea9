// Live parts of the pages, without a framework: a run page follows its run through the
// server-sent events of /api/runs/RUN/stream (new log entries, status changes) until it ends:
// the run's badge, each step's box in the graph and its row in the table move with it.
(function () {
  const STEP_STATUS = {
    step_started: "running", step_succeeded: "succeeded", step_failed: "failed",
    step_cancelled: "cancelled", step_interrupted: "interrupted", attempt_failed: "retrying",
  };
  function showStep(step, now) {
    for (const box of document.querySelectorAll(`svg.dag g.step[data-step="${CSS.escape(step)}"]`)) {
      box.classList.remove(`status-${box.dataset.status}`);
      box.classList.add(`status-${now}`);
      box.dataset.status = now;
      const state = box.querySelector(".state");
      if (state) state.textContent = now;
    }
    const badge = document.querySelector(`table.steps tr[data-step="${CSS.escape(step)}"] .badge`);
    if (badge) { badge.textContent = now; badge.className = `badge status-${now}`; }
  }
  const status = document.getElementById("run-status");
  const events = document.getElementById("events");
  // A page of older events (?events_before=) has no data-after: it does not follow.
  if (!status || !events || events.dataset.after === undefined || !window.EventSource) return;
  const run = status.dataset.run;
  const source = new EventSource(`/api/runs/${run}/stream?after=${events.dataset.after}`);
  source.addEventListener("status", (message) => {
    const now = JSON.parse(message.data).status;
    status.dataset.status = now;
    status.textContent = now;
    status.className = `badge status-${now}`;
  });
  source.addEventListener("event", (message) => {
    const e = JSON.parse(message.data);
    events.dataset.after = e.seq;
    if (e.step && STEP_STATUS[e.kind]) showStep(e.step, STEP_STATUS[e.kind]);
    const row = events.insertRow(-1);
    const data = e.data || {};
    const what = e.kind === "log" ? (data.level || "log") : e.kind;
    const fields = data.fields && Object.keys(data.fields).length ? ` ${JSON.stringify(data.fields)}` : "";
    const detail = e.kind === "log" ? `${data.message ?? ""}${fields}`
                                    : (Object.keys(data).length ? JSON.stringify(data) : "");
    [new Date(e.ts * 1000).toLocaleString(), (e.step || "-") + (e.attempt ? `#${e.attempt}` : ""),
     what, detail].forEach((text) => { row.insertCell(-1).textContent = text; });
  });
  source.addEventListener("end", () => source.close());
})();
