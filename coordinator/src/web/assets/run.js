// eventor-coord serve: one run's page: graph, host lanes, failed tasks and a live log tail.
"use strict";

const parts = location.pathname.split("/");
const runId = decodeURIComponent(parts[2]);
const recovery = parts[3];
const base = `/api/run/${encodeURIComponent(runId)}/${recovery}`;
const knownHosts = new Set();

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function renderSummary(page) {
  const s = page.summary;
  const box = document.getElementById("summary");
  const title = el("h2", `run ${s.run_id} recovery ${s.recovery} of flow ${s.flow} `);
  title.appendChild(el("span", s.outcome, `outcome outcome-${s.outcome}`));
  const times = el("div", `started ${s.started}${s.ended ? "  ended " + s.ended : ""}  (${s.duration.toFixed(1)}s)`);
  const counts = el("div", undefined, "counts");
  for (const [status, n] of Object.entries(s.counts)) counts.appendChild(el("span", `${status} ${n}`, `count-${status}`));
  const params = el("div", undefined, "params");
  const pairs = Object.entries(s.params || {});
  if (pairs.length) params.appendChild(el("span", "params: " + pairs.map(([k, v]) => `${k}=${v}`).join("  ")));
  // Only the names: the values from the prime are never stored.
  const fromPrime = s.env_from_prime || [];
  if (fromPrime.length) params.appendChild(el("span", "  env from the prime: " + fromPrime.join(", ")));
  box.replaceChildren(title, times, counts, params);
  document.title = `eventor ${s.flow} ${s.run_id}`;
}

function renderLanes(page) {
  const rows = page.timeline;
  const lanes = new Map();
  let start = Infinity, end = 0;
  for (const row of rows) {
    const host = row[3] || "prime";
    if (!lanes.has(host)) lanes.set(host, []);
    lanes.get(host).push(row);
    start = Math.min(start, row[4]);
    const stop = row[2] === "active" ? page.now : row[5];
    end = Math.max(end, stop);
  }
  const span = Math.max(end - start, 1);
  const box = document.getElementById("lanes");
  box.replaceChildren();
  for (const [host, tasks] of lanes) {
    addHost(host);
    const lane = el("div", undefined, "lane");
    lane.dataset.host = host;
    const track = el("div", undefined, "lane-track");
    for (const t of tasks) {
      const stop = t[2] === "active" ? page.now : t[5];
      const bar = el("div", undefined, `bar ${t[2]}`);
      bar.style.left = `${((t[4] - start) / span) * 100}%`;
      bar.style.width = `${Math.max(((stop - t[4]) / span) * 100, 0.2)}%`;
      const failure = t[8] ? ` (${t[8]})` : "";
      bar.title = `${t[0]}[${t[1]}] ${t[2]}${failure} attempt ${t[6]} ${((stop - t[4]) / 1e6).toFixed(2)}s`;
      track.appendChild(bar);
    }
    lane.append(el("div", `${host} (${tasks.length})`, "lane-name"), track);
    box.appendChild(lane);
  }
  if (page.timeline_cut) box.appendChild(el("div", `(the ${page.timeline_cut} oldest tasks are not shown)`));
}

// Each host's health: up, away (why) or quarantined (until when, why), with its last
// host failures, as `eventor-coord hosts` says it.
function renderHealth(page) {
  const list = document.getElementById("health");
  const hosts = page.hosts || [];
  list.replaceChildren(...hosts.map((h) => {
    let text = `${h.host}: ${h.state}`;
    if (h.until) text += ` until ${h.until}`;
    if (h.reason) text += `: ${h.reason}`;
    if (h.failures.length) text += ` [last failures: ${h.failures.map((f) => `${f.at} ${f.reason}`).join("; ")}]`;
    return el("li", text, `health-${h.state}`);
  }));
  if (!hosts.length) list.appendChild(el("li", "no hosts"));
}

function renderFailed(page) {
  const list = document.getElementById("failed");
  const failed = page.timeline.filter((t) => t[2] === "failure");
  list.replaceChildren(...failed.map((t) =>
    el("li", `${t[0]}[${t[1]}] on ${t[3] || "prime"} (attempt ${t[6]}${t[8] ? `, ${t[8]}` : ""}): ${(t[7] || "").split("\n")[0]}`)));
  if (!failed.length) list.appendChild(el("li", "none"));
}

function render(page) {
  if (!page) {
    document.getElementById("summary").textContent = `no run ${runId} recovery ${recovery}`;
    return;
  }
  renderSummary(page);
  document.getElementById("graph").innerHTML = page.graph_svg;
  renderLanes(page);
  renderHealth(page);
  renderFailed(page);
}

function addHost(host) {
  if (knownHosts.has(host) || host === "prime" || host === "-") return;
  knownHosts.add(host);
  const option = el("option", host);
  option.value = host;
  document.getElementById("host").appendChild(option);
}

// A run that ended for good changes no more (a recovery is a page of its own): its feeds
// are closed once a response has delivered (each ends after a few seconds), so its page
// keeps no request open. An incomplete run may be continued, an abandoned one may come
// back, and a missing status may be a passing error: those pages go on following.
const FINAL = new Set(["success", "failure", "interrupted"]);
let over = false;

let logSource = null;
function followLog() {
  if (logSource) logSource.close();
  const log = document.getElementById("log");
  log.replaceChildren();
  const query = new URLSearchParams();
  const host = document.getElementById("host").value;
  const step = document.getElementById("step").value.trim();
  if (host) query.set("host", host);
  if (step) query.set("step", step);
  logSource = new EventSource(`${base}/log?${query}`);
  logSource.addEventListener("log", (e) => {
    const line = el("div", e.data, "logline");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(line);
    while (log.childElementCount > 2000) log.firstChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  });
  // Closed only after a response opened once the run was over has delivered: lines written
  // just before the end (after the last look of an earlier response) come with it.
  const source = logSource;
  let openedOver = false;
  source.onopen = () => { openedOver = over; };
  source.onerror = () => { if (openedOver) source.close(); };
}

const status = new EventSource(`${base}/events`);
status.addEventListener("status", (e) => {
  const page = JSON.parse(e.data);
  over = Boolean(page) && FINAL.has(page.summary.outcome);
  render(page);
});
status.onopen = () => { document.getElementById("conn").textContent = "live"; };
// Feeds end every few seconds by design and the browser reconnects: only a closed one is news.
status.onerror = () => {
  const conn = document.getElementById("conn");
  if (over) {
    status.close();
    conn.textContent = "run over";
  } else if (status.readyState === EventSource.CLOSED) {
    conn.textContent = "disconnected";
  }
};
document.getElementById("host").addEventListener("change", followLog);
document.getElementById("step").addEventListener("change", followLog);
document.getElementById("filter").addEventListener("submit", (e) => { e.preventDefault(); followLog(); });
followLog();
