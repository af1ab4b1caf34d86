//! The tables `runs` and `status` print on a terminal.

use std::fmt::Write;

use eventor_store::{HostHealthRecord, HostState, Micros};

use super::model::{first_line, RunReport, RunSummary, StepStats};
use super::time::{span, timestamp};

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// The `runs` table, one row per run recovery.
pub fn runs_table(runs: &[RunSummary]) -> String {
    table_of_runs(runs, false)
}

/// [`runs_table`] of runs of several flows: the flow first.
pub fn runs_table_of_flows(runs: &[RunSummary]) -> String {
    table_of_runs(runs, true)
}

fn table_of_runs(runs: &[RunSummary], flows: bool) -> String {
    let columns = [
        "RUN", "RECOVERY", "MODE", "STARTED", "ENDED", "DURATION", "OUTCOME", "READY", "ACTIVE",
        "SUCCESS", "FAILURE", "SKIPPED",
    ];
    let flow_column = flows.then_some("FLOW");
    let columns: Vec<&str> = flow_column.into_iter().chain(columns).collect();
    let mut table = Table::new(&columns);
    for run in runs {
        let flow = flows.then(|| run.flow.clone());
        let mut row: Vec<String> = flow.into_iter().collect();
        row.extend([
            run.run_id.clone(),
            run.recovery.to_string(),
            run.mode.clone(),
            timestamp(run.started_at),
            run.ended_at.map(timestamp).unwrap_or_else(|| "-".into()),
            span(run.started_at, run.duration_end()),
            run.outcome.clone(),
        ]);
        row.extend(run.counts.pairs().iter().map(|(_, n)| n.to_string()));
        table.push(row);
    }
    table.render()
}

/// How many waiting tasks `status` lists (the rest are counted).
const WAITING_SHOWN: usize = 10;

/// The whole `status` text: header, the step table, the waiting and the failed tasks.
pub fn status_text(report: &RunReport) -> String {
    let mut out = header(report);
    out.push('\n');
    out.push_str(&steps_table(&report.steps()));
    let waiting: Vec<_> = report.waiting().collect();
    if !waiting.is_empty() {
        let _ = writeln!(out, "\nwaiting tasks ({}):", waiting.len());
        for (task, why) in waiting.iter().take(WAITING_SHOWN) {
            let _ = writeln!(out, "  {}[{}] waits for {why}", task.step, task.sequence);
        }
        if waiting.len() > WAITING_SHOWN {
            let _ = writeln!(out, "  … and {} more", waiting.len() - WAITING_SHOWN);
        }
    }
    let unhealthy: Vec<&HostHealthRecord> = report
        .hosts
        .iter()
        .filter(|h| h.state != HostState::Up)
        .collect();
    if !unhealthy.is_empty() {
        let _ = writeln!(out, "\nhosts not taking tasks ({}):", unhealthy.len());
        for health in unhealthy {
            let _ = writeln!(out, "  {} {}", health.host, health_words(health));
        }
    }
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailed tasks ({}):", failed.len());
        for task in failed {
            let _ = writeln!(
                out,
                "  {}[{}] on {} (attempt {}{}): {}",
                task.step,
                task.sequence,
                task.host.as_deref().unwrap_or("prime"),
                task.attempt,
                task.failure_class
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default(),
                first_line(task.error.as_deref().unwrap_or("(no error recorded)"))
            );
        }
    }
    out
}

/// A host's state in words: `up`, `away: REASON`, `quarantined until T: REASON`.
pub fn health_words(health: &HostHealthRecord) -> String {
    let reason = health.reason.as_deref().map(first_line).unwrap_or_default();
    match (health.state, health.until) {
        (HostState::Quarantined, Some(until)) => {
            format!("quarantined until {}: {reason}", timestamp(until))
        }
        (HostState::Up, _) => "up".to_string(),
        (state, _) => format!("{}: {reason}", state.as_str()),
    }
}

/// What `eventor-coord hosts` prints: each host of `names` (the hosts file's, in its order)
/// and of the run, with its health and its last failures.
pub fn hosts_text(report: &RunReport, names: &[String]) -> String {
    let mut out = run_line(report);
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    for health in &report.hosts {
        if !all.contains(&health.host.as_str()) {
            all.push(&health.host);
        }
    }
    out.push('\n');
    if all.is_empty() {
        out.push_str("no hosts: the run stored no host's health (it used none, or is older)\n");
    }
    for host in all {
        let Some(health) = report.hosts.iter().find(|h| h.host == host) else {
            let _ = writeln!(
                out,
                "{host}: no word from the run (not used, or not reached yet)"
            );
            continue;
        };
        let _ = writeln!(out, "{host}: {}", health_words(health));
        for (at, why) in &health.failures {
            let _ = writeln!(out, "  failed {}: {}", timestamp(*at), first_line(why));
        }
    }
    out
}

fn header(report: &RunReport) -> String {
    let mut out = run_line(report);
    let run = &report.run;
    if let Some(params) = run.params.as_ref().filter(|p| !p.is_empty()) {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params: {}", pairs.join("  "));
    }
    if !run.env_from_prime.is_empty() {
        let _ = writeln!(out, "env from the prime: {}", run.env_from_prime.join(", "));
    }
    if let Some(cause) = &run.cause {
        let _ = writeln!(out, "cause: {cause}");
    }
    out
}

/// The run's first two lines: who, where, how it ended, when.
fn run_line(report: &RunReport) -> String {
    let run = &report.run;
    let summary = report.summary();
    let ended = run.ended_at.map(timestamp).unwrap_or_else(|| "-".into());
    let cancelled = match &report.cancelled_by {
        Some(by) => format!(" (cancelled by {by})"),
        None => String::new(),
    };
    format!(
        "run {} recovery {} of flow {} ({}, on {}): {}{cancelled}\nstarted {}  ended {}  duration {}  tasks {}\n",
        run.key.run_id,
        run.key.recovery,
        run.name,
        run.mode,
        run.host,
        report.outcome(),
        timestamp(run.started_at),
        ended,
        span(run.started_at, summary.duration_end()),
        summary.counts.total()
    )
}

fn steps_table(steps: &[StepStats]) -> String {
    let mut table = Table::new(&[
        "STEP", "TASKS", "READY", "ACTIVE", "SUCCESS", "FAILURE", "SKIPPED", "HOSTS", "MIN",
        "MEDIAN", "MAX", "ATTEMPTS",
    ]);
    for step in steps {
        let mut row = vec![step.step.clone(), step.counts.total().to_string()];
        row.extend(step.counts.pairs().iter().map(|(_, n)| n.to_string()));
        row.push(hosts_cell(&step.hosts));
        row.extend([step.min, step.median, step.max].map(duration_cell));
        row.push(step.attempts.to_string());
        table.push(row);
    }
    table.render()
}

fn hosts_cell(hosts: &[String]) -> String {
    match hosts.len() {
        0 => "prime".into(),
        1..=3 => hosts.join(","),
        n => format!("{},… ({n})", hosts[..2].join(",")),
    }
}

fn duration_cell(micros: Option<Micros>) -> String {
    micros.map(|m| span(0, m)).unwrap_or_else(|| "-".into())
}
