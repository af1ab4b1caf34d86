//! `eventor-coord`: the command line of the prime coordinator.
//!
//! Exit status: 0 the flow succeeded, 1 it failed, 2 bad input (a file or a flag),
//! 3 incomplete (loops used up or delays pending; run again with `--mode continue`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eventor::api::config::{ConsoleLevel, LoggingConfig};
use eventor::cluster::{load_hosts, LinkSettings};
use eventor::flow::config::DEFAULT_SECTION;
use eventor::flow::file::MAX_RANGE_LEN;
use eventor::flow::{eventor_from_flow, load_config, load_flow, FlowTriggers};
use eventor::EventorConfig;
use eventor::{ClusterOptions, EventorOptions, RunMode, RunOutcome, StoreLocation};

#[derive(Parser)]
#[command(
    name = "eventor-coord",
    version,
    about = "Run event-driven flows of steps, durably, on this host or on a cluster of hosts over SSH",
    long_about = "Run event-driven flows of steps. A flow file (YAML) defines events, steps \
                  (shell commands), associations between them and the events that start it. \
                  Every trigger and task is recorded in a store (SQLite by default: \
                  <flow name>.run.db in the working directory), so a run can be inspected, \
                  recovered or continued later.\n\n\
                  Exit status: 0 success, 1 the flow failed, 2 bad input, 3 incomplete."
)]
struct Cli {
    /// Log level for the console: error, warn, info, debug or trace (default: the config's
    /// LOGGING level, else info; RUST_LOG overrides).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a flow file on this host until it succeeds, fails or runs out of loops.
    Run(RunArgs),
    /// Print a run's central log (every task's output, with host, step and sequence), and with
    /// --follow keep printing new lines until the run ends, like `tail -f`.
    Logs(LogsArgs),
    /// Fire events in a run from outside it: a running coordinator acts on them at once
    /// (Postgres notifies it; otherwise within 30 s), a stopped run on its next continue.
    Trigger(TriggerArgs),
    /// Delete a flow's runs whose newest recovery started longer ago than --older-than, with
    /// everything stored of them; a run another coordinator is running is never touched.
    Prune(PruneArgs),
    /// Check before a run that it will get through: the flow loads, and each host it uses
    /// resolves, connects, has a trusted key, an agent and a way to the store (exit 0 ready,
    /// 1 not ready, 2 bad input).
    Check(check_command::CheckArgs),
    /// List a flow's runs, newest first: id, recovery, mode, times, outcome, tasks by status.
    Runs(report_command::RunsArgs),
    /// Show a run (default: the flow's latest): outcome, times, each step's tasks by status,
    /// hosts and durations, and the failed tasks with their errors; --watch follows it.
    Status(report_command::StatusArgs),
    /// Print the flow as a graph (dot, mermaid or svg); with --run-id, steps are coloured by
    /// the states of that run's tasks.
    Graph(report_command::GraphArgs),
    /// Serve a read-only web page over a store: every run, each run's graph, hosts, failures
    /// and live log, and /metrics for Prometheus.
    Serve(report_command::ServeArgs),
}

#[path = "coord/report.rs"]
mod report_command;

#[path = "coord/check.rs"]
mod check_command;

#[derive(Args)]
struct PruneArgs {
    /// The flow file whose runs to prune (its name picks them, and its default store).
    flow: PathBuf,
    /// How old a run must be to go, e.g. 30d, 12h.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    older_than: Duration,
    /// The store, as for `run` (default: <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct LogsArgs {
    /// The flow file of the run (its name picks the log directory).
    flow: PathBuf,
    /// The run whose log to print (default: the newest log of the flow).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Keep printing lines as they are written, until the run ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines of this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only lines of this step (`s1`) or task (`s1[3]`).
    #[arg(long, value_name = "STEP")]
    step: Option<String>,
    /// The log directory (default: LOGGING.logdir of --config, else ./logs).
    #[arg(long, value_name = "DIR")]
    logdir: Option<PathBuf>,
    /// The run's store, as for `run` (default: <flow name>.run.db here): with --follow, to
    /// notice a coordinator that went away without ending the log.
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The original's config file and which section of it to read.
#[derive(Args)]
struct ConfigArgs {
    /// A config file in the original's shape: an EVENTOR section (max_concurrent,
    /// stop_on_exception, envvar_prefix, DATABASES, LOGGING, …), `$VAR`s expanded.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The section of --config to read, as the original's `config_tag`.
    #[arg(long, value_name = "TAG", env = "EVENTOR_CONFIG_TAG", default_value = DEFAULT_SECTION)]
    config_tag: String,
}

impl ConfigArgs {
    /// The config (the defaults without --config); its warnings go to stderr, one a line.
    fn load(&self) -> Result<EventorConfig, Failure> {
        let Some(path) = &self.config else {
            return Ok(EventorConfig::default());
        };
        let config = load_config(path, &self.config_tag).map_err(bad)?;
        for warning in &config.warnings {
            eprintln!("eventor-coord: warning: {warning}");
        }
        Ok(config)
    }
}

#[derive(Args)]
struct TriggerArgs {
    /// The flow file of the run (to check the event names and find its store).
    flow: PathBuf,
    /// EVENT, EVENT@SEQ or EVENT@FROM..TO (sequence 1 by default).
    #[arg(required = true, value_name = "EVENT[@SEQ|@FROM..TO]")]
    events: Vec<String>,
    /// The store, as for `run` (default: <flow name>.run.db here).
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// The run to trigger in (default: the latest run of the flow).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The flow file (YAML): events, steps, assocs, trigger.
    flow: PathBuf,
    /// The store: postgres://user@host:port/db?schema=NAME, sqlite:PATH, a file path, or the
    /// name of a DATABASES entry of --config. Default: <flow name>.run.db here.
    #[arg(long, value_name = "STORE")]
    store: Option<String>,
    /// The run's id; generated (and printed) when not given.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// How many loops to make (a loop acts on the delays that are due, then runs until
    /// nothing is left but delays not yet due); negative: until nothing at all is left,
    /// waiting for delays. A run that ends with delays pending is incomplete (exit 3).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    max_loops: i64,
    /// Start with EVENT in sequence SEQ (default 1) or in each sequence FROM..TO; repeatable.
    /// On a new run it replaces the flow file's `trigger:` section; recover and continue
    /// start from the run's stored triggers and add these.
    #[arg(long = "trigger", value_name = "EVENT[@SEQ|@FROM..TO]")]
    triggers: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// restart: a new run. recover: a new recovery of the latest (or --run-id) run that skips
    /// the steps that succeeded and reruns the rest. continue: carry on the same recovery from
    /// its stored triggers, tasks and pending delays.
    #[arg(long, default_value = "restart", value_name = "MODE")]
    mode: String,
    /// Where the run's central log goes: <DIR>/<flow>/<run id>.log (default: LOGGING.logdir
    /// of --config, else ./logs).
    #[arg(long, value_name = "DIR")]
    logdir: Option<PathBuf>,
    /// The cluster's hosts file: steps with `host:`/`hosts:` run there, through an agent
    /// started over SSH; its `store:` is the default store.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// With --mode restart and a --run-id the store already holds: drop that run's stored
    /// history first (without it, such a restart is refused).
    #[arg(long)]
    replace: bool,
    /// With --mode recover: recover from this recovery number instead of the latest.
    #[arg(long, value_name = "N")]
    recovery: Option<i32>,
    /// Print only the outcome: no progress, no console log below errors (unless
    /// --log-level says otherwise).
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[path = "coord/progress.rs"]
mod progress;

fn main() -> ExitCode {
    // First: a process started as a command's supervisor supervises and exits here.
    eventor::supervise_commands();
    // Crash points (FAILPOINTS=name=return) exist only in a build with `failpoints`.
    let _crash_points = fail::FailScenario::setup();
    let cli = Cli::parse();
    let level = cli.log_level.as_deref();
    let result = match cli.command {
        Command::Run(args) => run(args, level),
        Command::Trigger(args) => trigger(args, level),
        Command::Logs(args) => logs(args, level),
        Command::Prune(args) => prune(args, level),
        Command::Check(args) => check_command::check(args, level),
        Command::Runs(args) => report_command::runs(args, level),
        Command::Status(args) => report_command::status(args, level),
        Command::Graph(args) => report_command::graph(args, level),
        Command::Serve(args) => report_command::serve(args, level),
    };
    match result {
        Ok(code) => code,
        Err(Failure::BadInput(e)) => {
            eprintln!("eventor-coord: error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("eventor-coord: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Why a command failed: bad input (exit status 2) or a failure while running (1).
enum Failure {
    BadInput(anyhow::Error),
    Run(anyhow::Error),
}

fn bad<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::BadInput(e.into())
}

fn run(args: RunArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let hosts = match &args.hosts {
        Some(path) => Some(load_hosts(path).map_err(bad)?),
        None => None,
    };
    let config = args.config.load()?;
    let level = level.or(args.quiet.then_some("error"));
    init_logging(level, &config.logging);
    let mode = parse_mode(&args.mode).map_err(bad)?;
    // A new run starts from the file's `trigger:` section (or `--trigger` instead); a
    // recovery or continue starts from the run's own stored triggers, plus `--trigger`.
    let triggers = if args.triggers.is_empty() && mode == RunMode::Restart {
        FlowTriggers::FromFile
    } else {
        let pairs = args
            .triggers
            .iter()
            .map(|t| parse_trigger(t))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(bad)?;
        FlowTriggers::Given(pairs.into_iter().flatten().collect())
    };
    let options = EventorOptions {
        store: choose_store(
            args.store
                .as_deref()
                .or(hosts.as_ref().and_then(|h| h.store.as_deref())),
            &config,
        )
        .map_err(bad)?,
        cluster: hosts.map(|hosts| ClusterOptions {
            hosts,
            lost_after: LinkSettings::default().lost_after,
        }),
        run_id: args.run_id.clone(),
        recovery: args.recovery,
        logdir: Some(logdir_of(args.logdir.clone(), &config)),
        run_mode: mode,
        replace_history: args.replace,
        config: config.clone(),
        ..EventorOptions::default()
    };
    let mut eventor = eventor_from_flow(&flow, options, triggers)
        .with_context(|| format!("{}", args.flow.display()))
        .map_err(bad)?;
    // The flow's graph beside the run's log, for `serve`.
    let logdir = logdir_of(args.logdir.clone(), &config);
    report_command::save_graph(&flow, &logdir, eventor.run_id());
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let interrupt = eventor::Interrupt::new();
    let signals = runtime.block_on(Signals::listen(interrupt.clone()))?;
    eventor.set_interrupt(interrupt);
    let location = eventor.store_location();
    let watched = progress::Watched::of(&flow, location, eventor.run_id(), args.quiet);
    let shown = progress::Progress::start(&runtime, watched);
    let outcome = runtime.block_on(eventor.run_async(args.max_loops));
    shown.finish(&runtime);
    let outcome = outcome.map_err(|e| {
        if e.is_input_error() {
            Failure::BadInput(e.into())
        } else {
            Failure::Run(e.into())
        }
    })?;
    if !args.quiet {
        eprintln!(
            "eventor-coord: flow {} run {} in {}: {outcome}",
            eventor.name(),
            eventor.run_id(),
            describe(&eventor.store_location())
        );
    }
    eventor.close();
    println!("{outcome}");
    Ok(ExitCode::from(match outcome {
        RunOutcome::Success => 0,
        RunOutcome::Failure { .. } => 1,
        RunOutcome::Incomplete { .. } => 3,
        // 128 + the signal's number, as a shell reports a process it stopped; stopped by no
        // signal (its prime lost contact with the store), the run failed.
        RunOutcome::Interrupted { .. } => signals.first().map_or(1, |signal| 128 + signal),
    }))
}

const SIGINT: u8 = 2;

/// SIGINT, SIGTERM and SIGHUP stop the run (nothing new starts, running commands get
/// SIGTERM, a grace period, then SIGKILL); a second SIGINT skips the grace period.
struct Signals {
    first: std::sync::Arc<std::sync::OnceLock<u8>>,
}

impl Signals {
    async fn listen(interrupt: eventor::Interrupt) -> Result<Signals, Failure> {
        use tokio::signal::unix::{signal, SignalKind};
        let first = std::sync::Arc::new(std::sync::OnceLock::new());
        let kinds = [
            (SignalKind::interrupt(), "SIGINT", SIGINT),
            (SignalKind::terminate(), "SIGTERM", 15),
            (SignalKind::hangup(), "SIGHUP", 1),
        ];
        for (kind, name, number) in kinds {
            let mut stream = signal(kind).map_err(|e| Failure::Run(e.into()))?;
            let (interrupt, first) = (interrupt.clone(), first.clone());
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if first.set(number).is_err() && number == SIGINT {
                        eprintln!("eventor-coord: {name} again: killing the commands now");
                        interrupt.hurry();
                        continue;
                    }
                    eprintln!("eventor-coord: {name}: stopping the run (again to skip the grace)");
                    interrupt.stop(name);
                }
            });
        }
        Ok(Signals { first })
    }

    /// The number of the first signal received, if any.
    fn first(&self) -> Option<u8> {
        self.first.get().copied()
    }
}

/// `--logdir`, else the config's `LOGGING.logdir`, else `./logs`.
fn logdir_of(flag: Option<PathBuf>, config: &EventorConfig) -> PathBuf {
    flag.or_else(|| config.logging.logdir.clone())
        .unwrap_or_else(|| PathBuf::from("logs"))
}

fn logs(args: LogsArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    use eventor::log::{log_path, print_log, print_log_until, LogFilter};
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let logdir = logdir_of(args.logdir, &config);
    let path = match &args.run_id {
        // Without --follow (which waits for a log that is not there yet), no log is no run.
        Some(run_id) if !args.follow && !log_path(&logdir, &flow.name, run_id).exists() => {
            return Err(bad(anyhow::anyhow!(
                "no log of run {run_id} of flow {} in {}",
                flow.name,
                logdir.display()
            )));
        }
        Some(run_id) => log_path(&logdir, &flow.name, run_id),
        None => newest_log(&log_path(&logdir, &flow.name, "x")).ok_or_else(|| {
            bad(anyhow::anyhow!(
                "no log of flow {} in {}",
                flow.name,
                logdir.display()
            ))
        })?,
    };
    let filter = LogFilter {
        host: args.host,
        step: args.step,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    if !args.follow {
        let printed = runtime.block_on(print_log(&path, &filter, false, std::io::stdout().lock()));
        printed.map_err(|e| Failure::Run(e.into()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let location = flow_store(args.store.as_deref(), &config, &flow.name)?;
    let gone = tokio_util::sync::CancellationToken::new();
    let watch = watch_coordinator(location, flow.name.clone(), args.run_id, path.clone());
    runtime.spawn(watch.run(gone.clone()));
    let out = std::io::stdout().lock();
    let printed = runtime.block_on(print_log_until(&path, &filter, Some(gone.clone()), out));
    let summary = printed.map_err(|e| Failure::Run(e.into()))?;
    if summary.outcome.is_none() && gone.is_cancelled() {
        eprintln!("eventor-coord: the run's coordinator is gone without ending its log");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Who a follower watches: the run's coordinator, through the run's lock in its store.
fn watch_coordinator(
    location: StoreLocation,
    flow: String,
    run_id: Option<String>,
    log: PathBuf,
) -> CoordinatorWatch {
    CoordinatorWatch {
        location,
        flow,
        run_id,
        log,
    }
}

struct CoordinatorWatch {
    location: StoreLocation,
    flow: String,
    run_id: Option<String>,
    log: PathBuf,
}

impl CoordinatorWatch {
    /// Cancels `gone` once the log exists (its coordinator took the run's lock before
    /// writing it) and the lock is free again: the coordinator died without an end marker.
    async fn run(self, gone: tokio_util::sync::CancellationToken) {
        let Ok(store) = eventor_store::Store::open(&self.location).await else {
            return; // no store to ask: follow until the end marker, as before
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !self.log.exists() {
                continue;
            }
            let Some(run_id) = self.run_id(&store).await else {
                continue;
            };
            // Asked, not taken: a probe that took the lock could refuse a recovery starting.
            if let Ok(false) = store.run_held(&run_id).await {
                gone.cancel();
                return;
            }
        }
    }

    async fn run_id(&self, store: &eventor_store::Store) -> Option<String> {
        if let Some(id) = &self.run_id {
            return Some(id.clone());
        }
        let latest = store.latest_run(&self.flow).await.ok()??;
        Some(latest.key.run_id.to_string())
    }
}

/// The most recently written `.log` file in the directory of `sample`.
fn newest_log(sample: &std::path::Path) -> Option<PathBuf> {
    let dir = sample.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn prune(args: PruneArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let location = flow_store(args.store.as_deref(), &config, &flow.name)?;
    let age = i64::try_from(args.older_than.as_micros()).unwrap_or(i64::MAX);
    let cutoff = eventor_store::now_micros().saturating_sub(age);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let pruned = runtime.block_on(async {
        let store = eventor_store::Store::open(&location).await?;
        store.prune(Some(&flow.name), cutoff).await
    });
    let pruned =
        pruned.map_err(|e| Failure::Run(anyhow::Error::new(e).context(location.to_string())))?;
    for run_id in &pruned {
        println!("{run_id}");
    }
    eprintln!(
        "eventor-coord: pruned {} run(s) of flow {} in {location}",
        pruned.len(),
        flow.name
    );
    Ok(ExitCode::SUCCESS)
}

/// The store a command on a flow uses: `--store`, the config's `default_db`, or the flow's
/// default SQLite file here.
fn flow_store(
    flag: Option<&str>,
    config: &EventorConfig,
    flow: &str,
) -> Result<StoreLocation, Failure> {
    let chosen = choose_store(flag, config).map_err(bad)?;
    Ok(chosen.unwrap_or_else(|| StoreLocation::Sqlite(PathBuf::from(format!("{flow}.run.db")))))
}

fn trigger(args: TriggerArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let mut wanted = Vec::new();
    for text in &args.events {
        let pairs = parse_trigger(text).map_err(bad)?;
        if let Some((event, _)) = pairs.first() {
            if !flow.events.iter().any(|e| &e.name == event) {
                return Err(bad(anyhow::anyhow!(
                    "{}: the flow has no event `{event}`",
                    args.flow.display()
                )));
            }
        }
        wanted.extend(pairs);
    }
    let location = flow_store(args.store.as_deref(), &config, &flow.name)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    runtime.block_on(write_triggers(
        &location,
        &flow.name,
        args.run_id.as_deref(),
        wanted,
    ))
}

/// Records the triggers in the run's latest recovery; ones already fired are reported, not
/// written again.
async fn write_triggers(
    location: &StoreLocation,
    flow: &str,
    run_id: Option<&str>,
    wanted: Vec<(String, String)>,
) -> Result<ExitCode, Failure> {
    use eventor_store::{now_micros, Batch, Change, Store};
    use std::sync::Arc;
    let store = Store::open(location)
        .await
        .map_err(|e| Failure::Run(anyhow::Error::new(e).context(location.to_string())))?;
    let run_id = match run_id {
        Some(id) => id.to_string(),
        None => match store
            .latest_run(flow)
            .await
            .map_err(|e| Failure::Run(e.into()))?
        {
            Some(run) => run.key.run_id.to_string(),
            None => return Err(bad(anyhow::anyhow!("no run of flow {flow} in {location}"))),
        },
    };
    let history = store
        .run_history(&run_id)
        .await
        .map_err(|e| Failure::Run(e.into()))?;
    let Some(run) = history.last() else {
        return Err(bad(anyhow::anyhow!("no run {run_id} in {location}")));
    };
    let fired = store
        .triggers(run.key.clone())
        .await
        .map_err(|e| Failure::Run(e.into()))?;
    let mut changes = Vec::new();
    let mut report = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (event, sequence) in wanted {
        // The same trigger twice in one call is one trigger (a duplicate would abort the batch).
        if !seen.insert((event.clone(), sequence.clone())) {
            continue;
        }
        if fired
            .iter()
            .any(|t| t.event == event && t.sequence == sequence)
        {
            report.push(format!("{event}[{sequence}] already fired in run {run_id}"));
            continue;
        }
        report.push(format!(
            "triggered {event}[{sequence}] in run {run_id} recovery {}",
            run.key.recovery
        ));
        changes.push(Change::Trigger {
            event: Arc::from(event.as_str()),
            sequence: Arc::from(sequence.as_str()),
            at: now_micros(),
        });
    }
    let batch = Batch {
        run: run.key.clone(),
        changes,
    };
    store
        .commit(batch)
        .await
        .map_err(|e| Failure::Run(e.into()))?;
    // Only now is it true: the triggers are in the store.
    for line in report {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_mode(text: &str) -> anyhow::Result<RunMode> {
    match text {
        "restart" => Ok(RunMode::Restart),
        "recover" => Ok(RunMode::Recover),
        "continue" => Ok(RunMode::Continue),
        other => {
            anyhow::bail!("--mode: unknown mode {other:?} (expected restart, recover or continue)")
        }
    }
}

/// `EVENT`, `EVENT@SEQ` or `EVENT@FROM..TO` into (event, sequence) pairs.
fn parse_trigger(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (event, sequences) = match text.split_once('@') {
        None => (text, vec!["1".to_string()]),
        Some((event, spec)) => (
            event,
            parse_sequences(spec).with_context(|| format!("--trigger {text}"))?,
        ),
    };
    anyhow::ensure!(
        !event.is_empty(),
        "--trigger {text}: the event name is empty"
    );
    for sequence in &sequences {
        eventor::api::names::check_sequence(sequence)
            .map_err(|why| anyhow::anyhow!("--trigger {text}: sequence {sequence:?} {why}"))?;
    }
    Ok(sequences
        .into_iter()
        .map(|s| (event.to_string(), s))
        .collect())
}

fn parse_sequences(spec: &str) -> anyhow::Result<Vec<String>> {
    let Some((from, to)) = spec.split_once("..") else {
        anyhow::ensure!(!spec.is_empty(), "the sequence is empty");
        return Ok(vec![spec.to_string()]);
    };
    let from: u64 = from
        .parse()
        .with_context(|| format!("range start {from:?} is not a number"))?;
    let to: u64 = to
        .parse()
        .with_context(|| format!("range end {to:?} is not a number"))?;
    anyhow::ensure!(from <= to, "range {from}..{to} is empty (start after end)");
    anyhow::ensure!(
        to - from < MAX_RANGE_LEN,
        "range {from}..{to} is too long (at most {MAX_RANGE_LEN} sequences)"
    );
    Ok((from..=to).map(|n| n.to_string()).collect())
}

/// `--store` as a `DATABASES` name of the config, a URL or a path; without it, the config's
/// `default_db`; without that, the flow's default SQLite file.
fn choose_store(
    flag: Option<&str>,
    config: &EventorConfig,
) -> anyhow::Result<Option<StoreLocation>> {
    let named = |name: &str| {
        let entry = config.databases.iter().find(|(n, _)| n == name);
        entry.map(|(_, db)| db)
    };
    let entry = match flag {
        Some(text) => match named(text) {
            Some(db) => db,
            None => return parse_store(text).map(Some),
        },
        None => match config.database() {
            Some(db) => db,
            None => return Ok(None),
        },
    };
    let location = entry
        .location()
        .map_err(|e| anyhow::anyhow!("DATABASES entry: {e}"))?;
    Ok(Some(location))
}

fn parse_store(text: &str) -> anyhow::Result<StoreLocation> {
    StoreLocation::parse(text).with_context(|| format!("--store {}", masked(text)))
}

/// The text of a store URL with any password replaced, for error messages.
fn masked(text: &str) -> String {
    match StoreLocation::parse(text) {
        Ok(location) => location.to_string(),
        Err(_) => text.split('@').next_back().unwrap_or(text).to_string(),
    }
}

fn describe(location: &StoreLocation) -> String {
    location.to_string()
}

/// Console logging: `--log-level`, else the config's LOGGING level; with `console: false`,
/// tasks' output lines go only to the central log. RUST_LOG overrides both.
fn init_logging(level: Option<&str>, logging: &LoggingConfig) {
    let level = level.unwrap_or(filter_name(logging.level));
    let mut directives = level.to_string();
    if !logging.console {
        directives.push_str(",eventor::output=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::stderr_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // A closed stderr (`| head`) must not make logging panic inside a task.
        .log_internal_errors(false)
        .init();
}

/// A config level as a tracing filter (Python's critical is tracing's error).
fn filter_name(level: ConsoleLevel) -> &'static str {
    match level {
        ConsoleLevel::Trace => "trace",
        ConsoleLevel::Debug => "debug",
        ConsoleLevel::Info => "info",
        ConsoleLevel::Warning => "warn",
        ConsoleLevel::Error | ConsoleLevel::Critical => "error",
    }
}
