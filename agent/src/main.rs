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
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::Error::new(error).context("cannot start the runtime")),
    };
    let result = runtime.block_on(run(cli.options()));
    // Stdin is read on a blocking thread that may still wait for bytes that never come
    // (the prime keeps its end open after `Shutdown`): do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(summary) => {
            report(&summary);
            ExitCode::SUCCESS
        }
        Err(error) => fail(error),
    }
}

async fn run(options: AgentOptions) -> anyhow::Result<AgentSummary> {
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone())?;
    let (reader, writer) = agent::stdio::prime_channel();
    let summary = agent::serve(reader, writer, options, shutdown)
        .await
        .context("eventor-agent")?;
    Ok(summary)
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
        end = ?summary.end,
        succeeded = summary.succeeded,
        failed = summary.failed,
        cancelled = summary.cancelled,
        timed_out = summary.timed_out,
        unrecorded = summary.unrecorded,
        output_lines_dropped = summary.output_lines_dropped,
        "agent done"
    );
}

fn fail(error: anyhow::Error) -> ExitCode {
    // Not `eprintln!`: a closed stderr must not turn a clean error into a panic.
    let _ = writeln!(std::io::stderr(), "{error:#}");
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // A closed stderr must not make logging panic inside a task.
        .log_internal_errors(false)
        .init();
}
