//! `/metrics`: the store in the Prometheus text format — run recoveries by outcome, tasks by
//! status, and the active tasks of running runs per host.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use eventor_store::{RunStatus, TaskStatus};

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
        "eventor_active_tasks",
        "Active tasks of running runs by host.",
        "host",
        &hosts,
    );
    Ok(out)
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
