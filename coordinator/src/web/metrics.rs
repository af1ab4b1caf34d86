//! `/metrics`: the store in the Prometheus text format — run recoveries by outcome, tasks by
//! status, failed tasks by the kind of their failure, the active tasks of running runs
//! per host, and the hosts of running runs that are quarantined.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use eventor_protocol::{FailureClass, FailureKind};
use eventor_store::{HostState, RunStatus, TaskStatus};

use super::App;
use crate::report::list_runs;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    match render(&app).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

async fn render(app: &App) -> Result<String, Box<dyn std::error::Error>> {
    let runs = list_runs(&app.store, None).await?;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks: BTreeMap<&str, u64> = TaskStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for run in &runs {
        *outcomes.entry(run.outcome.clone()).or_default() += 1;
        for (status, n) in run.counts.pairs() {
            *tasks.entry(status).or_default() += n;
        }
    }
    let mut hosts: BTreeMap<String, u64> = BTreeMap::new();
    let running = runs
        .iter()
        .filter(|r| r.outcome == RunStatus::Running.as_str() && r.counts.active > 0);
    for run in running {
        let key = eventor_store::RunKey {
            run_id: run.run_id.as_str().into(),
            recovery: run.recovery,
        };
        for task in app.store.tasks(key).await? {
            if task.status == TaskStatus::Active {
                *hosts
                    .entry(task.host.unwrap_or_else(|| "prime".into()))
                    .or_default() += 1;
            }
        }
    }
    let quarantined = quarantined_hosts(app, &runs).await?;
    let failed = failed_by_kind(app.store.failure_class_counts().await?);
    let mut out = String::new();
    family(
        &mut out,
        "eventor_runs",
        "Run recoveries in the store by outcome.",
        "outcome",
        &outcomes,
    );
    family(
        &mut out,
        "eventor_tasks",
        "Tasks in the store by status.",
        "status",
        &tasks,
    );
    family(
        &mut out,
        "eventor_failed_tasks",
        "Failed tasks in the store by the kind of their failure (unknown: stored before kinds were).",
        "class",
        &failed,
    );
    family(
        &mut out,
        "eventor_active_tasks",
        "Active tasks of running runs by host.",
        "host",
        &hosts,
    );
    family(
        &mut out,
        "eventor_host_quarantined",
        "Hosts of running runs by whether a run has them quarantined now (1) or not (0).",
        "host",
        &quarantined,
    );
    Ok(out)
}

/// Each host a running run has a health row of: 1 when one of them has it quarantined
/// until later than now, else 0.
async fn quarantined_hosts(
    app: &App,
    runs: &[crate::report::RunSummary],
) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let now = eventor_store::now_micros();
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let running = runs
        .iter()
        .filter(|r| r.outcome == RunStatus::Running.as_str());
    for run in running {
        let key = eventor_store::RunKey {
            run_id: run.run_id.as_str().into(),
            recovery: run.recovery,
        };
        for health in app.store.host_health(key).await? {
            let now_in = health.state == HostState::Quarantined
                && health.until.is_some_and(|until| until > now);
            let value = out.entry(health.host).or_default();
            *value = (*value).max(u64::from(now_in));
        }
    }
    Ok(out)
}

/// Failed tasks by kind (`exit`, `timeout`, …: an exit code or a signal is no label of its
/// own, so the family stays small), every kind listed.
fn failed_by_kind(counts: Vec<(Option<String>, i64)>) -> BTreeMap<&'static str, u64> {
    let mut out: BTreeMap<&'static str, u64> =
        FailureKind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
    for (class, n) in counts {
        let parsed = class.as_deref().map(str::parse::<FailureClass>);
        let kind = match parsed {
            Some(Ok(class)) => class.kind().as_str(),
            _ => "unknown",
        };
        *out.entry(kind).or_default() += n.max(0) as u64;
    }
    out
}

fn family<K: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<K, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (key, value) in values {
        let key = key.as_ref().replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {value}");
    }
}
