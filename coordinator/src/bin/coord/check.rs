//! `eventor-coord check`: the command line's side of checking a flow and its cluster
//! before a run (the work is in `eventor::cluster::check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use eventor::cluster::check::{self, render, CheckOptions, CheckReport, FlowSummary};
use eventor::cluster::{load_hosts, HostsFile, LinkSettings};
use eventor::flow::{eventor_from_flow, load_flow, FlowTriggers};
use eventor::{ClusterOptions, EventorConfig, EventorOptions};

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
        print(&output, &header, &report);
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let report = runtime.block_on(check::probe_hosts(&ssh, resolved, &options));
    print(&output, &header, &report);
    Ok(ExitCode::from(if report.ready() { 0 } else { 1 }))
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

fn print(output: &Output, header: &str, report: &CheckReport) {
    match output {
        Output::Text => {
            super::print_out(&format!("{header}\n{}", render::text(report)));
        }
        Output::Json => {
            super::say(format_args!("{header}"));
            super::print_out(&format!("{}\n", render::json(report)));
        }
    }
}
