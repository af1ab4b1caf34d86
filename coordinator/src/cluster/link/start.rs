//! Starting a link: the agent's channel (an SSH exec, or in-memory pipes in the unit
//! tests), the handshake with the store's answer, the three tasks (`loops.rs`) once it
//! succeeded, and the agent's exit and last stderr lines when it failed.

use std::sync::{Arc, OnceLock};

use eventor_protocol::{
    accept, Accept, FrameLimit, FrameReader, FrameWriter, Hello, Limits, ProtocolError, ToAgent,
    ToCoordinator, Welcome,
};
use eventor_ssh::{ExitStatus, ExitWaiter, Session};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channel::{Channel, Early, ExitWatch, StderrSource};
use super::loops::{forward_stderr, read_loop, write_loop};
use super::{
    describe_exit, describe_ssh_end, Ctx, HostEvent, HostLink, LinkConfig, LinkError, PhaseCell,
    Shared, EXIT_WAIT,
};

/// Agent stderr lines kept for the error message of a failed handshake.
const EARLY_STDERR: usize = 8;

impl HostLink {
    /// Starts the agent on `session` with `config.agent_command`, shakes hands, and starts
    /// the link's tasks; events go to `events`. `shutdown` stops the link at any point,
    /// including during the start. The session is shared: the caller may try again on it.
    pub async fn start(
        session: Arc<Session>,
        config: LinkConfig,
        events: mpsc::Sender<HostEvent>,
        shutdown: CancellationToken,
    ) -> Result<HostLink, LinkError> {
        config.check()?;
        let channel = tokio::select! {
            opened = open_channel(&session, &config) => opened?,
            _ = shutdown.cancelled() => {
                return Err(LinkError::Cancelled { host: config.host_name.clone() });
            }
        };
        Self::start_on(channel, Some(session), config, events, shutdown).await
    }

    /// The handshake and the tasks, over an open channel.
    pub(super) async fn start_on(
        mut channel: Channel,
        session: Option<Arc<Session>>,
        config: LinkConfig,
        events: mpsc::Sender<HostEvent>,
        shutdown: CancellationToken,
    ) -> Result<HostLink, LinkError> {
        config.check()?;
        let host = config.host_name.clone();
        let cancelled = || LinkError::Cancelled { host: host.clone() };
        let mut early = Early::default();
        let handshake = tokio::select! {
            r = handshake(&mut channel, &config, &mut early) => r,
            _ = shutdown.cancelled() => return Err(cancelled()),
        };
        let (hello, welcome) = match handshake {
            Ok(pair) => pair,
            Err(source) => return Err(handshake_error(&config, source, channel, early).await),
        };
        let records = hello
            .capabilities
            .iter()
            .any(|c| c == eventor_agent::RECORDS_RESULTS);
        let granted = welcome.store.is_some();
        if granted {
            let waited = tokio::select! {
                r = store_ready(&mut channel, &config) => r,
                _ = shutdown.cancelled() => return Err(cancelled()),
            };
            if let Err(e) = waited {
                return Err(match e {
                    StoreWait::Protocol(source) => {
                        handshake_error(&config, source, channel, early).await
                    }
                    StoreWait::Agent(e) => e,
                });
            }
        }
        let adopted = if hello
            .capabilities
            .iter()
            .any(|c| c == eventor_protocol::ADOPTED)
        {
            let read = tokio::select! {
                r = adopted_tasks(&mut channel, &config) => r,
                _ = shutdown.cancelled() => return Err(cancelled()),
            };
            match read {
                Ok(tasks) => tasks,
                Err(source) => return Err(handshake_error(&config, source, channel, early).await),
            }
        } else {
            Vec::new()
        };
        tracing::debug!(host = %host, agent = %hello.agent_version, on = %hello.host, adopted = adopted.len(), "agent ready");
        let greeting = Greeting {
            hello,
            accept: welcome.accept,
            records_results: records || granted,
            adopted,
        };
        Ok(Self::spawn(
            session, config, channel, early, greeting, events, &shutdown,
        ))
    }

    /// Starts the reader, writer and stderr tasks of a link past its handshake.
    fn spawn(
        session: Option<Arc<Session>>,
        config: LinkConfig,
        channel: Channel,
        early: Early,
        greeting: Greeting,
        events: mpsc::Sender<HostEvent>,
        shutdown: &CancellationToken,
    ) -> HostLink {
        let shared = Arc::new(Shared {
            host: config.host_name.clone(),
            lost: OnceLock::new(),
            dead: CancellationToken::new(),
            phase: PhaseCell::default(),
            exit: channel.exit.clone(),
        });
        let ctx = Ctx {
            shared: shared.clone(),
            events,
            stop: shutdown.child_token(),
            lost_after: config.settings.lost_after,
        };
        let (outbox, queue) = mpsc::channel(config.settings.outbox);
        let Greeting {
            hello,
            accept,
            records_results,
            adopted,
        } = greeting;
        let lease = config.lease.filter(|_| hello.protocol.has_leases());
        if let Some(lease) = lease {
            // The first frame after the handshake, before any dispatch can be queued.
            let lease_ms = lease.as_millis().try_into().unwrap_or(u64::MAX);
            let _ = outbox.try_send(ToAgent::Lease { lease_ms });
        }
        let stderr_done = CancellationToken::new();
        let reader_done = CancellationToken::new();
        let tracker = TaskTracker::new();
        let Channel {
            reader,
            writer,
            stderr,
            ..
        } = channel;
        tracker.spawn(forward_stderr(
            stderr,
            early,
            ctx.clone(),
            stderr_done.clone(),
        ));
        let done = reader_done.clone();
        let read_ctx = ctx.clone();
        let stderr_read = stderr_done.clone();
        tracker.spawn(async move {
            read_loop(reader, &read_ctx, &stderr_read).await;
            done.cancel();
        });
        tracker.spawn(write_loop(
            writer,
            queue,
            ctx.clone(),
            config.settings.heartbeat,
        ));
        tracker.close();
        HostLink {
            shared,
            hello,
            accept,
            records_results,
            adopted,
            lease: lease.unwrap_or_default(),
            outbox,
            stop: ctx.stop,
            reader_done,
            stderr_done,
            tracker,
            session,
        }
    }
}

/// What the agent said in its start: its hello, our welcome, whether it records ends, and
/// (re-adopted) the attempts it still answers for.
struct Greeting {
    hello: Hello,
    accept: Accept,
    records_results: bool,
    adopted: Vec<eventor_protocol::TaskKey>,
}

/// A re-adopted agent's first message after the store's answer: the attempts it started
/// whose ends no coordinator has read yet.
async fn adopted_tasks(
    channel: &mut Channel,
    config: &LinkConfig,
) -> Result<Vec<eventor_protocol::TaskKey>, ProtocolError> {
    let read = channel.reader.read_frame::<ToCoordinator>();
    let after = config.settings.handshake_timeout;
    let waiting_for = "the re-adopted agent's tasks";
    match tokio::time::timeout(after, read).await {
        Err(_) => Err(ProtocolError::Timeout { waiting_for, after }),
        Ok(Err(error)) => Err(error),
        Ok(Ok(Some(ToCoordinator::Adopted { tasks }))) => Ok(tasks),
        Ok(Ok(_)) => Err(ProtocolError::Closed {
            peer: eventor_protocol::Role::Agent,
            expected: "its adopted tasks",
        }),
    }
}

/// Runs the agent command (bounded by the handshake timeout) and wraps its streams.
async fn open_channel(session: &Session, config: &LinkConfig) -> Result<Channel, LinkError> {
    let host = config.host_name.clone();
    let exec = session.exec(&config.agent_command);
    let mut channel = match tokio::time::timeout(config.settings.handshake_timeout, exec).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(source)) => {
            let source = Box::new(source);
            return Err(LinkError::Exec { host, source });
        }
        Err(_) => {
            let after = config.settings.handshake_timeout;
            return Err(LinkError::ExecTimeout { host, after });
        }
    };
    // The host's env first, for the shell that starts the agent; then the protocol.
    if !config.env_lines.0.is_empty() {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = channel.stdin.write_all(config.env_lines.0.as_bytes()).await {
            return Err(LinkError::EnvNotSent { host, source: e });
        }
    }
    Ok(Channel {
        reader: FrameReader::new(Box::new(channel.stdout)),
        writer: FrameWriter::new(Box::new(channel.stdin)),
        stderr: StderrSource::Ssh(channel.stderr),
        exit: watch_exit(channel.exit),
    })
}

/// The exit status as a watch, so the reader and `join` can both look at it.
fn watch_exit(exit: ExitWaiter) -> ExitWatch {
    let (tx, rx) = watch::channel(None);
    // Ends with the channel (or the session) at the latest.
    tokio::spawn(async move {
        let status = exit.wait().await.map_err(|e| describe_ssh_end(&e));
        let _ = tx.send(Some(status));
    });
    rx
}

/// The coordinator's side of the handshake, collecting the agent's stderr meanwhile
/// (it usually explains a failure).
async fn handshake(
    channel: &mut Channel,
    config: &LinkConfig,
    early: &mut Early,
) -> Result<(Hello, Welcome), ProtocolError> {
    let decide = |hello: &Hello| {
        check_version(hello, config)?;
        Ok(Welcome {
            accept: accept_for(config),
            store: config.store.clone(),
            tls: config.store_tls.clone(),
        })
    };
    let exchange = accept(
        &mut channel.reader,
        &mut channel.writer,
        config.settings.handshake_timeout,
        decide,
    );
    tokio::pin!(exchange);
    let mut stderr_open = true;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            line = channel.stderr.next_line(), if stderr_open => match line {
                Some(line) => early.push(line),
                None => stderr_open = false,
            },
        }
    }
}

/// An agent of another version is refused when the config asks for this prime's own
/// ([`LinkConfig::same_version`]) and it is not a re-adopted one; else it is only noted.
pub(super) fn check_version(hello: &Hello, config: &LinkConfig) -> Result<(), String> {
    let ours = env!("CARGO_PKG_VERSION");
    if hello.agent_version == ours {
        return Ok(());
    }
    let adopted = hello
        .capabilities
        .iter()
        .any(|c| c == eventor_protocol::ADOPTED);
    if config.same_version && !adopted {
        return Err(format!(
            "the agent is version {}, this prime {ours}: deploy: auto runs the prime's own \
             (install eventor-agent {ours} next to the prime, or set deploy: never to use \
             this one)",
            hello.agent_version
        ));
    }
    tracing::warn!(host = %config.host_name, agent = %hello.agent_version,
        coordinator = ours, adopted, "agent is of another build");
    Ok(())
}

fn accept_for(config: &LinkConfig) -> Accept {
    Accept {
        run_id: config.run_id.clone(),
        host: config.host_name.clone(),
        heartbeat_interval_ms: u64::try_from(config.settings.heartbeat.as_millis())
            .unwrap_or(u64::MAX),
        limits: Limits {
            max_frame_bytes: FrameLimit::DEFAULT.bytes(),
            max_concurrent_tasks: config.max_concurrent_tasks.to_wire(),
        },
    }
}

/// Why the agent's answer to the store it was sent is not `StoreReady`.
enum StoreWait {
    Protocol(ProtocolError),
    Agent(LinkError),
}

/// Waits (within the handshake timeout) for the agent's answer to the store it was sent:
/// `StoreReady`, or an `Error` saying why it cannot record results (then it takes no work).
async fn store_ready(channel: &mut Channel, config: &LinkConfig) -> Result<(), StoreWait> {
    let host = config.host_name.clone();
    let read = channel.reader.read_frame::<ToCoordinator>();
    let frame = match tokio::time::timeout(config.settings.handshake_timeout, read).await {
        Ok(frame) => frame.map_err(StoreWait::Protocol)?,
        Err(_) => {
            return Err(StoreWait::Protocol(ProtocolError::Timeout {
                waiting_for: "the agent's answer to the store",
                after: config.settings.handshake_timeout,
            }))
        }
    };
    match frame {
        Some(ToCoordinator::StoreReady) => Ok(()),
        Some(ToCoordinator::Error { message, .. }) => {
            Err(StoreWait::Agent(LinkError::AgentStore { host, message }))
        }
        Some(other) => Err(StoreWait::Agent(LinkError::AgentStore {
            host,
            message: format!(
                "the agent answered the store with an unexpected {} message",
                frame_name(&other)
            ),
        })),
        None => Err(StoreWait::Protocol(ProtocolError::Closed {
            peer: eventor_protocol::Role::Agent,
            expected: "its answer to the store",
        })),
    }
}

/// The handshake error, with the agent's exit status and last stderr lines when they come
/// within a second.
async fn handshake_error(
    config: &LinkConfig,
    source: ProtocolError,
    mut channel: Channel,
    mut early: Early,
) -> LinkError {
    // The agent may still be running (a wedged one): stop feeding it, then look briefly.
    drop(channel.writer);
    let _ = tokio::time::timeout(EXIT_WAIT, async {
        while let Some(line) = channel.stderr.next_line().await {
            early.push(line);
        }
    })
    .await;
    let status = tokio::time::timeout(EXIT_WAIT, channel.exit.wait_for(Option::is_some)).await;
    let mut detail = String::new();
    let mut exit_code = None;
    if let Ok(Ok(status)) = status {
        if let Some(status) = status.as_ref() {
            detail.push_str(&format!(" ({})", describe_exit(status)));
            if let Ok(ExitStatus::Code(code)) = status {
                exit_code = Some(*code);
            }
        }
    }
    let keep = early.0.len().saturating_sub(EARLY_STDERR);
    let last: Vec<&str> = early.0.iter().skip(keep).map(String::as_str).collect();
    if !last.is_empty() {
        detail.push_str(&format!("; agent stderr: {}", last.join(" | ")));
    }
    LinkError::Handshake {
        host: config.host_name.clone(),
        detail,
        exit_code,
        source,
    }
}

/// A frame's kind, for a message about one that came out of turn (never its `Debug`).
fn frame_name(frame: &ToCoordinator) -> &'static str {
    match frame {
        ToCoordinator::TaskStarted { .. } => "TaskStarted",
        ToCoordinator::TaskFinished { .. } => "TaskFinished",
        ToCoordinator::Log(_) => "Log",
        ToCoordinator::Heartbeat(_) => "Heartbeat",
        ToCoordinator::Error { .. } => "Error",
        ToCoordinator::StoreReady => "StoreReady",
        ToCoordinator::Output(_) => "Output",
        ToCoordinator::TaskRan { .. } => "TaskRan",
        ToCoordinator::Adopted { .. } => "Adopted",
        ToCoordinator::Trigger { .. } => "Trigger",
        ToCoordinator::StatusAsk { .. } => "StatusAsk",
    }
}
