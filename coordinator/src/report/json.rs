//! The JSON shapes of `runs --json` and `status --json` (and of the web page's data).

use std::collections::BTreeMap;

use eventor_store::{HostHealthRecord, TaskRecord};
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
    /// The class of its failed end (`exit:3`, `timeout`, …); none for a success or an
    /// end stored before classes were.
    pub failure_class: Option<&'a str>,
    pub result: Option<&'a str>,
    /// What it waits for, when it waits (`status` with its flow says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<&'a str>,
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
            failure_class: task.failure_class.as_deref(),
            result: task.result.as_deref(),
            waiting: None,
        }
    }
}

/// A host's health in a run, as `status --json` and `hosts --json` print it.
#[derive(Debug, Serialize)]
pub struct HostJson<'a> {
    pub host: &'a str,
    /// `up`, `away` or `quarantined`.
    pub state: &'static str,
    /// When its quarantine ends (RFC 3339).
    pub until: Option<String>,
    /// Why it is away or quarantined.
    pub reason: Option<&'a str>,
    /// Its last host-class failures, oldest first.
    pub failures: Vec<HostFailureJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct HostFailureJson<'a> {
    pub at: String,
    pub reason: &'a str,
}

impl<'a> HostJson<'a> {
    pub fn of(health: &'a HostHealthRecord) -> HostJson<'a> {
        let failures = health.failures.iter().map(|(at, reason)| HostFailureJson {
            at: timestamp_micros(*at),
            reason,
        });
        HostJson {
            host: &health.host,
            state: health.state.as_str(),
            until: health.until.map(timestamp_micros),
            reason: health.reason.as_deref(),
            failures: failures.collect(),
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
    /// Delays not yet fired: work still to come.
    pub pending_delays: usize,
    /// Who cancelled the run (`eventor-coord cancel (user@host)`), if anyone did.
    pub cancelled_by: Option<&'a str>,
    /// Why the run could not do its work, if that is how it ended.
    pub cause: Option<&'a str>,
    /// The run's parameters, name to value.
    pub params: BTreeMap<&'a str, &'a str>,
    /// The names of the variables its tasks got from the prime (never their values).
    pub env_from_prime: &'a [String],
    /// Each host's health (cluster runs): up, away, quarantined until when and why.
    pub hosts: Vec<HostJson<'a>>,
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
            tasks: report
                .tasks
                .iter()
                .enumerate()
                .map(|(i, task)| TaskJson {
                    waiting: report.waiting.get(&i).map(String::as_str),
                    ..TaskJson::of(task)
                })
                .collect(),
            pending_delays: report.pending_delays,
            cancelled_by: report.cancelled_by.as_deref(),
            cause: run.cause.as_deref(),
            params: run
                .params
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            env_from_prime: &run.env_from_prime,
            hosts: report.hosts.iter().map(HostJson::of).collect(),
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
    /// `[step, sequence, status, host, created µs, updated µs, attempt, error,
    /// failure class]`, at most
    /// [`TIMELINE_LIMIT`] of the newest.
    pub timeline: Vec<TimelineRow<'a>>,
    pub timeline_cut: usize,
    pub now: i64,
    /// Each host's health (cluster runs), as `status --json` has it.
    pub hosts: Vec<HostJson<'a>>,
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
                t.failure_class.as_deref(),
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
    Option<&'a str>,
);
