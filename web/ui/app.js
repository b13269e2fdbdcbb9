// pcd's dashboard: the API's pages, live from its event stream. Every
// value from the server goes into the page as text (textContent), never
// as HTML.
"use strict";

const main = document.getElementById("main");
let token = sessionStorage.getItem("pcd-token") || "";

// el builds an element: el("td", {class: "num"}, "text", child...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    dialog.addEventListener("close", () => {
      token = input.value.trim();
      sessionStorage.setItem("pcd-token", token);
      resolve();
    }, { once: true });
    dialog.showModal();
  });
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

// api calls the API; a 401 asks for the token once, and tries again.
async function api(path, opts) {
  opts = opts || {};
  for (let tries = 0; tries < 3; tries++) {
    const resp = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
    if (resp.status === 401) { await askToken(); continue; }
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    return body;
  }
  throw new Error("the token was refused");
}

// Live updates: the event stream, read with fetch so that it can carry the
// token, resumed with Last-Event-ID after a drop.
const listeners = new Set();
let lastEventID = 0;
async function stream() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastEventID) h["Last-Event-ID"] = String(lastEventID);
      else h["Last-Event-ID"] = String(await latestID());
      // Sampled: every job event and every task that did not succeed,
      // and a few successes a second per job, enough to move the bars;
      // the rows are read from the API.
      const resp = await fetch("/api/v1/events?sample=true", { headers: h });
      if (resp.status === 401) { await askToken(); continue; }
      if (!resp.ok) throw new Error(resp.statusText);
      live.classList.add("on");
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let id = 0, data = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = Number(line.slice(4));
            else if (line.startsWith("data: ")) data = JSON.parse(line.slice(6));
          }
          if (id && data) {
            lastEventID = id;
            for (const f of listeners) f(data);
          }
        }
      }
    } catch (e) {
      // The daemon restarts, or the network drops: go on where we were.
    }
    live.classList.remove("on");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// latestID starts a fresh page's stream at the newest callback: what came
// before is in the pages themselves.
async function latestID() {
  const s = await api("/api/v1/status");
  return s.last_callback_id || 0;
}

// Throughput: tasks finished per second, in the server's 10-second spans
// over the last hour (GET /api/v1/throughput), succeeded stacked under
// failed. The spans are the database's, so the chart shows every
// runner's work, from before the page opened too.
async function throughput() {
  return api("/api/v1/throughput?minutes=60");
}

function drawChart(canvas, series) {
  const w = canvas.width = canvas.clientWidth * devicePixelRatio;
  const h = canvas.height = canvas.clientHeight * devicePixelRatio;
  const ctx = canvas.getContext("2d");
  const spans = series.spans || [];
  const secs = series.span_secs || 10;
  let max = 1, total = 0;
  for (const sp of spans) {
    max = Math.max(max, (sp.succeeded + sp.failed) / secs);
    total += sp.succeeded + sp.failed;
  }
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.documentElement);
  const n = Math.max(spans.length, 1);
  spans.forEach((sp, i) => {
    const x = (i / n) * w, bw = Math.max(w / n - 1, 1);
    const ok = (sp.succeeded / secs / max) * (h - 4), bad = (sp.failed / secs / max) * (h - 4);
    ctx.fillStyle = style.getPropertyValue("--run");
    ctx.fillRect(x, h - ok, bw, ok);
    ctx.fillStyle = style.getPropertyValue("--bad");
    ctx.fillRect(x, h - ok - bad, bw, bad);
  });
  // The time axis: the hour's start, its middle, and now.
  ctx.fillStyle = style.getPropertyValue("--muted");
  ctx.font = (11 * devicePixelRatio) + "px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText("60 min ago", 4, 4);
  ctx.textAlign = "center";
  ctx.fillText("30 min ago", w / 2, 4);
  ctx.textAlign = "right";
  ctx.fillText("now", w - 4, 4);
  return { peak: max, total: total };
}

function fmtDuration(secs) {
  if (secs === undefined || secs === null) return "-";
  if (secs < 1) return Math.round(secs * 1000) + "ms";
  if (secs < 60) return secs.toFixed(1) + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(Math.floor(secs % 60)).padStart(2, "0") + "s";
  return Math.floor(secs / 3600) + "h" + String(Math.floor((secs % 3600) / 60)).padStart(2, "0") + "m";
}

function fmtBytes(n) {
  if (n < 1 << 20) return (n / 1024).toFixed(0) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}

function progress(job) {
  const pct = job.total ? Math.round((job.done / job.total) * 100) : 0;
  const cls = job.state === "succeeded" ? "progress done" : (job.failed ? "progress bad" : "progress");
  const fill = el("span");
  fill.style.width = pct + "%"; // the CSSOM, which the page's CSP allows
  return el("span", {},
    el("span", { class: cls, role: "progressbar", "aria-valuenow": String(pct), "data-pct": String(pct) }, fill),
    " " + pct + "%");
}

// eta is the time a running job has left, at the rate of its tasks done
// so far: shown once a first wave of tasks (one per worker) has ended,
// since the first tasks to end are the quick ones, not the typical ones.
function eta(job) {
  if (job.state !== "running" || job.paused || !job.done || !job.elapsed_secs) return "-";
  if (job.done < Math.min(job.workers || 1, job.total)) return "…";
  return fmtDuration((job.elapsed_secs / job.done) * (job.total - job.done));
}

// command is what a task runs, on one line: an exec task's shell line or
// its words, quoted as for sh; else its kind and payload.
function command(t) {
  const p = t.payload;
  if (t.kind === "exec" && p && typeof p === "object") {
    if (p.shell) return p.shell;
    if (Array.isArray(p.argv)) {
      return p.argv.map((w) => (/^[A-Za-z0-9+\/._-]+$/.test(w) ? w : "'" + w.replace(/'/g, "'\"'\"'") + "'")).join(" ");
    }
  }
  return p === null || p === undefined ? t.kind : t.kind + " " + JSON.stringify(p);
}

// actionsFor are the buttons a job's state allows: pause while it has work
// to do, resume once paused, cancel until it ends, retry once it ended
// with failed or cancelled tasks.
function actionsFor(job) {
  const finished = ["succeeded", "failed", "cancelled"].includes(job.state);
  return {
    pause: !finished && !job.paused,
    resume: !finished && job.paused,
    cancel: !finished,
    retry: finished && (job.failed > 0 || job.cancelled > 0),
  };
}

function stateCell(state, paused) {
  return el("td", { class: "state-" + state }, paused ? "paused" : state);
}

// taskStateCell is a task's state, marked when a runner that had started
// it died before its result committed.
function taskStateCell(t) {
  const cell = stateCell(t.state);
  if (t.may_have_run_twice) {
    cell.append(" ", el("span", { class: "twice", title: "a runner that had started this task died before its result committed: it may have run twice" }, "may have run twice"));
  }
  return cell;
}

// Pages.

let stopPage = () => {};

async function overview() {
  const s = await api("/api/v1/status");
  const cards = el("div", { class: "cards" });
  const live = s.runners.filter((r) => r.alive);
  const since = live.map((r) => r.started).filter(Boolean).sort()[0];
  cards.append(el("div", { class: "card", id: "daemons-card" }, el("b", {}, live.length),
    (live.length === 1 ? "daemon" : "daemons") + (since ? ", up since " + new Date(since).toLocaleString() : "")));
  for (const st of ["running", "pending", "succeeded", "failed", "cancelled"]) {
    cards.append(el("div", { class: "card" }, el("b", {}, s.jobs[st] || 0), st + " jobs"));
  }
  cards.append(el("div", { class: "card" }, el("b", {}, s.running_tasks), "running tasks"));
  cards.append(el("div", { class: "card" }, el("b", {}, fmtBytes(s.database_bytes)), "database"));
  const runners = el("table", {}, el("tr", {}, ...["role", "host", "pid", "state", "started", "version", "running"].map((h) => el("th", {}, h))));
  for (const r of s.runners) {
    runners.append(el("tr", {}, el("td", {}, r.role), el("td", {}, r.host), el("td", { class: "num" }, r.pid),
      el("td", { class: r.alive ? "state-succeeded" : "state-cancelled" }, r.alive ? "alive" : "gone"),
      el("td", {}, r.started ? new Date(r.started).toLocaleString() : "-"), el("td", {}, r.version || "-"),
      el("td", { class: "num" }, r.running_tasks)));
  }
  const sinks = el("table", {}, el("tr", {}, el("th", {}, "sink"), el("th", {}, "callbacks waiting")));
  for (const [name, n] of Object.entries(s.pending_callbacks || {})) {
    sinks.append(el("tr", {}, el("td", {}, name), el("td", { class: "num" }, n)));
  }
  const canvas = el("canvas", { id: "throughput" });
  const rate = el("span", { class: "muted", id: "throughput-note" });
  main.replaceChildren(el("h1", {}, "Overview"), cards,
    el("h2", {}, "Throughput, tasks per second, last hour ", rate), canvas,
    el("h2", {}, "Daemons"), s.runners.length ? runners : el("p", { class: "muted" }, "No daemon runs this database: start one with pcd daemon."),
    el("h2", {}, "Callbacks waiting for a sink"), Object.keys(s.pending_callbacks || {}).length ? sinks : el("p", { class: "muted" }, "None."));
  let series = await throughput();
  const draw = () => {
    const d = drawChart(canvas, series);
    rate.textContent = "(" + d.total.toLocaleString() + " tasks, peak " + d.peak.toFixed(1) + "/s)";
  };
  draw();
  // The counts grow each second as runners add theirs: look every 5 s.
  const tick = setInterval(async () => {
    try { series = await throughput(); draw(); } catch (e) { /* next time */ }
  }, 5000);
  return () => clearInterval(tick);
}

// jobsPerPage is how many jobs the jobs page shows at a time.
const jobsPerPage = 100;

async function jobsPage(params) {
  const state = params.get("state") || "";
  const name = params.get("name") || "";
  const query = "/api/v1/jobs?limit=" + jobsPerPage + (state ? "&state=" + encodeURIComponent(state) : "") +
    (name ? "&name=" + encodeURIComponent(name) : "");
  const stateSel = el("select", { id: "state-filter" }, ...["", "pending", "running", "succeeded", "failed", "cancelled"].map((s) => {
    const o = el("option", { value: s }, s || "any state");
    if (s === state) o.selected = true;
    return o;
  }));
  const nameIn = el("input", { id: "name-filter", placeholder: "name", value: name });
  const apply = () => { location.hash = "#/jobs?state=" + encodeURIComponent(stateSel.value) + "&name=" + encodeURIComponent(nameIn.value); };
  stateSel.addEventListener("change", apply);
  nameIn.addEventListener("change", apply);
  const table = el("table", { id: "jobs" }, el("tr", {}, ...["job", "name", "state", "progress", "done", "failed", "elapsed", "ETA", "created"].map((h) => el("th", {}, h))));
  const rows = new Map();
  const more = el("button", { id: "more-jobs" }, "older jobs");
  const count = el("p", { class: "muted", id: "jobs-shown" });
  let before = 0;
  const page = async () => {
    const body = await api(query + (before ? "&before=" + before : ""));
    for (const j of body.jobs) {
      if (rows.has(j.job_id)) continue;
      const tr = el("tr", { "data-job": j.job_id });
      rows.set(j.job_id, tr);
      fillJobRow(tr, j);
      table.append(tr);
    }
    before = body.next_before || 0;
    more.hidden = !body.next_before;
    count.textContent = rows.size + " jobs shown" + (before ? "; older ones a click away" : "");
  };
  more.addEventListener("click", () => page().catch((e) => alert(e.message)));
  await page();
  main.replaceChildren(el("h1", {}, "Jobs"), el("div", { class: "filters" }, stateSel, nameIn), table, count, more);
  const stop = liveJobs((id) => rows.get(id), (tr, j) => fillJobRow(tr, j));
  // New jobs, and jobs that start, send no event: look at the newest
  // page every 5 s.
  const poll = setInterval(async () => {
    try {
      const fresh = await api(query);
      for (const j of fresh.jobs.slice().reverse()) {
        let tr = rows.get(j.job_id);
        if (!tr) {
          tr = el("tr", { "data-job": j.job_id });
          rows.set(j.job_id, tr);
          table.firstChild.after(tr);
        }
        fillJobRow(tr, j);
      }
    } catch (e) { /* next time */ }
  }, 5000);
  return () => { stop(); clearInterval(poll); };
}

function fillJobRow(tr, j) {
  tr.replaceChildren(el("td", {}, el("a", { href: "#/jobs/" + j.job_id }, j.job_id.slice(0, 8))), el("td", {}, j.name),
    stateCell(j.state, j.paused), el("td", {}, progress(j)), el("td", { class: "num" }, j.done + "/" + j.total),
    el("td", { class: "num" }, j.failed), el("td", { class: "num" }, fmtDuration(j.elapsed_secs)), el("td", { class: "num" }, eta(j)),
    el("td", {}, new Date(j.created_at).toLocaleString()));
}

// liveJobs refreshes the jobs that events name, at most every 300 ms each.
function liveJobs(find, refresh) {
  const due = new Map();
  const f = (ev) => {
    const tr = find(ev.job_id);
    if (!tr || due.has(ev.job_id)) return;
    due.set(ev.job_id, setTimeout(async () => {
      due.delete(ev.job_id);
      try { await refresh(tr, await api("/api/v1/jobs/" + ev.job_id)); } catch (e) { /* next event */ }
    }, 300));
  };
  listeners.add(f);
  return () => { listeners.delete(f); for (const t of due.values()) clearTimeout(t); };
}

// maxFailedShown bounds the failed tasks a job's page lists first.
const maxFailedShown = 1000;

async function jobPage(id, params) {
  const state = params.get("state") || "";
  let job = await api("/api/v1/jobs/" + encodeURIComponent(id));
  const head = el("div", { id: "job-head" });
  const actions = el("div", { class: "filters" });
  for (const action of ["pause", "resume", "retry", "cancel"]) {
    actions.append(el("button", { id: "action-" + action, class: action === "cancel" ? "danger" : "", onclick: async () => {
      if (!confirm(action + " job " + job.job_id + "?")) return;
      try { job = await api("/api/v1/jobs/" + job.job_id + "/" + action, { method: "POST" }); fillHead(); }
      catch (e) { alert(e.message); }
    } }, action));
  }
  const output = el("div", { id: "task-output" });
  const table = el("table", { id: "tasks" }, el("tr", {}, ...["#", "state", "attempts", "time", "cpu", "memory", "exit", "command", "error"].map((h) => el("th", {}, h))));
  const fillHead = () => {
    const allowed = actionsFor(job);
    for (const b of actions.children) b.hidden = !allowed[b.textContent];
    head.replaceChildren(el("h1", {}, "Job ", job.name ? job.name + " " : "", el("span", { class: "muted" }, job.job_id)),
      el("div", { class: "cards" },
        el("div", { class: "card" }, el("b", { id: "job-state", class: "state-" + job.state }, job.paused ? "paused" : job.state), "state"),
        el("div", { class: "card" }, el("b", {}, progress(job)), job.done + " of " + job.total + " done"),
        el("div", { class: "card" }, el("b", {}, job.failed), "failed"),
        el("div", { class: "card" }, el("b", {}, fmtDuration(job.elapsed_secs)), "elapsed"),
        el("div", { class: "card" }, el("b", {}, eta(job)), "ETA")));
  };
  fillHead();
  // rows holds the row of each task shown, by number.
  const rows = new Map();
  const taskRow = (t) => {
    // An exec command's exit code, CPU time and peak memory.
    let exit = "-", cpu = "-", mem = "-";
    if (t.result && typeof t.result === "object" && "exit_code" in t.result) {
      exit = t.result.exit_code;
      cpu = fmtDuration(t.result.cpu_secs || 0);
      if (t.result.max_rss_kib) mem = fmtBytes(t.result.max_rss_kib * 1024);
    }
    return el("tr", { "data-task": String(t.number), "data-state": t.state },
      el("td", {}, el("a", { class: "task", onclick: () => showTask(t.number) }, t.number)),
      taskStateCell(t), el("td", { class: "num" }, t.attempts), el("td", { class: "num" }, fmtDuration(t.time_secs)),
      el("td", { class: "num cpu" }, cpu), el("td", { class: "num mem" }, mem),
      el("td", { class: "num" }, exit), el("td", { class: "command" }, t.payload === undefined ? "" : command(t)), el("td", {}, t.error || ""));
  };
  // addTask shows a task, or brings its row up to date.
  const addTask = (t) => {
    const old = rows.get(t.number);
    const row = taskRow(t);
    rows.set(t.number, row);
    if (t.payload === undefined) {
      // An event carries no payload: the command is the row's before, or
      // is read once.
      const cell = row.querySelector("td.command");
      if (old) cell.textContent = old.querySelector("td.command").textContent;
      else api("/api/v1/jobs/" + job.job_id + "/tasks/" + t.number).then((full) => { cell.textContent = command(full); }, () => {});
    }
    // Failed tasks come first: one that fails while shown moves up.
    if (old && !(t.state === "failed" && old.dataset.state !== "failed" && !state)) { old.replaceWith(row); return; }
    if (old) old.remove();
    if (t.state === "failed" && !state) table.firstChild.after(row);
    else table.append(row);
  };
  const showTask = async (n) => {
    const t = await api("/api/v1/jobs/" + job.job_id + "/tasks/" + n);
    const r = t.result && typeof t.result === "object" ? t.result : null;
    output.replaceChildren(el("h2", {}, "Task " + n + " (" + t.state + ")"),
      el("pre", { class: "command", id: "task-command" }, command(t)),
      t.error ? el("p", { class: "error" }, t.error) : null,
      r && "stdout" in r ? el("pre", { class: "output", id: "task-stdout" }, r.stdout) : el("pre", { class: "output", id: "task-stdout" }, JSON.stringify(t.result, null, 2) || ""),
      r && r.stderr ? el("pre", { class: "output", id: "task-stderr" }, r.stderr) : null);
    output.scrollIntoView();
  };
  // Failed tasks first, then the rest in order, a page at a time; or,
  // filtered by a state, those in it.
  const failed = state ? { tasks: [] } : await api("/api/v1/jobs/" + job.job_id + "/tasks?state=failed&limit=" + maxFailedShown);
  failed.tasks.forEach(addTask);
  let after = 0;
  const more = el("button", { id: "more-tasks" }, "more tasks");
  const stateSel = el("select", { id: "task-state-filter" }, ...["", "pending", "running", "succeeded", "failed", "cancelled"].map((s) => {
    const o = el("option", { value: s }, s || "any state");
    if (s === state) o.selected = true;
    return o;
  }));
  stateSel.addEventListener("change", () => { location.hash = "#/jobs/" + job.job_id + (stateSel.value ? "?state=" + stateSel.value : ""); });
  const page = async () => {
    const p = await api("/api/v1/jobs/" + job.job_id + "/tasks?limit=200&after=" + after + (state ? "&state=" + state : ""));
    p.tasks.forEach(addTask);
    after = p.next_after || 0;
    more.hidden = !p.next_after;
  };
  more.addEventListener("click", page);
  await page();
  main.replaceChildren(head, actions, output, el("h2", {}, "Tasks"), el("div", { class: "filters" }, stateSel), table, more);
  // The stream brings a sample of the successes: the rows shown that have
  // not ended are read again, a page from the first of them, when an
  // event of the job comes (at most every 300 ms) and every 2 s.
  const refreshRows = async () => {
    let first = 0;
    for (const [n, row] of rows) {
      const st = row.dataset.state;
      if ((st === "pending" || st === "running") && (!first || n < first)) first = n;
    }
    if (!first) return;
    const p = await api("/api/v1/jobs/" + job.job_id + "/tasks?limit=200&after=" + (first - 1) + (state ? "&state=" + state : ""));
    for (const t of p.tasks) if (rows.has(t.number)) addTask(t);
  };
  const stopLive = liveJobs((jid) => (jid === job.job_id ? head : null), async (_, j) => {
    job = j;
    fillHead();
    await refreshRows();
  });
  // A job that starts, or waits, sends no event: every 2 s, read the job
  // and its rows.
  const poll = setInterval(async () => {
    try {
      job = await api("/api/v1/jobs/" + job.job_id);
      fillHead();
      await refreshRows();
    } catch (e) { /* next time */ }
  }, 2000);
  // A task event changes the row of a task shown; a task that failed
  // comes in at the top, up to maxFailedShown. The rest wait for "more
  // tasks": a million-task job never puts a million rows in the page.
  let failedShown = failed.tasks.length;
  const onTask = (ev) => {
    if (ev.job_id !== job.job_id || ev.event !== "task") return;
    if (!rows.has(ev.number)) {
      if (state || ev.state !== "failed" || failedShown >= maxFailedShown) return;
      failedShown++;
    }
    addTask({ number: ev.number, state: ev.state, attempts: ev.attempts, may_have_run_twice: ev.may_have_run_twice, time_secs: ev.time_secs, result: ev.result, error: ev.error });
  };
  listeners.add(onTask);
  return () => { stopLive(); clearInterval(poll); listeners.delete(onTask); };
}

async function route() {
  stopPage();
  stopPage = () => {};
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path === "/" || path === "") stopPage = await overview();
    else if (path === "/jobs") stopPage = await jobsPage(params);
    else if (path.startsWith("/jobs/")) stopPage = await jobPage(decodeURIComponent(path.slice(6)), params);
    else main.replaceChildren(el("p", {}, "No such page."));
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
stream();
