//! The tables `runs` and `status` print on a terminal.

use std::fmt::Write;

use eventor_store::Micros;

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
    let mut table = Table::new(&[
        "RUN", "RECOVERY", "MODE", "STARTED", "ENDED", "DURATION", "OUTCOME", "READY", "ACTIVE",
        "SUCCESS", "FAILURE", "SKIPPED",
    ]);
    for run in runs {
        let mut row = vec![
            run.run_id.clone(),
            run.recovery.to_string(),
            run.mode.clone(),
            timestamp(run.started_at),
            run.ended_at.map(timestamp).unwrap_or_else(|| "-".into()),
            span(run.started_at, run.duration_end()),
            run.outcome.clone(),
        ];
        row.extend(run.counts.pairs().iter().map(|(_, n)| n.to_string()));
        table.push(row);
    }
    table.render()
}

/// The whole `status` text: header, the step table, the failed tasks.
pub fn status_text(report: &RunReport) -> String {
    let mut out = header(report);
    out.push('\n');
    out.push_str(&steps_table(&report.steps()));
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailed tasks ({}):", failed.len());
        for task in failed {
            let _ = writeln!(
                out,
                "  {}[{}] on {} (attempt {}): {}",
                task.step,
                task.sequence,
                task.host.as_deref().unwrap_or("prime"),
                task.attempt,
                first_line(task.error.as_deref().unwrap_or("(no error recorded)"))
            );
        }
    }
    out
}

fn header(report: &RunReport) -> String {
    let run = &report.run;
    let summary = report.summary();
    let ended = run.ended_at.map(timestamp).unwrap_or_else(|| "-".into());
    format!(
        "run {} recovery {} of flow {} ({}, on {}): {}\nstarted {}  ended {}  duration {}  tasks {}\n",
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
