//! `runs`, `status`, `hosts`, `graph` and `serve`: the commands that show what runs did
//! (read only).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use eventor::flow::{load_flow, FlowFile};
use eventor::report::graph::{states_of, to_dot, to_mermaid, FlowGraph, StepStates};
use eventor::report::json::{HostJson, RunJson, StatusJson};
use eventor::report::svg::to_svg;
use eventor::report::text::{hosts_text, runs_table, runs_table_of_flows, status_text};
use eventor::report::waiting::WaitRules;
use eventor::report::{list_runs, run_report, ReportError, RunReport, RunSelector};
use eventor::web::{ServeConfig, Server, WebError};
use eventor_store::Store;

use super::store_choice::Chosen;
use super::{bad, init_logging, logdir_of, ConfigArgs, Failure, StoreArgs, StoreSources};

/// How often `status --watch` re-reads an SQLite store (Postgres notifies instead).
const WATCH_REREAD: Duration = Duration::from_secs(1);
/// On Postgres, `status --watch` re-reads this often even without a notification.
const WATCH_SAFETY: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct RunsArgs {
    /// The flow file whose runs to list (its name picks them, and its default store);
    /// without it, every flow's runs in the store that --store, --hosts or the config names.
    flow: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The flow file of the run (its name picks the latest run, and its default store).
    /// Inside a task leave it out: the task's own run answers (as JSON).
    flow: Option<PathBuf>,
    /// The run to show (default: the flow's latest run).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Which recovery of the run (default: its latest).
    #[arg(long, value_name = "N")]
    recovery: Option<i32>,
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Redraw as the run goes on, until it ends.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
pub struct HostsArgs {
    /// The flow file of the run (its name picks the latest run, and its default store).
    flow: PathBuf,
    /// The run to show (default: the flow's latest run).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// `--hosts FILE` also lists the hosts of that file the run never said a word of.
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON array instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

#[derive(Args)]
pub struct GraphArgs {
    /// The flow file to draw.
    flow: PathBuf,
    /// dot (Graphviz), mermaid, or svg (laid out here, no Graphviz needed).
    #[arg(long, value_enum, default_value = "dot")]
    format: GraphFormat,
    /// Colour the steps by the states of this run's tasks.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// The store of --run-id.
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The store to show: a URL, a path, or a DATABASES name of --config (default: the
    /// config's default_db).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// The address to listen on; anything but a loopback address exposes the page.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A name the page may be reached by besides its IP addresses and localhost (repeat
    /// for more); requests naming any other host are refused, against DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Take events for running runs: `POST /api/runs/{run_id}/trigger` with
    /// `Authorization: Bearer <token>`, the token being the first line of this file (mode
    /// 0600). Without it the server only reads.
    #[arg(long, value_name = "TOKEN_FILE")]
    triggers: Option<PathBuf>,
    /// Live feeds (the pages' updates and log tails) open at once; one more is answered 503
    /// with Retry-After (each feed holds a task, and a run's on Postgres a store session).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    max_feeds: u16,
    /// The central logs of the runs (default: LOGGING.logdir of --config, else ./logs).
    #[arg(long, value_name = "DIR")]
    logdir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The run `selector` names, read from the chosen store (never created).
fn stored_report(chosen: &Chosen, selector: &RunSelector) -> Result<RunReport, Failure> {
    runtime()?.block_on(async {
        let store = chosen.open_existing().await?;
        run_report(&store, selector)
            .await
            .map_err(|e| chosen.failure(e))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))
}

/// The flow file and its store (never created: a read finds it or says where it looked).
fn flow_and_store(
    flow: &Path,
    store: &StoreArgs,
    config: &ConfigArgs,
    level: Option<&str>,
) -> Result<(FlowFile, Chosen), Failure> {
    let flow = load_flow(flow).map_err(bad)?;
    let config = config.load()?;
    init_logging(level, &config.logging);
    let (chosen, _) = store.for_flow(&flow, &config)?;
    Ok((flow, chosen))
}

/// The store `runs` without a flow lists: one that --store, --hosts or the config names.
fn named_store(
    store: &StoreArgs,
    config: &ConfigArgs,
    level: Option<&str>,
) -> Result<Chosen, Failure> {
    let hosts = store.hosts_file()?;
    let config = config.load()?;
    init_logging(level, &config.logging);
    let sources = StoreSources {
        flag: store.store.as_deref(),
        flow: None,
        hosts: hosts.as_ref(),
    };
    match sources.named(&config).map_err(bad)? {
        Some(location) => Ok(Chosen {
            location,
            looked: None,
        }),
        None => Err(bad(anyhow::anyhow!(
            "runs without a flow file lists every flow's runs of a store: {}",
            sources.looked()
        ))),
    }
}

pub fn runs(args: RunsArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, chosen) = match &args.flow {
        Some(path) => {
            let (flow, chosen) = flow_and_store(path, &args.store, &args.config, level)?;
            (Some(flow.name), chosen)
        }
        None => (None, named_store(&args.store, &args.config, level)?),
    };
    let runs = runtime()?.block_on(async {
        let store = chosen.open_existing().await?;
        list_runs(&store, flow.as_deref())
            .await
            .map_err(|e| chosen.failure(e))
    })?;
    if args.json {
        let rows: Vec<RunJson> = runs.iter().map(RunJson::of).collect();
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        return Ok(super::print_out(&format!("{text}\n")));
    }
    if runs.is_empty() {
        let store = chosen.location.to_string();
        return Err(chosen.failure(match flow {
            Some(flow) => ReportError::NoRuns { flow, store },
            None => ReportError::Empty { store },
        }));
    }
    let table = match flow {
        Some(_) => runs_table(&runs),
        None => runs_table_of_flows(&runs),
    };
    Ok(super::print_out(&table))
}

pub fn status(args: StatusArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let Some(flow_path) = &args.flow else {
        return own_run_status();
    };
    let (flow, chosen) = flow_and_store(flow_path, &args.store, &args.config, level)?;
    let selector = RunSelector {
        flow: Some(flow.name.clone()),
        run_id: args.run_id.clone(),
        recovery: args.recovery,
    };
    let style = Style {
        json: args.json,
        watch: args.watch,
    };
    runtime()?.block_on(async {
        let store = chosen.open_existing().await?;
        let pins = FlowGraph::of_flow(&flow).pins();
        let rules = WaitRules::of_flow(&flow);
        let failure = |e| chosen.failure(e);
        let mut report = run_report(&store, &selector).await.map_err(failure)?;
        report.fill_pinned_hosts(&pins);
        report.explain_waiting(&rules);
        if !style.watch {
            print_status(&report, style);
            return Ok(ExitCode::SUCCESS);
        }
        watch(&store, report, style, (&pins, &rules), &chosen).await
    })
}

/// `hosts`: each host of a run with its health (up, away, quarantined until when and why)
/// and its last failures, as the run's prime last stored them.
pub fn hosts(args: HostsArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, chosen) = flow_and_store(&args.flow, &args.store, &args.config, level)?;
    let names = match args.store.hosts_file()? {
        Some(file) => file.names(),
        None => Vec::new(),
    };
    let selector = RunSelector {
        flow: Some(flow.name.clone()),
        run_id: args.run_id.clone(),
        recovery: None,
    };
    let report = stored_report(&chosen, &selector)?;
    if args.json {
        let rows: Vec<HostJson> = report.hosts.iter().map(HostJson::of).collect();
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        return Ok(super::print_out(&format!("{text}\n")));
    }
    Ok(super::print_out(&hosts_text(&report, &names)))
}

/// `status` with no flow inside a task: its own run's status, as JSON, from its coordinator
/// through the task's trigger socket.
fn own_run_status() -> Result<ExitCode, Failure> {
    use eventor_agent::trigger_socket::{status, TRIGGER_SOCKET_VAR};
    let Some(socket) = std::env::var_os(TRIGGER_SOCKET_VAR) else {
        return Err(bad(anyhow::anyhow!(
            "name the flow file (only a task's own run needs none)"
        )));
    };
    let answer = status(std::path::Path::new(&socket))
        .map_err(|e| Failure::Run(anyhow::Error::new(e).context("cannot reach the task's run")))?;
    match answer {
        Ok(json) => Ok(super::print_out(&format!("{json}\n"))),
        Err(why) => Err(Failure::Run(anyhow::anyhow!(
            "the run cannot say its status: {why}"
        ))),
    }
}

/// How `status` prints.
#[derive(Clone, Copy)]
struct Style {
    json: bool,
    watch: bool,
}

fn print_status(report: &RunReport, style: Style) {
    let text = if style.json {
        let json = StatusJson::of(report);
        let text = if style.watch {
            serde_json::to_string(&json)
        } else {
            serde_json::to_string_pretty(&json)
        };
        text.unwrap_or_default() + "\n"
    } else {
        status_text(report)
    };
    let mut out = std::io::stdout().lock();
    if style.watch && !style.json && out.is_terminal() {
        let _ = write!(out, "\x1b[H\x1b[2J");
    } else if style.watch && !style.json {
        let _ = writeln!(out, "----");
    }
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Prints the report, then again whenever the run changed, until it is no longer running.
/// Postgres wakes it through the run's notifications; SQLite is re-read every second.
async fn watch(
    store: &Store,
    mut report: RunReport,
    style: Style,
    (pins, rules): (&std::collections::HashMap<String, String>, &WaitRules),
    chosen: &Chosen,
) -> Result<ExitCode, Failure> {
    let mut subscription = match store {
        Store::Postgres(_) => Some(
            store
                .subscribe(report.run.key.clone())
                .await
                .map_err(|e| Failure::Run(e.into()))?,
        ),
        Store::Sqlite(_) => None,
    };
    let selector = RunSelector {
        run_id: Some(report.run.key.run_id.to_string()),
        recovery: Some(report.run.key.recovery),
        ..RunSelector::default()
    };
    print_status(&report, style);
    while report.is_live() {
        match subscription.as_mut() {
            Some(sub) => {
                let _ = tokio::time::timeout(WATCH_SAFETY, sub.next()).await;
            }
            None => tokio::time::sleep(WATCH_REREAD).await,
        }
        let mut next = run_report(store, &selector)
            .await
            .map_err(|e| chosen.failure(e))?;
        next.fill_pinned_hosts(pins);
        next.explain_waiting(rules);
        if next.run != report.run || next.tasks != report.tasks {
            print_status(&next, style);
        }
        report = next;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn graph(args: GraphArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, chosen) = flow_and_store(&args.flow, &args.store, &args.config, level)?;
    let states: StepStates = match &args.run_id {
        None => StepStates::new(),
        Some(run_id) => {
            let selector = RunSelector {
                flow: Some(flow.name.clone()),
                run_id: Some(run_id.clone()),
                recovery: None,
            };
            let report = stored_report(&chosen, &selector)?;
            states_of(&report)
        }
    };
    let graph = FlowGraph::of_flow(&flow);
    let text = match args.format {
        GraphFormat::Dot => to_dot(&graph, &states),
        GraphFormat::Mermaid => to_mermaid(&graph, &states),
        GraphFormat::Svg => to_svg(&graph, &states),
    };
    Ok(super::print_out(&text))
}

/// Removes the graph saved for a run that never opened.
pub fn forget_graph(flow: &FlowFile, logdir: &Path, run_id: &str) {
    let _ = std::fs::remove_file(eventor::report::graph::saved_path(
        logdir, &flow.name, run_id,
    ));
}

/// Saves the flow's graph beside the run's log for `serve`; a failure is only a warning.
pub fn save_graph(flow: &FlowFile, logdir: &Path, run_id: &str) {
    if let Err(e) = FlowGraph::of_flow(flow).save(logdir, run_id) {
        eprintln!("eventor-coord: warning: {:#}", anyhow::Error::new(e));
    }
}

pub fn serve(args: ServeArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let sources = StoreSources {
        flag: args.store.as_deref(),
        flow: None,
        hosts: None,
    };
    let store = sources.named(&config).map_err(bad)?;
    let Some(store) = store else {
        return Err(bad(anyhow::anyhow!(
            "serve needs a store: pass --store (a URL, a path, or a DATABASES name of --config)"
        )));
    };
    let serve_config = ServeConfig {
        store,
        listen: args.listen,
        logdir: logdir_of(args.logdir, &config),
        allow_hosts: args.allow_hosts,
        triggers: args.triggers,
        max_feeds: usize::from(args.max_feeds),
    };
    runtime()?.block_on(serve_until_signal(serve_config))
}

async fn serve_until_signal(config: ServeConfig) -> Result<ExitCode, Failure> {
    let web_failure = |e: WebError| {
        if e.is_input_error() {
            Failure::BadInput(e.into())
        } else {
            Failure::Run(e.into())
        }
    };
    let server = Server::bind(&config).await.map_err(web_failure)?;
    let addr = server.local_addr().unwrap_or(config.listen);
    if !addr.ip().is_loopback() {
        eprintln!("eventor-coord: warning: listening on {addr}, reachable from other hosts (the page has no login)");
    }
    eprintln!("eventor-coord: serving {} on http://{addr}/", config.store);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    server.run(shutdown).await.map_err(web_failure)?;
    Ok(ExitCode::SUCCESS)
}
