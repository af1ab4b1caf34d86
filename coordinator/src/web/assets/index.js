// eventor-coord serve: the index: lists every run, kept up to date over server-sent events.
"use strict";

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function countsText(c) {
  const parts = [`${c.success + c.skipped + c.failure}/${c.ready + c.active + c.success + c.failure + c.skipped} done`];
  if (c.failure) parts.push(`${c.failure} failed`);
  if (c.active) parts.push(`${c.active} active`);
  return parts.join(", ");
}

function runRow(run) {
  const tr = document.createElement("tr");
  tr.className = `run outcome-row-${run.outcome}`;
  tr.dataset.run = run.run_id;
  const link = document.createElement("a");
  link.href = `/run/${encodeURIComponent(run.run_id)}/${run.recovery}`;
  link.textContent = run.run_id;
  const first = document.createElement("td");
  first.appendChild(link);
  tr.append(first, cell(run.flow), cell(String(run.recovery)), cell(run.mode),
    cell(run.started.replace("T", " ").slice(0, 19)), cell(`${run.duration.toFixed(1)}s`),
    cell(run.outcome, `outcome outcome-${run.outcome}`), cell(countsText(run.counts), "counts"));
  return tr;
}

function render(runs) {
  const started = performance.now();
  const table = document.getElementById("runs");
  table.tBodies[0].replaceChildren(...runs.map(runRow));
  document.getElementById("count").textContent = `(${runs.length})`;
  // How long the last redraw took, for measuring big stores.
  table.dataset.renderMs = (performance.now() - started).toFixed(1);
}

const source = new EventSource("/api/runs/events");
source.addEventListener("runs", (e) => render(JSON.parse(e.data)));
source.onopen = () => { document.getElementById("conn").textContent = "live"; };
// Feeds end every few seconds by design and the browser reconnects: only a closed one is news.
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED) document.getElementById("conn").textContent = "disconnected";
};
