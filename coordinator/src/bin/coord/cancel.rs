//! `eventor-coord cancel`: stops a running run from any terminal or machine that reaches its
//! store, as Ctrl-C on its prime would. The request is a row of the run's recovery
//! (`run_requests`); its coordinator is woken by it (Postgres notifies, SQLite's file is
//! watched) and stops the run through its interrupt. Nothing is written for a run that is
//! not running.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use eventor::flow::load_flow;
use eventor_store::{now_micros, RequestKind, RunRequest, Store};

use super::store_choice::{Chosen, StoreArgs};
use super::{bad, init_logging, print_out, ConfigArgs, Failure};

#[derive(Args)]
pub struct CancelArgs {
    /// The flow file of the run (its name picks the run without --run-id, and its store).
    flow: PathBuf,
    /// The run to cancel (default: the flow's latest run).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Exit 0 once the request is stored, 1 when the run is not running (nothing written),
/// 2 when there is no such run or store.
pub fn cancel(args: CancelArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let (chosen, _) = args.store.for_flow(&flow, &config)?;
    eventor::check_store_location(&chosen.location).map_err(bad)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    runtime.block_on(request_cancel(&chosen, &flow.name, args.run_id.as_deref()))
}

async fn request_cancel(
    chosen: &Chosen,
    flow: &str,
    run_id: Option<&str>,
) -> Result<ExitCode, Failure> {
    let location = &chosen.location;
    let store = chosen.open_existing().await?;
    let run_id = match run_id {
        Some(id) => id.to_string(),
        None => match store.latest_run(flow).await.map_err(run_failure)? {
            Some(run) => run.key.run_id.to_string(),
            None => return Err(bad(anyhow::anyhow!("no run of flow {flow} in {location}"))),
        },
    };
    let history = store.run_history(&run_id).await.map_err(run_failure)?;
    let Some(run) = history.last() else {
        return Err(bad(anyhow::anyhow!("no run {run_id} in {location}")));
    };
    if !held(&store, &run_id).await? {
        super::say(format_args!(
            "eventor-coord: run {run_id} of flow {flow} is not running (no coordinator \
             holds it; stored {}): nothing to cancel",
            run.status.as_str()
        ));
        return Ok(ExitCode::from(1));
    }
    let by = requester();
    let request = RunRequest {
        run: run.key.clone(),
        kind: RequestKind::Cancel,
        by: by.clone(),
        at: now_micros(),
    };
    store.request(request).await.map_err(run_failure)?;
    Ok(print_out(&format!(
        "cancel of run {run_id} recovery {} requested ({by}): its coordinator stops it\n",
        run.key.recovery
    )))
}

/// Whether a coordinator holds the run now (asked, never taken: taking it could stand in
/// a recovery's way).
async fn held(store: &Store, run_id: &str) -> Result<bool, Failure> {
    store.run_held(run_id).await.map_err(run_failure)
}

/// Who asks, as the run's console and `status` show it: `eventor-coord cancel (user@host)`.
fn requester() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| nix::unistd::getuid().to_string());
    let host = eventor_agent::local_host_name();
    format!("eventor-coord cancel ({user}@{host})")
}

fn run_failure(e: eventor_store::StoreError) -> Failure {
    Failure::Run(e.into())
}
