//! `runs`, `status`, `graph` and `serve`: the commands that show what runs did (read only).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use eventor::flow::{load_flow, FlowFile};
use eventor::report::graph::{states_of, to_dot, to_mermaid, FlowGraph, StepStates};
use eventor::report::json::{RunJson, StatusJson};
use eventor::report::svg::to_svg;
use eventor::report::text::{runs_table, status_text};
use eventor::report::{list_runs, open_store, run_report, ReportError, RunReport, RunSelector};
use eventor::web::{ServeConfig, Server, WebError};
use eventor_store::{Store, StoreLocation};

use super::{bad, flow_store, init_logging, logdir_of, ConfigArgs, Failure};

/// How often `status --watch` re-reads an SQLite store (Postgres notifies instead).
const WATCH_REREAD: Duration = Duration::from_secs(1);
/// On Postgres, `status --watch` re-reads this often even without a notification.
const WATCH_SAFETY: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct RunsArgs {
    /// The flow file whose runs to list (its name picks them, and its default store).
    flow: PathBuf,
    /// The store, as for `run` (default: <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The flow file of the run (its name picks the latest run, and its default store).
    flow: PathBuf,
    /// The run to show (default: the flow's latest run).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Which recovery of the run (default: its latest).
    #[arg(long, value_name = "N")]
    recovery: Option<i32>,
    /// The store, as for `run` (default: <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Redraw as the run goes on, until it ends.
    #[arg(long)]
    watch: bool,
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
    /// The store of --run-id, as for `run` (default: <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
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
    /// The central logs of the runs (default: LOGGING.logdir of --config, else ./logs).
    #[arg(long, value_name = "DIR")]
    logdir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))
}

/// A report's error as the binary classes it (exit 2 for what the user named wrong).
fn failure(e: ReportError) -> Failure {
    if e.is_input_error() {
        Failure::BadInput(e.into())
    } else {
        Failure::Run(e.into())
    }
}

/// The flow file and its store.
fn flow_and_store(
    flow: &Path,
    store: Option<&str>,
    config: &ConfigArgs,
    level: Option<&str>,
) -> Result<(FlowFile, StoreLocation), Failure> {
    let flow = load_flow(flow).map_err(bad)?;
    let config = config.load()?;
    init_logging(level, &config.logging);
    let location = flow_store(store, &config, &flow.name)?;
    Ok((flow, location))
}

pub fn runs(args: RunsArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, location) = flow_and_store(&args.flow, args.store.as_deref(), &args.config, level)?;
    let runs = runtime()?.block_on(async {
        let store = open_store(&location).await?;
        list_runs(&store, Some(&flow.name)).await
    });
    let runs = runs.map_err(failure)?;
    if args.json {
        let rows: Vec<RunJson> = runs.iter().map(RunJson::of).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if runs.is_empty() {
        return Err(failure(ReportError::NoRuns {
            flow: flow.name,
            store: location.to_string(),
        }));
    } else {
        print!("{}", runs_table(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, location) = flow_and_store(&args.flow, args.store.as_deref(), &args.config, level)?;
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
        let store = open_store(&location).await.map_err(failure)?;
        let pins = FlowGraph::of_flow(&flow).pins();
        let mut report = run_report(&store, &selector).await.map_err(failure)?;
        report.fill_pinned_hosts(&pins);
        if !style.watch {
            print_status(&report, style);
            return Ok(ExitCode::SUCCESS);
        }
        watch(&store, report, style, &pins).await
    })
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
    pins: &std::collections::HashMap<String, String>,
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
        let mut next = run_report(store, &selector).await.map_err(failure)?;
        next.fill_pinned_hosts(pins);
        if next.run != report.run || next.tasks != report.tasks {
            print_status(&next, style);
        }
        report = next;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn graph(args: GraphArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let (flow, location) = flow_and_store(&args.flow, args.store.as_deref(), &args.config, level)?;
    let states: StepStates = match &args.run_id {
        None => StepStates::new(),
        Some(run_id) => {
            let selector = RunSelector {
                flow: Some(flow.name.clone()),
                run_id: Some(run_id.clone()),
                recovery: None,
            };
            let report = runtime()?.block_on(async {
                let store = open_store(&location).await?;
                run_report(&store, &selector).await
            });
            states_of(&report.map_err(failure)?)
        }
    };
    let graph = FlowGraph::of_flow(&flow);
    let text = match args.format {
        GraphFormat::Dot => to_dot(&graph, &states),
        GraphFormat::Mermaid => to_mermaid(&graph, &states),
        GraphFormat::Svg => to_svg(&graph, &states),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
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
    let store = super::choose_store(args.store.as_deref(), &config).map_err(bad)?;
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
