//! `eventor-agent`: runs on a cluster host and executes the steps the prime coordinator sends
//! it, speaking the eventor protocol on stdin and stdout (see `eventor_agent::runtime`).
//!
//! Stdout carries frames and nothing else; the agent's own diagnostics go to stderr, which
//! the prime may collect from the SSH channel.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use eventor_agent::{self as agent, AgentOptions, AgentSummary, MaxConcurrent};
use eventor_store::StoreLocation;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Runs the tasks a prime coordinator sends on stdin; answers on stdout.
#[derive(Debug, Parser)]
#[command(
    name = "eventor-agent",
    version,
    after_help = "The prime coordinator starts the agent over SSH; it is not meant to be run by \
                  hand.\nExit status: 0 a clean end (the coordinator said shutdown or went away), \
                  1 the handshake failed or the channel broke, 2 bad flags."
)]
struct Cli {
    /// The shared store in which the agent records each task's final status
    /// (`postgres://…`, `sqlite:PATH` or a path); without it the coordinator records them.
    /// A coordinator of protocol 1.1 sends its store (password included) in the handshake,
    /// which replaces this; put no password here (`ps` shows command lines to everyone):
    /// use `PGPASSWORD` or `~/.pgpass`.
    #[arg(
        long,
        value_name = "URL",
        env = "EVENTOR_AGENT_STORE",
        hide_env_values = true,
        value_parser = StoreLocation::parse
    )]
    store: Option<StoreLocation>,

    /// The host name told to the coordinator [default: this machine's].
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,

    /// Most tasks running at once (the coordinator's own limit applies too).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent: Option<u32>,

    /// How long a stopped command's process group gets between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,

    /// How long to wait for the coordinator's answer to the agent's hello.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
}

impl Cli {
    fn options(self) -> AgentOptions {
        let defaults = AgentOptions::default();
        AgentOptions {
            host_name: self.host_name.unwrap_or(defaults.host_name),
            store: self.store,
            max_concurrent: MaxConcurrent::at_most(self.max_concurrent.unwrap_or(0) as usize),
            kill_grace: self.kill_grace,
            handshake_timeout: self.handshake_timeout,
            ..defaults
        }
    }
}

fn main() -> ExitCode {
    // First: a process started as a command's supervisor supervises and exits here.
    agent::supervisor::supervise_commands();
    // Inside a task on this host: `eventor-agent trigger EVENT…` fires events in its run.
    match std::env::args().nth(1).as_deref() {
        Some("trigger") => return trigger(std::env::args().skip(2).collect()),
        Some("status") => return status(),
        _ => {}
    }
    let cli = Cli::parse();
    // Before any thread: no task may inherit the name of the socket it was started for.
    let resume = std::env::var(agent::adopt::RESUME_VAR).ok();
    std::env::remove_var(agent::adopt::RESUME_VAR);
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::Error::new(error).context("cannot start the runtime")),
    };
    let result = runtime.block_on(run(cli.options(), resume));
    // Stdin is read on a blocking thread that may still wait for bytes that never come
    // (the prime keeps its end open after `Shutdown`): do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(Some(summary)) => {
            report(&summary);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

/// Serves the prime, or (`resume` names a survivor's socket and one is alive there) only
/// carries bytes between the prime and that survivor: `None`.
async fn run(
    options: AgentOptions,
    resume: Option<String>,
) -> anyhow::Result<Option<AgentSummary>> {
    let (reader, writer) = agent::stdio::prime_channel();
    if let Some(survivor) = agent::adopt::find_survivor(resume.as_deref()).await {
        tracing::debug!("an agent of this run survives here: bridging the coordinator to it");
        agent::adopt::bridge(reader, writer, survivor)
            .await
            .context("eventor-agent: bridging to the surviving agent")?;
        return Ok(None);
    }
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone())?;
    let summary = agent::serve(reader, writer, options, shutdown)
        .await
        .context("eventor-agent")?;
    Ok(Some(summary))
}

/// SIGTERM, SIGINT and SIGHUP stop the agent cleanly: its commands' process groups are
/// stopped and their ends recorded, rather than left running when the agent dies.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    let kinds = [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
    ];
    for (kind, name) in kinds {
        let mut signals = signal(kind).with_context(|| format!("cannot watch {name}"))?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if signals.recv().await.is_some() {
                tracing::warn!("{name}: stopping the running tasks");
                shutdown.cancel();
            }
        });
    }
    Ok(())
}

fn report(summary: &AgentSummary) {
    tracing::info!(
        run_id = %summary.run_id,
        host = %summary.host,
        end = %summary.end,
        succeeded = summary.succeeded,
        failed = summary.failed,
        cancelled = summary.cancelled,
        timed_out = summary.timed_out,
        unrecorded = summary.unrecorded,
        output_lines_dropped = summary.output_lines_dropped,
        "agent done"
    );
}

/// `eventor-agent trigger EVENT[@SEQ|@FROM..TO]…`, for a task's command on a host that has
/// no `eventor-coord`: the events fire in the task's own run (through the agent's trigger
/// socket, named in the task's environment).
fn trigger(words: Vec<String>) -> ExitCode {
    use agent::trigger_socket::{fire_words, TRIGGER_SOCKET_VAR};
    let Some(socket) = std::env::var_os(TRIGGER_SOCKET_VAR) else {
        let _ = writeln!(
            std::io::stderr(),
            "eventor-agent trigger: not inside a task ({TRIGGER_SOCKET_VAR} is not set)"
        );
        return ExitCode::from(2);
    };
    if words.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "eventor-agent trigger: name at least one EVENT[@SEQ|@FROM..TO]"
        );
        return ExitCode::from(2);
    }
    match fire_words(std::path::Path::new(&socket), &words) {
        Ok(taken) => {
            for line in taken {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "eventor-agent trigger: {}",
                agent::util::error_chain(&error)
            );
            ExitCode::from(error.exit_code())
        }
    }
}

/// `eventor-agent status`: the task's own run's status as JSON (as `eventor-coord status
/// --json` prints it), for a task's command on a host that has no `eventor-coord`.
fn status() -> ExitCode {
    use agent::trigger_socket::{status, TRIGGER_SOCKET_VAR};
    let Some(socket) = std::env::var_os(TRIGGER_SOCKET_VAR) else {
        let _ = writeln!(
            std::io::stderr(),
            "eventor-agent status: not inside a task ({TRIGGER_SOCKET_VAR} is not set)"
        );
        return ExitCode::from(2);
    };
    match status(std::path::Path::new(&socket)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(why)) => {
            let _ = writeln!(
                std::io::stderr(),
                "eventor-agent status: the run cannot say its status: {why}"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "eventor-agent status: cannot reach the task's run: {error}"
            );
            ExitCode::FAILURE
        }
    }
}

fn fail(error: anyhow::Error) -> ExitCode {
    // Not `eprintln!`: a closed stderr must not turn a clean error into a panic.
    let _ = writeln!(std::io::stderr(), "{error:#}");
    ExitCode::FAILURE
}

/// On a terminal, lines as any program's; otherwise (a prime reads them) `LEVEL message
/// fields` with no time of their own: the prime stamps each line as it reads it and takes
/// its level from the first word, so its console shows one line with one timestamp.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logging = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false)
        // A closed stderr must not make logging panic inside a task.
        .log_internal_errors(false);
    match terminal {
        true => logging.init(),
        false => logging.without_time().init(),
    }
}
