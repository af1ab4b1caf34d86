//! The embedded page assets and the JSON the pages load.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::App;
use crate::report::graph::{states_of, FlowGraph};
use crate::report::json::{timeline, HostJson, RunJson, RunPageJson};
use crate::report::svg::to_svg;
use crate::report::{list_runs, run_report, RunReport, RunSelector};

const INDEX_HTML: &str = include_str!("assets/index.html");
const RUN_HTML: &str = include_str!("assets/run.html");
const APP_CSS: &str = include_str!("assets/app.css");
const INDEX_JS: &str = include_str!("assets/index.js");
const RUN_JS: &str = include_str!("assets/run.js");

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub(crate) async fn run_page() -> Html<&'static str> {
    Html(RUN_HTML)
}

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.css" => (APP_CSS, "text/css"),
        "index.js" => (INDEX_JS, "text/javascript"),
        "run.js" => (RUN_JS, "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn json_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn failed(e: impl std::fmt::Display, status: StatusCode) -> Response {
    (status, format!("{e}\n")).into_response()
}

/// Every run of the store as JSON text.
pub(crate) async fn runs_text(app: &App) -> Result<String, Response> {
    let runs = list_runs(&app.store, None)
        .await
        .map_err(|e| failed(e, StatusCode::INTERNAL_SERVER_ERROR))?;
    let rows: Vec<RunJson> = runs.iter().map(RunJson::of).collect();
    Ok(serde_json::to_string(&rows).unwrap_or_default())
}

pub(crate) async fn runs_json(State(app): State<Arc<App>>) -> Response {
    match runs_text(&app).await {
        Ok(text) => json_response(text),
        Err(response) => response,
    }
}

/// One run's page data as JSON text (a missing run is 404).
pub(crate) async fn run_text(app: &App, run_id: &str, recovery: i32) -> Result<String, Response> {
    let selector = RunSelector {
        run_id: Some(run_id.to_string()),
        recovery: Some(recovery),
        ..RunSelector::default()
    };
    let mut report = run_report(&app.store, &selector).await.map_err(|e| {
        let status = if e.is_input_error() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        failed(e, status)
    })?;
    let graph = FlowGraph::load_saved(&app.logdir, &report.run.name, &report.run.key.run_id)
        .unwrap_or_else(|| FlowGraph::of_tasks(&report));
    report.fill_pinned_hosts(&graph.pins());
    Ok(page_json(&graph, &report))
}

fn page_json(graph: &FlowGraph, report: &RunReport) -> String {
    let summary = report.summary();
    let (rows, cut) = timeline(report);
    let page = RunPageJson {
        summary: RunJson::of(&summary),
        steps: report.steps(),
        graph_svg: to_svg(graph, &states_of(report)),
        timeline: rows,
        timeline_cut: cut,
        now: eventor_store::now_micros(),
        hosts: report.hosts.iter().map(HostJson::of).collect(),
    };
    serde_json::to_string(&page).unwrap_or_default()
}

pub(crate) async fn run_json(
    State(app): State<Arc<App>>,
    Path((run_id, recovery)): Path<(String, i32)>,
) -> Response {
    match run_text(&app, &run_id, recovery).await {
        Ok(text) => json_response(text),
        Err(response) => response,
    }
}
