//! The JSON shapes of `runs --json` and `status --json` (and of the web page's data).

use eventor_store::TaskRecord;
use serde::Serialize;

use super::model::{RunReport, RunSummary, StepStats};
use super::time::timestamp_micros;

/// A run as `runs --json` lists it.
#[derive(Debug, Serialize)]
pub struct RunJson<'a> {
    #[serde(flatten)]
    pub summary: &'a RunSummary,
    pub started: String,
    pub ended: Option<String>,
    /// Seconds from start to end (to now while running).
    pub duration: f64,
}

impl<'a> RunJson<'a> {
    pub fn of(summary: &'a RunSummary) -> RunJson<'a> {
        RunJson {
            summary,
            started: timestamp_micros(summary.started_at),
            ended: summary.ended_at.map(timestamp_micros),
            duration: (summary.duration_end() - summary.started_at) as f64 / 1e6,
        }
    }
}

/// One task of `status --json`.
#[derive(Debug, Serialize)]
pub struct TaskJson<'a> {
    pub step: &'a str,
    pub sequence: &'a str,
    pub status: &'static str,
    pub attempt: i32,
    pub host: Option<&'a str>,
    pub started: String,
    pub ended: Option<String>,
    pub error: Option<&'a str>,
    pub result: Option<&'a str>,
}

impl<'a> TaskJson<'a> {
    pub fn of(task: &'a TaskRecord) -> TaskJson<'a> {
        TaskJson {
            step: &task.step,
            sequence: &task.sequence,
            status: task.status.as_str(),
            attempt: task.attempt,
            host: task.host.as_deref(),
            started: timestamp_micros(task.created_at),
            ended: task
                .status
                .is_final()
                .then(|| timestamp_micros(task.updated_at)),
            error: task.error.as_deref(),
            result: task.result.as_deref(),
        }
    }
}

/// The object `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    pub run_id: &'a str,
    pub flow: &'a str,
    pub recovery: i32,
    pub outcome: &'static str,
    pub started: String,
    pub ended: Option<String>,
    pub tasks: Vec<TaskJson<'a>>,
}

impl<'a> StatusJson<'a> {
    pub fn of(report: &'a RunReport) -> StatusJson<'a> {
        let run = &report.run;
        StatusJson {
            run_id: &run.key.run_id,
            flow: &run.name,
            recovery: run.key.recovery,
            outcome: report.outcome(),
            started: timestamp_micros(run.started_at),
            ended: run.ended_at.map(timestamp_micros),
            tasks: report.tasks.iter().map(TaskJson::of).collect(),
        }
    }
}

/// What the web page of a run loads: the status, per-step numbers, the graph and times as
/// microseconds for the time line.
#[derive(Debug, Serialize)]
pub struct RunPageJson<'a> {
    pub summary: RunJson<'a>,
    pub steps: Vec<StepStats>,
    pub graph_svg: String,
    /// `[step, sequence, status, host, created µs, updated µs, attempt, error]`, at most
    /// [`TIMELINE_LIMIT`] of the newest.
    pub timeline: Vec<TimelineRow<'a>>,
    pub timeline_cut: usize,
    pub now: i64,
}

/// How many tasks the page's time line shows at most (the newest).
pub const TIMELINE_LIMIT: usize = 2000;

/// The time line rows of a report: the newest [`TIMELINE_LIMIT`] tasks.
pub fn timeline(report: &RunReport) -> (Vec<TimelineRow<'_>>, usize) {
    let skip = report.tasks.len().saturating_sub(TIMELINE_LIMIT);
    let rows = report.tasks[skip..]
        .iter()
        .map(|t| {
            (
                t.step.as_str(),
                t.sequence.as_str(),
                t.status.as_str(),
                t.host.as_deref(),
                t.created_at,
                t.updated_at,
                t.attempt,
                t.error.as_deref(),
            )
        })
        .collect();
    (rows, skip)
}

pub type TimelineRow<'a> = (
    &'a str,
    &'a str,
    &'static str,
    Option<&'a str>,
    i64,
    i64,
    i32,
    Option<&'a str>,
);
