//! `eventor-coord`: the command line of the prime coordinator.
//!
//! Exit status: 0 the flow succeeded, 1 it failed, 2 bad input (a file or a flag),
//! 3 incomplete (loops used up or delays pending; run again with `--mode continue`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eventor::api::config::{ConsoleLevel, LoggingConfig};
use eventor::cluster::{load_hosts, LinkSettings};
use eventor::flow::config::DEFAULT_SECTION;
use eventor::flow::file::MAX_RANGE_LEN;
use eventor::flow::{eventor_from_flow, load_config, load_flow, FlowFile, FlowTriggers};
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
    /// (Postgres notifies it; on SQLite within 250 ms), a stopped run on its next continue.
    Trigger(TriggerArgs),
    /// Stop a running run from any terminal or machine that reaches its store, as Ctrl-C on
    /// its prime would: nothing new starts, its commands are stopped, it is stored
    /// interrupted and its coordinator exits 130 (exit 0 requested, 1 the run is not running,
    /// 2 no such run).
    Cancel(cancel_command::CancelArgs),
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
    /// List each host of a run (default: the flow's latest) with its health: up, away, or
    /// quarantined until when and why, and its last failures (--hosts FILE adds the file's
    /// hosts the run never said a word of).
    Hosts(report_command::HostsArgs),
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

#[path = "coord/cancel.rs"]
mod cancel_command;

#[path = "coord/plan.rs"]
mod plan;

#[path = "coord/logs.rs"]
mod logs_command;
use logs_command::LogsArgs;

#[derive(Args)]
struct PruneArgs {
    /// The flow file whose runs to prune (its name picks them, and its default store).
    flow: PathBuf,
    /// How old a run must be to go, e.g. 30d, 12h.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    older_than: Duration,
    #[command(flatten)]
    store: StoreArgs,
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
    /// The flow file of the run (to check the event names and find its store). Inside a
    /// task leave it out (and the store and run id): the events go to the task's own run.
    flow: PathBuf,
    /// EVENT, EVENT@SEQ or EVENT@FROM..TO (sequence 1 by default).
    #[arg(value_name = "EVENT[@SEQ|@FROM..TO]")]
    events: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
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
    /// name of a DATABASES entry of --config. Default: the flow file's `store:`, the hosts
    /// file's `store:`, the config's default_db, else <flow name>.run.db here.
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
    /// started over SSH; its `store:` is the store unless --store or the flow names one.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// With --mode restart and a --run-id the store already holds: drop that run's stored
    /// history first (without it, such a restart is refused); the run's central log starts
    /// anew.
    #[arg(long)]
    replace: bool,
    /// With --mode recover: recover from this recovery number instead of the latest.
    #[arg(long, value_name = "N")]
    recovery: Option<i32>,
    /// Print only the outcome: no progress, no console log below errors (unless
    /// --log-level says otherwise).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// With --mode recover: run STEP (in sequence SEQ, else in every sequence) again although
    /// it succeeded; what its success triggers follows as usual. Repeatable.
    #[arg(long, value_name = "STEP[@SEQ]")]
    rerun: Vec<String>,
    /// Print the plan and exit 0, touching no store (none is created, nothing written): the
    /// start triggers expanded ("start triggers (N):", one EVENT[SEQ] a line), then under
    /// --mode recover the run it recovers and each task stored before as `skip` or `rerun`
    /// with its stored status (the store is only read), then "steps (N, in the order the
    /// start triggers reach them):", one a line with its host (`prime`, a host, `any of
    /// A,B`) and pools (`NAME:UNITS`, `-` for none), those not reached last, said so.
    #[arg(long)]
    dry_run: bool,
    /// Set the flow's parameter NAME (declared under `params:`) for this run; repeatable.
    /// Every task sees it as an environment variable. Recover and continue keep the run's
    /// stored values unless given here (the new value is then stored).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
}

#[path = "coord/progress.rs"]
mod progress;

#[path = "coord/store.rs"]
mod store_choice;
use store_choice::{StoreArgs, StoreSources};

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
        Command::Logs(args) => logs_command::logs(args, level),
        Command::Cancel(args) => cancel_command::cancel(args, level),
        Command::Prune(args) => prune(args, level),
        Command::Check(args) => check_command::check(args, level),
        Command::Runs(args) => report_command::runs(args, level),
        Command::Status(args) => report_command::status(args, level),
        Command::Hosts(args) => report_command::hosts(args, level),
        Command::Graph(args) => report_command::graph(args, level),
        Command::Serve(args) => report_command::serve(args, level),
    };
    match result {
        Ok(code) => code,
        Err(Failure::BadInput(e)) => {
            say(format_args!("eventor-coord: error: {e:#}"));
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            say(format_args!("eventor-coord: error: {e:#}"));
            ExitCode::from(1)
        }
        Err(Failure::CannotRun(e)) => {
            say(format_args!("eventor-coord: error: {e:#}"));
            ExitCode::from(4)
        }
    }
}

/// Why a command failed: bad input (exit status 2), a failure while running (1), or a run
/// that could not start its work (4: its store unreachable, its log folder unwritable).
enum Failure {
    BadInput(anyhow::Error),
    Run(anyhow::Error),
    CannotRun(anyhow::Error),
}

fn bad<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::BadInput(e.into())
}

/// `--param NAME=VALUE` flags as a map (a later one of a name wins).
fn parse_params(flags: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let split = |flag: &String| match flag.split_once('=') {
        Some((name, value)) => Ok((name.to_string(), value.to_string())),
        None => anyhow::bail!("--param {flag}: expected NAME=VALUE"),
    };
    flags.iter().map(split).collect()
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
            .map(|t| parse_flow_trigger(&flow, t))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(bad)?;
        FlowTriggers::Given(pairs.into_iter().flatten().collect())
    };
    let rerun = parse_reruns(&flow, &args.rerun, mode).map_err(bad)?;
    let sources = StoreSources {
        flag: args.store.as_deref(),
        flow: Some(&flow),
        hosts: hosts.as_ref(),
    };
    let params = parse_params(&args.params).map_err(bad)?;
    if mode == RunMode::Restart {
        // Refused before anything is written (the graph, the store); a recovery's or
        // continue's stored values are known only once its store is open.
        eventor::api::params::resolve(&flow.params, &params, None).map_err(bad)?;
    } else {
        eventor::api::params::check_given(&flow.params, &params).map_err(bad)?;
    }
    if args.dry_run {
        let chosen = sources.for_flow(&config, &flow.name)?;
        return plan::dry_run(&plan::Planned {
            flow: &flow,
            mode,
            triggers: &triggers,
            rerun: &rerun,
            store: &chosen,
            run_id: args.run_id.as_deref(),
            recovery: args.recovery,
        });
    }
    let options = EventorOptions {
        params,
        store: sources.named(&config).map_err(bad)?,
        cluster: hosts.map(|hosts| ClusterOptions {
            hosts,
            lost_after: LinkSettings::default().lost_after,
            script: None,
        }),
        run_id: args.run_id.clone(),
        recovery: args.recovery,
        logdir: Some(logdir_of(args.logdir.clone(), &config)),
        console_output: console_output(),
        run_mode: mode,
        replace_history: args.replace,
        config: config.clone(),
        rerun,
        ..EventorOptions::default()
    };
    let mut eventor = eventor_from_flow(&flow, options, triggers)
        .with_context(|| format!("{}", args.flow.display()))
        .map_err(bad)?;
    // The flow's graph beside the run's log, for `serve`: a fresh run's id is known now; a
    // recovery's or continue's only once its run is found (no graph for an id never used).
    let logdir = logdir_of(args.logdir.clone(), &config);
    let fresh = mode == RunMode::Restart;
    if fresh {
        report_command::save_graph(&flow, &logdir, eventor.run_id());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let interrupt = eventor::Interrupt::new();
    let signals = runtime.block_on(Signals::listen(interrupt.clone()))?;
    eventor.set_interrupt(interrupt.clone());
    let location = eventor.store_location();
    let watched = progress::Watched::of(&flow, location, eventor.run_id(), args.quiet);
    let shown = progress::Progress::start(&runtime, watched);
    let outcome = eventor.run_on(&runtime, args.max_loops);
    shown.finish(&runtime);
    match (fresh, eventor.has_opened()) {
        (false, true) => report_command::save_graph(&flow, &logdir, eventor.run_id()),
        (true, false) => report_command::forget_graph(&flow, &logdir, eventor.run_id()),
        _ => {}
    }
    let cancelled = interrupt.cancelled();
    let outcome = outcome.map_err(|e| match e.kind() {
        eventor::api::ErrorKind::Input => Failure::BadInput(e.into()),
        eventor::api::ErrorKind::Run => Failure::Run(e.into()),
        eventor::api::ErrorKind::CannotRun => Failure::CannotRun(e.into()),
    })?;
    if !args.quiet {
        say(format_args!(
            "eventor-coord: flow {} run {} in {}: {outcome}",
            eventor.name(),
            eventor.run_id(),
            describe(&eventor.store_location())
        ));
    }
    eventor.close();
    print_out(&format!("{outcome}\n"));
    Ok(ExitCode::from(match outcome {
        RunOutcome::Success => 0,
        RunOutcome::Failure { .. } => 1,
        RunOutcome::Incomplete { .. } => 3,
        // 128 + the signal's number, as a shell reports a process it stopped; a cancel
        // through the store as SIGINT; stopped otherwise (its prime lost contact with the
        // store), the run failed.
        RunOutcome::Interrupted { .. } => match signals.first() {
            Some(signal) => 128 + signal,
            None if cancelled => 128 + SIGINT,
            None => 1,
        },
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

fn prune(args: PruneArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let (chosen, _) = args.store.for_flow(&flow, &config)?;
    let location = &chosen.location;
    eventor::check_store_location(location).map_err(bad)?;
    let age = i64::try_from(args.older_than.as_micros()).unwrap_or(i64::MAX);
    let cutoff = eventor_store::now_micros().saturating_sub(age);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    let pruned = runtime.block_on(async {
        let store = chosen.open_existing().await?;
        let pruned = store.prune(Some(&flow.name), cutoff).await;
        pruned.map_err(|e| Failure::Run(anyhow::Error::new(e).context(location.to_string())))
    })?;
    let lines: String = pruned.iter().map(|id| format!("{id}\n")).collect();
    let code = print_out(&lines);
    say(format_args!(
        "eventor-coord: pruned {} run(s) of flow {} in {location}",
        pruned.len(),
        flow.name
    ));
    Ok(code)
}

fn trigger(args: TriggerArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    if let Some(socket) = own_run_socket(&args) {
        return trigger_own_run(&socket, &args);
    }
    if args.events.is_empty() {
        return Err(bad(anyhow::anyhow!(
            "name at least one EVENT[@SEQ|@FROM..TO] after the flow file"
        )));
    }
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let mut wanted = Vec::new();
    for text in &args.events {
        wanted.extend(parse_flow_trigger(&flow, text).map_err(bad)?);
    }
    let (chosen, _) = args.store.for_flow(&flow, &config)?;
    eventor::check_store_location(&chosen.location).map_err(bad)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    runtime.block_on(write_triggers(
        &chosen,
        &flow.name,
        args.run_id.as_deref(),
        wanted,
    ))
}

/// Inside a task (its run's trigger socket in the environment) with no flow file, store or
/// run id given: the socket, and every positional word is an event.
fn own_run_socket(args: &TriggerArgs) -> Option<PathBuf> {
    let socket = std::env::var_os(eventor_agent::trigger_socket::TRIGGER_SOCKET_VAR)?;
    let named_elsewhere = (args.store.store.is_some() || args.store.hosts.is_some())
        || args.run_id.is_some()
        || args.flow.is_file();
    (!named_elsewhere).then(|| PathBuf::from(socket))
}

/// Fires the events in the task's own run, through its trigger socket: exit 0 once the run
/// took every one, 2 naming those it refused (an unknown event, say).
fn trigger_own_run(socket: &Path, args: &TriggerArgs) -> Result<ExitCode, Failure> {
    let words: Vec<String> = std::iter::once(args.flow.to_string_lossy().into_owned())
        .chain(args.events.clone())
        .collect();
    match eventor_agent::trigger_socket::fire_words(socket, &words) {
        Ok(taken) => {
            let lines: String = taken.iter().map(|line| format!("{line}\n")).collect();
            Ok(print_out(&lines))
        }
        Err(error) if error.exit_code() == 2 => Err(bad(error)),
        Err(error) => Err(Failure::Run(error.into())),
    }
}

/// Records the triggers in the run's latest recovery; ones already fired are reported, not
/// written again.
async fn write_triggers(
    chosen: &store_choice::Chosen,
    flow: &str,
    run_id: Option<&str>,
    wanted: Vec<(String, String)>,
) -> Result<ExitCode, Failure> {
    let location = &chosen.location;
    let store = chosen.open_existing().await?;
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
    let fired = eventor::api::fire::record_triggers(&store, run, wanted)
        .await
        .map_err(|e| Failure::Run(e.into()))?;
    let report = fired.into_iter().map(|f| match f.already {
        true => format!("{}[{}] already fired in run {run_id}", f.event, f.sequence),
        false => format!(
            "triggered {}[{}] in run {run_id} recovery {}",
            f.event, f.sequence, run.key.recovery
        ),
    });
    // Only now is it true: the triggers are in the store.
    let lines: String = report.map(|line| format!("{line}\n")).collect();
    Ok(print_out(&lines))
}

/// `--rerun STEP[@SEQ]`s, each naming a step of the flow ("did you mean" otherwise), and only
/// with `--mode recover`.
fn parse_reruns(
    flow: &FlowFile,
    texts: &[String],
    mode: RunMode,
) -> anyhow::Result<Vec<eventor::RerunTask>> {
    if !texts.is_empty() && mode != RunMode::Recover {
        anyhow::bail!("--rerun needs --mode recover (it reruns tasks a recovery would skip)");
    }
    let names = || flow.steps.iter().map(|s| s.name.as_str());
    let parse = |text: &String| {
        let (step, sequence) = match text.split_once('@') {
            Some((step, sequence)) => (step, Some(sequence.to_string())),
            None => (text.as_str(), None),
        };
        if sequence.as_deref() == Some("") {
            anyhow::bail!("--rerun {text}: a sequence after `@`, or none at all");
        }
        if !names().any(|name| name == step) {
            let near = eventor::did_you_mean(step, names());
            let path = flow.path.display();
            anyhow::bail!("--rerun {text}: {path} has no step `{step}`{near}");
        }
        Ok(eventor::RerunTask {
            step: step.to_string(),
            sequence,
        })
    };
    texts.iter().map(parse).collect()
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

/// [`parse_trigger`] of an event the flow declares; an unknown one is refused with the
/// nearest declared name ("did you mean").
fn parse_flow_trigger(flow: &FlowFile, text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let pairs = parse_trigger(text)?;
    if let Some((event, _)) = pairs.first() {
        let names = || flow.events.iter().map(|e| e.name.as_str());
        if !names().any(|name| name == event) {
            let near = eventor::did_you_mean(event, names());
            let path = flow.path.display();
            anyhow::bail!("--trigger {text}: {path} has no event `{event}`{near}");
        }
    }
    Ok(pairs)
}

/// `EVENT`, `EVENT@SEQ` or `EVENT@FROM..TO` into (event, sequence) pairs.
fn parse_trigger(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let pairs = eventor_agent::trigger_socket::parse_spec(text, MAX_RANGE_LEN)
        .map_err(|why| anyhow::anyhow!("--trigger {text}: {why}"))?;
    for (_, sequence) in &pairs {
        eventor::api::names::check_sequence(sequence)
            .map_err(|why| anyhow::anyhow!("--trigger {text}: sequence {sequence:?} {why}"))?;
    }
    Ok(pairs)
}

/// Prints a command's result on stdout. A reader that went away (`| head`) is not an
/// error: what it wanted was printed, so the command ends quietly with exit 0.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say(format_args!(
                "eventor-coord: error: writing the output: {e}"
            ));
            ExitCode::from(1)
        }
    }
}

/// A line on stderr; a closed stderr (`2>&1 | head`) is no reason to panic.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn describe(location: &StoreLocation) -> String {
    location.to_string()
}

/// How `run` shows its tasks' output lines: when the console log would show
/// `eventor::output` at INFO (not with `--quiet`, a level above info, `console: false`, or
/// RUST_LOG turning it off), written directly in the central log's format, batched, through
/// the writer the console log uses (above the progress bar); else not at all.
fn console_output() -> eventor::log::ConsoleOutput {
    use eventor::log::{ConsoleEcho, ConsoleOutput};
    if tracing::enabled!(target: "eventor::output", tracing::Level::INFO) {
        ConsoleOutput::Direct(ConsoleEcho::new(progress::stderr_writer))
    } else {
        ConsoleOutput::Events
    }
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
