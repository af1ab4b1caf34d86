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
        tracing::debug!(host = %host, agent = %hello.agent_version, on = %hello.host, "agent ready");
        let greeting = (hello, welcome.accept, records || granted);
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
        (hello, accept, records_results): (Hello, Accept, bool),
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
        tracker.spawn(async move {
            read_loop(reader, &read_ctx, &stderr_done).await;
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
            lease: lease.unwrap_or_default(),
            outbox,
            stop: ctx.stop,
            reader_done,
            tracker,
            session,
        }
    }
}

/// Runs the agent command (bounded by the handshake timeout) and wraps its streams.
async fn open_channel(session: &Session, config: &LinkConfig) -> Result<Channel, LinkError> {
    let host = config.host_name.clone();
    let exec = session.exec(&config.agent_command);
    let channel = match tokio::time::timeout(config.settings.handshake_timeout, exec).await {
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
        Ok(Welcome {
            accept: accept_for(hello, config),
            store: config.store.clone(),
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

fn accept_for(hello: &Hello, config: &LinkConfig) -> Accept {
    if hello.agent_version != env!("CARGO_PKG_VERSION") {
        tracing::warn!(host = %config.host_name, agent = %hello.agent_version,
            coordinator = env!("CARGO_PKG_VERSION"), "agent is of another build");
    }
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
            message: format!("the agent answered the store with {other:?}"),
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
