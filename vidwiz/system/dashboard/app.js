// The queue dashboard: a thin client of /v2/internal/queue/… (docs/api.md). The admin token is
// typed in by the operator and kept in this tab's sessionStorage only; nothing is rendered as HTML.
"use strict";

const API = "/v2/internal/queue";
const REFRESH_MS = 3000;
const PAGE = 25;
const DEPTH_SAMPLES = 60;
const view = { state: "queued", offset: 0, total: 0, detail: null, depth: [], timer: null };
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem("vidwiz-admin-token") || ""; }

async function call(path, method = "GET") {
  const resp = await fetch(API + path, { method, headers: { Authorization: "Bearer " + token() } });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const error = body && body.error ? body.error.code + ": " + body.error.message : "HTTP " + resp.status;
    throw new Error(error);
  }
  return body;
}

function say(text, bad = false) {
  const status = $("status");
  status.textContent = text;
  status.className = bad ? "bad" : "muted";
}

function cell(row, value, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (value instanceof Node) td.appendChild(value); else td.textContent = value == null ? "" : String(value);
  row.appendChild(td);
  return td;
}

function button(label, action, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", action);
  return b;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows.map((item) => { const tr = document.createElement("tr"); render(tr, item); return tr; }));
}

function shortTime(text) { return text ? text.slice(11, 19) : ""; }

function spark(svgId, values) {
  const svg = $(svgId);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 100 / (values.length - 1) : 100;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", values.map((v, i) => (i * step).toFixed(1) + "," + (23 - (v / max) * 22).toFixed(1)).join(" "));
  svg.replaceChildren(line);
}

async function act(path, what) {
  try {
    const body = await call(path, "POST");
    say(what + ": " + (body.status || "done"));
  } catch (error) {
    say(what + " failed: " + error.message, true);
  }
  await refresh();
}

// -- the actor queue ------------------------------------------------------------------------------

function renderOverview(o) {
  $("queue-name").textContent = o.queue;
  $("n-queued").textContent = o.depth.queued;
  $("n-deferred").textContent = o.depth.deferred;
  $("n-running").textContent = o.depth.in_progress;
  const perMinute = o.minutes.map((m) => m.success + m.failure + m.retry + m.cancelled);
  const total = perMinute.reduce((a, b) => a + b, 0);
  $("n-rate").textContent = (total / o.minutes.length).toFixed(2);
  $("n-failed").textContent = o.minutes.reduce((a, m) => a + m.failure, 0);
  $("n-health").textContent = o.health.alive ? "alive" : "no health key";
  $("n-health").className = "value " + (o.health.alive ? "ok" : "bad");
  $("health-line").textContent = o.health.status || "no actor has recorded its health recently";
  view.depth.push(o.depth.queued + o.depth.deferred + o.depth.in_progress);
  if (view.depth.length > DEPTH_SAMPLES) view.depth.shift();
  spark("spark-depth", view.depth);
  spark("spark-throughput", perMinute);
  fill("functions", o.functions, (tr, f) => {
    for (const v of [f.function, f.success, f.failure, f.retry, f.cancelled, f.per_minute, f.p50_ms, f.p95_ms]) cell(tr, v);
  });
  fill("cron", o.cron, (tr, c) => {
    for (const v of [c.function, c.schedule, c.last_run, c.last_status, c.next_run]) cell(tr, v);
  });
}

function jobQuery() {
  const params = new URLSearchParams({ state: view.state, limit: PAGE, offset: view.offset });
  const fn = $("f-function").value.trim(), status = $("f-status").value, q = $("f-q").value.trim();
  if (fn) params.set("function", fn);
  if (status && view.state === "finished") params.set("status", status);
  if (q) params.set("q", q);
  return "/jobs?" + params;
}

function renderJobs(page) {
  view.total = page.total;
  $("page-info").textContent = page.total ? (page.offset + 1) + "–" + (page.offset + page.jobs.length) + " of " + page.total : "none";
  fill("jobs", page.jobs, (tr, job) => {
    tr.dataset.jobId = job.job_id;
    cell(tr, button(job.job_id.slice(0, 12), () => showJob(job.job_id), "link job-link"));
    cell(tr, job.function);
    cell(tr, JSON.stringify(job.args), "args");
    cell(tr, job.status, "status-" + job.status);
    cell(tr, job.tries);
    cell(tr, shortTime(job.enqueue_time));
    cell(tr, shortTime(job.start_time));
    cell(tr, job.run_seconds);
    cell(tr, job.error, "error");
    const actions = cell(tr, "");
    if (["queued", "deferred", "in_progress"].includes(job.status)) {
      actions.appendChild(button("Abort", () => act("/jobs/" + encodeURIComponent(job.job_id) + "/abort", "abort"), "abort"));
    }
    if (["failed", "cancelled", "aborted"].includes(job.status)) {
      actions.appendChild(button("Re-enqueue", () => act("/jobs/" + encodeURIComponent(job.job_id) + "/reenqueue", "re-enqueue"), "reenqueue"));
    }
  });
}

async function showJob(jobId) {
  view.detail = jobId;
  $("detail").hidden = false;
  $("detail-id").textContent = jobId;
  try {
    $("detail-body").textContent = JSON.stringify(await call("/jobs/" + encodeURIComponent(jobId)), null, 2);
  } catch (error) {
    $("detail-body").textContent = error.message;
  }
}

// -- the task queue -------------------------------------------------------------------------------

function renderTasks(t) {
  const count = (status) => t.counts.filter((c) => c.status === status).reduce((a, c) => a + c.count, 0);
  $("n-tasks-pending").textContent = count("pending");
  $("n-tasks-failed").textContent = count("failed");
  $("n-pollers").textContent = Object.values(t.pollers).reduce((a, b) => a + b, 0);
  $("reclaim").textContent = t.reclaim_after_seconds;
  fill("task-counts", t.counts, (tr, c) => { cell(tr, c.task_type); cell(tr, c.status, "status-" + c.status); cell(tr, c.count); });
  fill("tasks-pending", t.pending, (tr, task) => {
    tr.dataset.taskId = task.task_id;
    for (const v of [task.task_id, task.task_type, task.video_id, task.created_at]) cell(tr, v);
    cell(tr, button("Cancel", () => act("/tasks/" + task.task_id + "/cancel", "cancel"), "cancel"));
  });
  fill("tasks-stale", t.stale, (tr, task) => {
    for (const v of [task.task_id, task.task_type, task.video_id, task.retry_count, task.started_at]) cell(tr, v);
  });
  fill("tasks-failed", t.failed, (tr, task) => {
    tr.dataset.taskId = task.task_id;
    for (const v of [task.task_id, task.task_type, task.video_id, task.retry_count]) cell(tr, v);
    cell(tr, task.error_message, "error");
    cell(tr, button("Retry", () => act("/tasks/" + task.task_id + "/retry", "retry"), "retry"));
  });
}

// -- refreshing -----------------------------------------------------------------------------------

async function refresh() {
  if (!token()) { say("Paste the admin token to start."); return; }
  try {
    const [overview, page, tasks] = await Promise.all([call("/overview"), call(jobQuery()), call("/tasks")]);
    renderOverview(overview);
    renderJobs(page);
    renderTasks(tasks);
    if (view.detail) await showJob(view.detail);
    say("updated " + new Date().toLocaleTimeString());
  } catch (error) {
    say(error.message, true);
  }
}

function schedule() {
  clearInterval(view.timer);
  if ($("auto").checked) view.timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("vidwiz-admin-token", $("token").value.trim());
    refresh();
  });
  $("auto").addEventListener("change", schedule);
  $("job-filters").addEventListener("submit", (event) => { event.preventDefault(); view.offset = 0; refresh(); });
  for (const tab of document.querySelectorAll("#job-tabs button")) {
    tab.addEventListener("click", () => {
      document.querySelectorAll("#job-tabs button").forEach((b) => b.classList.toggle("active", b === tab));
      view.state = tab.dataset.state;
      view.offset = 0;
      refresh();
    });
  }
  $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE); refresh(); });
  $("next").addEventListener("click", () => { if (view.offset + PAGE < view.total) { view.offset += PAGE; refresh(); } });
  $("detail-close").addEventListener("click", () => { view.detail = null; $("detail").hidden = true; });
  schedule();
  refresh();
});
