//! `serve --triggers TOKEN_FILE`: `POST /api/runs/{run_id}/trigger`, how a job submitted
//! elsewhere (a CI system, a cloud function, a webhook) tells a waiting run it is done.
//!
//! The body is JSON, `{"flow": NAME, "event": NAME, "sequence": S}` or with `"range":
//! "FROM..TO"` instead of a sequence; the request carries `Authorization: Bearer TOKEN`,
//! compared in constant time with the token file's (which must be mode 0600). A wrong or
//! missing token is 401; an unknown run or a run of another flow 404; an event the run's
//! flow does not have (read from the graph `run` saved beside the log), or a body that is
//! not such JSON, 422; a run that is not running 409. Accepted events are written as the
//! run's triggers (as `eventor-coord trigger` writes them), and each accepted request is
//! logged: who (the peer address), what, when.

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eventor_store::RunStatus;
use subtle::ConstantTimeEq;

use super::App;
use crate::report::graph::{FlowGraph, NodeKind};

/// The token requests must bear, read from its file.
pub(crate) struct TriggerToken(Vec<u8>);

impl std::fmt::Debug for TriggerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TriggerToken(****)")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the trigger token file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the trigger token file {path} is readable by others (mode {mode:o}): chmod 600 it")]
    Open { path: String, mode: u32 },
    #[error("the trigger token file {path} is empty")]
    Empty { path: String },
}

impl TriggerToken {
    /// The token in `path`: a file only its owner can read, its first line the token.
    pub(crate) fn load(path: &FsPath) -> Result<TriggerToken, TokenError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let read = |source| TokenError::Read {
            path: shown.clone(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Open { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(TokenError::Empty { path: shown });
        }
        Ok(TriggerToken(token.as_bytes().to_vec()))
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(given.as_bytes().ct_eq(&self.0))
    }
}

/// The body of a trigger request.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    flow: String,
    event: String,
    #[serde(default)]
    sequence: Option<serde_json::Value>,
    #[serde(default)]
    range: Option<String>,
}

fn answer(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (status, format!("{text}\n")).into_response()
}

pub(crate) async fn trigger(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &app.trigger_token else {
        return answer(StatusCode::NOT_FOUND, "triggers are off (serve --triggers)");
    };
    if !token.admits(&headers) {
        return answer(StatusCode::UNAUTHORIZED, "a wrong or missing bearer token");
    }
    let body: TriggerBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return answer(StatusCode::UNPROCESSABLE_ENTITY, format!("the body: {e}")),
    };
    let wanted = match sequences(&body) {
        Ok(wanted) => wanted,
        Err(why) => return answer(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let history = match app.store.run_history(&run_id).await {
        Ok(history) => history,
        Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let Some(run) = history.last() else {
        return answer(StatusCode::NOT_FOUND, format!("no run {run_id}"));
    };
    if run.name != body.flow {
        let why = format!("run {run_id} is of flow {}, not {}", run.name, body.flow);
        return answer(StatusCode::NOT_FOUND, why);
    }
    if let Err(why) = known_event(&app, &body.flow, &run_id, &body.event) {
        return answer(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    if run.status != RunStatus::Running {
        let why = format!("run {run_id} is {}: it takes no more events", run.status);
        return answer(StatusCode::CONFLICT, why);
    }
    match crate::api::fire::record_triggers(&app.store, run, wanted).await {
        Ok(fired) => {
            let what: Vec<String> = fired
                .iter()
                .map(|f| {
                    format!(
                        "{}[{}]{}",
                        f.event,
                        f.sequence,
                        if f.already { " (already fired)" } else { "" }
                    )
                })
                .collect();
            tracing::info!(from = %peer, run = %run_id, flow = %body.flow, events = %what.join(", "), "trigger accepted over HTTP");
            let json = serde_json::json!({
                "run_id": run_id,
                "recovery": run.key.recovery,
                "triggered": fired.iter().filter(|f| !f.already).map(|f| format!("{}@{}", f.event, f.sequence)).collect::<Vec<_>>(),
                "already": fired.iter().filter(|f| f.already).map(|f| format!("{}@{}", f.event, f.sequence)).collect::<Vec<_>>(),
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                json.to_string(),
            )
                .into_response()
        }
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The (event, sequence) pairs the body asks for: its `sequence` (text or number), its
/// `range`, or sequence 1.
fn sequences(body: &TriggerBody) -> Result<Vec<(String, String)>, String> {
    let spec = match (&body.sequence, &body.range) {
        (Some(_), Some(_)) => return Err("give a sequence or a range, not both".into()),
        (Some(serde_json::Value::String(s)), None) => format!("{}@{s}", body.event),
        (Some(serde_json::Value::Number(n)), None) => format!("{}@{n}", body.event),
        (Some(_), None) => return Err("the sequence must be text or a number".into()),
        (None, Some(range)) => format!("{}@{range}", body.event),
        (None, None) => body.event.clone(),
    };
    let pairs =
        eventor_agent::trigger_socket::parse_spec(&spec, eventor_agent::trigger_socket::MAX_RANGE)?;
    for (_, sequence) in &pairs {
        crate::api::names::check_sequence(sequence)
            .map_err(|why| format!("sequence {sequence:?} {why}"))?;
    }
    Ok(pairs)
}

/// Whether the run's flow has `event`, from the graph its run saved beside its log.
fn known_event(app: &App, flow: &str, run_id: &str, event: &str) -> Result<(), String> {
    let Some(graph) = FlowGraph::load_saved(&app.logdir, flow, run_id) else {
        return Err(format!(
            "cannot check the event: run {run_id} saved no flow graph in {}",
            app.logdir.display()
        ));
    };
    let events = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Event | NodeKind::Expr));
    if events.clone().any(|n| n.name == event) {
        return Ok(());
    }
    let known: Vec<&str> = events.map(|n| n.name.as_str()).collect();
    Err(format!(
        "flow {flow} has no event `{event}` (its events: {})",
        known.join(", ")
    ))
}
