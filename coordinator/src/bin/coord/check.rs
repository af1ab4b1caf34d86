//! `eventor-coord check`: the command line's side of checking a flow and its cluster
//! before a run (the work is in `eventor::cluster::check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use eventor::cluster::check::{self, render, CheckOptions, CheckReport, FlowSummary};
use eventor::cluster::{load_hosts, HostsFile, LinkSettings};
use eventor::flow::{eventor_from_flow, load_flow, FlowTriggers};
use eventor::report::list_runs;
use eventor::report::time::timestamp_micros;
use eventor::{ClusterOptions, EventorConfig, EventorOptions};
use eventor_store::{HostState, RunKey, RunStatus, Store, StoreLocation};

use super::{bad, init_logging, ConfigArgs, Failure, StoreSources};

/// `check FLOW.yaml [--hosts FILE] [--store STORE] [--json] [--resolve-only]`.
#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The flow file to check.
    flow: PathBuf,
    /// The cluster's hosts file, as for `run`; the hosts the flow's steps are pinned to are
    /// checked.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// The store, as for `run` (default: the flow file's `store:`, the hosts file's, the
    /// config's default_db, else <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// Print the findings as one JSON document on stdout (the flow summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Only resolve each host's SSH settings from ssh_config; connect to nothing.
    #[arg(long)]
    resolve_only: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// How the findings are shown.
enum Output {
    Text,
    Json,
}

/// Exit 0 when everything is ready, 1 when a host or the store is not, 2 for bad input.
pub(crate) fn check(args: CheckArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let hosts = args
        .hosts
        .as_deref()
        .map(load_hosts)
        .transpose()
        .map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let options = check_options(&args, &flow, hosts.as_ref(), &config)?;
    let summary = FlowSummary::of(&flow);
    let (ssh, resolved) =
        check::resolve_hosts(hosts.as_ref(), &summary.hosts, &options.ssh).map_err(bad)?;
    let output = if args.json {
        Output::Json
    } else {
        Output::Text
    };
    let header = format!(
        "{}\nstore: {}",
        render::summary_line(&summary),
        options.store
    );
    if args.resolve_only {
        let report = CheckReport {
            hosts: resolved,
            store: None,
        };
        print(&output, &header, &report, None);
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let report = runtime.block_on(check::probe_hosts(&ssh, resolved, &options));
    let reached = report.store.as_ref().is_some_and(|s| s.error.is_none());
    let quarantines = match reached {
        true => runtime.block_on(quarantined_now(&options.store, &summary.hosts)),
        false => Vec::new(),
    };
    print(&output, &header, &report, Some(&quarantines));
    Ok(ExitCode::from(if report.ready() { 0 } else { 1 }))
}

/// A host of the check that a running run keeps quarantined now. Not a reason to call the
/// host unready (a new run starts with its own health), but what the operator should know.
#[derive(serde::Serialize)]
struct Quarantined {
    host: String,
    run_id: String,
    flow: String,
    until: String,
    reason: Option<String>,
}

/// The hosts among `hosts` that a running run in the store has quarantined until later than
/// now. Read as `status` reads the store (an SQLite file that is not there is not created;
/// a Postgres schema is only checked); a store that cannot say leaves the list empty.
async fn quarantined_now(store: &StoreLocation, hosts: &[String]) -> Vec<Quarantined> {
    if let StoreLocation::Sqlite(path) = store {
        if !path.exists() {
            return Vec::new();
        }
    }
    let Ok(store) = Store::open_prepared(store).await else {
        return Vec::new();
    };
    let runs = list_runs(&store, None).await.unwrap_or_default();
    let now = eventor_store::now_micros();
    let mut found = Vec::new();
    for run in runs
        .iter()
        .filter(|r| r.outcome == RunStatus::Running.as_str())
    {
        let key = RunKey {
            run_id: run.run_id.as_str().into(),
            recovery: run.recovery,
        };
        for health in store.host_health(key).await.unwrap_or_default() {
            let until = health.until.filter(|until| *until > now);
            let (Some(until), true) = (until, health.state == HostState::Quarantined) else {
                continue;
            };
            if hosts.contains(&health.host) {
                found.push(Quarantined {
                    host: health.host,
                    run_id: run.run_id.clone(),
                    flow: run.flow.clone(),
                    until: timestamp_micros(until),
                    reason: health.reason,
                });
            }
        }
    }
    found
}

/// The quarantines as text: a line each, after the hosts' findings.
fn quarantines_text(quarantines: &[Quarantined]) -> String {
    let mut out = String::new();
    for q in quarantines {
        let reason = q.reason.as_deref().unwrap_or("no reason stored");
        out.push_str(&format!(
            "{}: quarantined until {} by running run {} of flow {}: {reason}\n",
            q.host, q.until, q.run_id, q.flow
        ));
    }
    out
}

/// Validates the flow as `run` would build it (pinned hosts against the hosts file
/// included) and picks the store `run` would use.
fn check_options(
    args: &CheckArgs,
    flow: &eventor::flow::FlowFile,
    hosts: Option<&HostsFile>,
    config: &EventorConfig,
) -> Result<CheckOptions, Failure> {
    let sources = StoreSources {
        flag: args.store.as_deref(),
        flow: Some(flow),
        hosts,
    };
    let options = EventorOptions {
        store: sources.named(config).map_err(bad)?,
        cluster: hosts.cloned().map(|hosts| ClusterOptions {
            hosts,
            lost_after: LinkSettings::default().lost_after,
            script: None,
        }),
        config: config.clone(),
        ..EventorOptions::default()
    };
    let eventor = eventor_from_flow(flow, options, FlowTriggers::FromFile)
        .and_then(|eventor| eventor.validate().map(|()| eventor))
        .with_context(|| format!("{}", args.flow.display()))
        .map_err(bad)?;
    Ok(CheckOptions::new(eventor.store_location()))
}

/// The findings; `quarantines` when the store was read (not with `--resolve-only`).
fn print(output: &Output, header: &str, report: &CheckReport, quarantines: Option<&[Quarantined]>) {
    match output {
        Output::Text => {
            let text = render::text(report) + &quarantines_text(quarantines.unwrap_or_default());
            super::print_out(&format!("{header}\n{text}"));
        }
        Output::Json => {
            super::say(format_args!("{header}"));
            let mut json = render::json(report);
            if let (Some(document), Some(quarantines)) = (json.as_object_mut(), quarantines) {
                let listed = serde_json::to_value(quarantines).unwrap_or_default();
                document.insert("quarantined".into(), listed);
            }
            super::print_out(&format!("{json}\n"));
        }
    }
}
