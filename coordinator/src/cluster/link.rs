//! One cluster host's live connection: the agent started over SSH, the protocol spoken
//! with it, and every way that conversation can end.
//!
//! # Shape
//!
//! [`HostLink::start`] takes an open [`Session`], runs the agent command in an exec
//! channel and holds the coordinator's side of the handshake
//! ([`eventor_protocol::accept`]): the agent says hello, and the link answers with the run
//! id, the host's cluster name, the heartbeat interval and the limits, and (protocol 1.1)
//! the store the agent records in, password included: credentials travel only over this
//! channel, never on the agent's command line ([`LinkConfig::store`]). The link then waits
//! for the agent's `StoreReady` (or its `Error`, which fails the start with
//! [`LinkError::AgentStore`]) before anything is dispatched. Then three tasks
//! (in a [`TaskTracker`]) carry the conversation:
//!
//! - the **reader** turns the agent's frames into [`HostEvent`]s on the caller's channel;
//! - the **writer** drains a bounded queue of [`ToAgent`] messages (filled by
//!   [`HostLink::dispatch`], [`cancel`](HostLink::cancel) and
//!   [`shutdown`](HostLink::shutdown)), writing bursts as one flush, and sends a heartbeat
//!   whenever it has sent nothing for the interval;
//! - the **stderr forwarder** turns the agent's standard error into `Log` events with
//!   stream `Agent`, so an agent that dies still gets its last words into the run's log.
//!
//! Every queue is bounded. A slow engine makes the reader wait on the event channel,
//! which stops it reading, which fills the SSH window, which slows the agent: pressure
//! travels back to the source instead of piling up in memory. Likewise `dispatch` waits
//! while the writer is behind.
//!
//! One rule follows for the caller: **keep taking events while a `dispatch` waits** (select
//! over both). An engine that stops reading events until its dispatch gets through can
//! close a loop (its dispatch waits on the agent, the agent waits to send its output, our
//! reader waits on the engine); the writer's stall bound then ends it as a loss, never a
//! hang, but a loss all the same.
//!
//! # Liveness
//!
//! Each end sends a heartbeat when it has been quiet for the interval, so an agent that
//! is alive produces *some* frame at least every interval. The reader waits for each frame
//! at most `lost_after` (5 s by default, at most 10 s); a longer silence ends the link as
//! [`HostEvent::Lost`] with the reason "no heartbeat for 5s". The clock runs only while
//! the reader is actually waiting on the network, not while it waits for the engine to
//! take an event, so a busy coordinator cannot mistake its own slowness for a dead host.
//! This is what catches a host that vanished without a word (a cut cable, a frozen VM):
//! TCP would notice only after minutes.
//!
//! The other ends are noticed at once: the agent's output ending between frames (the
//! agent exited, was killed, or the SSH connection died; the reason says which, from the
//! channel's exit status when it arrives within a second), a torn frame, a header that
//! is not ours, or a failed or stalled write (bounded by `lost_after` as well). Each is
//! `Lost` with its reason. `Lost` is sent once, and is the link's last event; after it,
//! `dispatch` fails with [`LinkError::Lost`]. The tasks the agent was running are then
//! of unknown outcome, which is what recovery is for.
//!
//! An end of output after our own `Shutdown` is the normal end and sends no event;
//! [`HostLink::join`] reports it as [`LinkEnd::Clean`].
//!
//! # Never a hang
//!
//! Every wait on the network is bounded or cancellable: `exec` and the handshake by
//! `handshake_timeout`, each read by `lost_after`, each write by `lost_after`, closing
//! the session by a second, and all of them by the `shutdown` token passed to `start`
//! (the link's own token is a child of it, cancelled by `join` and by dropping the link).
//! Sends on the event channel wait for the engine but are cancellable the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventor_protocol::{
    accept, Accept, Dispatch, FrameLimit, FrameReader, FrameWriter, Heartbeat, Hello, Limits,
    LogLevel, LogRecord, OutputBatch, ProtocolError, StoreAccess, Stream, TaskKey, ToAgent,
    ToCoordinator, Welcome,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deploy::{self, DeployError, DeployPlan, LocalAgent};
use super::hosts::{Deploy, HostSpec, HostsFile, StoreVia};
use super::store_tunnel::{self, TunnelError};
use eventor_agent::util::error_chain;
use eventor_agent::MaxConcurrent;
use eventor_ssh::{
    self as ssh, ClientSettings, ExecStderr, ExitStatus, ExitWaiter, Session, SshConfig, SshError,
};
use eventor_store::now_micros;

/// `lost_after` may not exceed this: a dead host must not stall a run for long (and agents
/// wait longer than this on a silent prime).
pub const MAX_LOST_AFTER: Duration = eventor_protocol::MAX_LOST_AFTER;
/// How long the reader waits for the exit status (and the last stderr lines) after the
/// agent's output ends, to say why it ended.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// Bound on saying goodbye to the SSH server when the link ends.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Messages written in one flush at most.
const WRITE_BATCH: usize = 64;
/// Agent stderr lines kept for the error message of a failed handshake.
const EARLY_STDERR: usize = 8;
/// Agent stderr lines kept from before the handshake ends (the oldest go first).
const EARLY_LINES: usize = 256;

/// Settings of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The host's cluster name: in the handshake, in every event and log record.
    pub host_name: String,
    /// The remote shell command that starts the agent (see [`HostSpec::agent_command`]).
    pub agent_command: String,
    /// The run the agent serves.
    pub run_id: String,
    /// Each end sends a heartbeat after this long without sending anything.
    pub heartbeat: Duration,
    /// Silence from the agent for this long means the host is lost (at most 10 s).
    pub lost_after: Duration,
    /// Bound on starting the agent and on its hello.
    pub handshake_timeout: Duration,
    /// Told to the agent in the handshake: the host's own limit, if it has one.
    pub max_concurrent_tasks: MaxConcurrent,
    /// Messages queued for the writer before `dispatch` waits.
    pub outbox: usize,
    /// The store the agent records each task's end in, password included, sent in the
    /// handshake (`Debug` masks the password); `None`: the agent has its own or none.
    pub store: Option<StoreAccess>,
}

impl LinkConfig {
    /// A config with the defaults: heartbeat 1 s, lost after 5 s, handshake within 10 s.
    pub fn new(
        host_name: impl Into<String>,
        agent_command: impl Into<String>,
        run_id: impl Into<String>,
    ) -> LinkConfig {
        LinkConfig {
            host_name: host_name.into(),
            agent_command: agent_command.into(),
            run_id: run_id.into(),
            heartbeat: Duration::from_secs(1),
            lost_after: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_tasks: MaxConcurrent::UNLIMITED,
            outbox: 256,
            store: None,
        }
    }

    fn check(&self) -> Result<(), LinkError> {
        let bad = |message: String| {
            Err(LinkError::Config {
                host: self.host_name.clone(),
                message,
            })
        };
        if self.heartbeat.is_zero() || self.handshake_timeout.is_zero() || self.outbox == 0 {
            return bad("heartbeat, handshake_timeout and outbox must be above zero".into());
        }
        if self.lost_after > MAX_LOST_AFTER || self.lost_after <= self.heartbeat {
            return bad(format!(
                "lost_after must be longer than the heartbeat ({}) and at most {}, found {}",
                show(self.heartbeat),
                show(MAX_LOST_AFTER),
                show(self.lost_after)
            ));
        }
        Ok(())
    }
}

/// What a link tells the engine. Closed: every message of the agent maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// A dispatched task is running, as process `pid` on the host.
    Started {
        host: String,
        key: TaskKey,
        pid: u32,
    },
    /// A task's work is over on the host (its slot there is free); `Finished` follows.
    Ran { host: String, key: TaskKey },
    /// A task ended; the last event about its key.
    Finished {
        host: String,
        key: TaskKey,
        status: eventor_protocol::Outcome,
        exit_code: Option<i32>,
        result: Option<String>,
        error: Option<String>,
    },
    /// A line of a task's output, or of the agent's own logging (its stderr included).
    Log { host: String, record: LogRecord },
    /// Lines of a task's output, read together on the host.
    Output { host: String, batch: OutputBatch },
    /// The link is gone (see the module docs for the reasons); its last event.
    Lost { host: String, reason: String },
    /// The agent reported a problem outside a task's own run (`key`: the task it
    /// concerns, e.g. a dispatch it could not start), or sent a frame we cannot decode.
    AgentError {
        host: String,
        key: Option<TaskKey>,
        message: String,
    },
}

impl HostEvent {
    /// The host the event is about.
    pub fn host(&self) -> &str {
        match self {
            HostEvent::Started { host, .. }
            | HostEvent::Ran { host, .. }
            | HostEvent::Finished { host, .. }
            | HostEvent::Log { host, .. }
            | HostEvent::Output { host, .. }
            | HostEvent::Lost { host, .. }
            | HostEvent::AgentError { host, .. } => host,
        }
    }
}

/// How a link ended, from [`HostLink::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The agent closed its end after our shutdown; its exit status, if it came in time.
    Clean { exit: Option<ExitStatus> },
    /// The link was lost (the same reason as the `Lost` event).
    Lost { reason: String },
    /// The agent had not finished within the grace period; the link was cut.
    Abandoned { after: Duration },
}

/// Why a link could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{host}: bad link settings: {message}")]
    Config { host: String, message: String },
    #[error("{host}: not in the hosts file")]
    UnknownHost { host: String },
    #[error("{host}: loading the ssh config")]
    SshConfig {
        host: String,
        #[source]
        source: Arc<SshError>,
    },
    #[error("{host}: connecting")]
    Connect {
        host: String,
        #[source]
        source: Box<SshError>,
    },
    #[error("{host}: starting the agent")]
    Exec {
        host: String,
        #[source]
        source: Box<SshError>,
    },
    #[error("{host}: starting the agent timed out after {}", show(*after))]
    ExecTimeout { host: String, after: Duration },
    #[error("{host}: agent handshake failed{detail}")]
    Handshake {
        host: String,
        /// The agent's exit and last stderr lines, when there are any (they usually say
        /// why: a missing binary, a wrong flag).
        detail: String,
        /// The command's exit code, when it exited before the handshake.
        exit_code: Option<u32>,
        #[source]
        source: ProtocolError,
    },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("{host}: the agent cannot open the store: {message}")]
    AgentStore { host: String, message: String },
    #[error("{host}: cancelled")]
    Cancelled { host: String },
    #[error("{host}: link lost: {reason}")]
    Lost { host: String, reason: String },
    #[error("{host}: link is shutting down")]
    Closed { host: String },
}

/// State the link's tasks and its handle share.
#[derive(Debug)]
struct Shared {
    host: String,
    /// The reason, once lost; set once.
    lost: OnceLock<String>,
    /// Cancelled the moment the link is lost, before `Lost` is sent: it releases a
    /// `dispatch` waiting for room (whose caller may be the one that has to read `Lost`)
    /// and stops other events from following `Lost`.
    dead: CancellationToken,
    /// `shutdown` was called: no more dispatches.
    closing: AtomicBool,
    /// We wrote `Shutdown`: the agent's end of output is expected now.
    shutting_down: AtomicBool,
    /// The reader saw the agent's output end after our shutdown.
    clean_end: AtomicBool,
    /// The channel's exit status, when it has come.
    exit: ExitWatch,
}

/// What every task of a link needs.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    events: mpsc::Sender<HostEvent>,
    /// The link's token: a child of the caller's shutdown token.
    stop: CancellationToken,
    lost_after: Duration,
}

impl Ctx {
    fn host(&self) -> String {
        self.shared.host.clone()
    }

    /// Sends `event` unless the link is stopped or lost; `false` if it was not sent.
    async fn emit(&self, event: HostEvent) -> bool {
        tokio::select! {
            biased;
            _ = self.shared.dead.cancelled() => false,
            _ = self.stop.cancelled() => false,
            sent = self.events.send(event) => sent.is_ok(),
        }
    }

    /// Marks the link lost (once), tells the engine, and stops the other tasks.
    async fn lose(&self, reason: String) {
        if self.shared.lost.set(reason.clone()).is_err() {
            return;
        }
        self.shared.dead.cancel();
        tracing::warn!(host = %self.shared.host, "link lost: {reason}");
        let host = self.host();
        tokio::select! {
            _ = self.events.send(HostEvent::Lost { host, reason }) => {}
            _ = self.stop.cancelled() => {}
        }
        self.stop.cancel();
    }
}

/// A live link to one host's agent. Dropping it cuts the link (the agent sees its input
/// end and exits); [`shutdown`](Self::shutdown) then [`join`](Self::join) ends it politely.
#[derive(Debug)]
pub struct HostLink {
    shared: Arc<Shared>,
    hello: Hello,
    accept: Accept,
    /// The agent records each task's end in the store before reporting it.
    records_results: bool,
    outbox: mpsc::Sender<ToAgent>,
    stop: CancellationToken,
    reader_done: CancellationToken,
    tracker: TaskTracker,
    session: Option<Arc<Session>>,
}

impl Drop for HostLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
type ExitWatch = watch::Receiver<Option<Result<ExitStatus, String>>>;

/// The agent's streams, as the link uses them: boxed, so the link's tasks are the same
/// over an SSH channel and over the in-memory pipes of the unit tests.
struct Channel {
    reader: FrameReader<BoxRead>,
    writer: FrameWriter<BoxWrite>,
    stderr: StderrSource,
    exit: ExitWatch,
}

/// Where the agent's stderr lines come from.
enum StderrSource {
    Ssh(ExecStderr),
    #[cfg(test)]
    Lines(mpsc::Receiver<String>),
}

impl StderrSource {
    async fn next_line(&mut self) -> Option<String> {
        match self {
            StderrSource::Ssh(stderr) => stderr.next_line().await,
            #[cfg(test)]
            StderrSource::Lines(lines) => lines.recv().await,
        }
    }

    fn dropped_lines(&self) -> u64 {
        match self {
            StderrSource::Ssh(stderr) => stderr.dropped_lines(),
            #[cfg(test)]
            StderrSource::Lines(_) => 0,
        }
    }
}

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
    async fn start_on(
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
            closing: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            clean_end: AtomicBool::new(false),
            exit: channel.exit.clone(),
        });
        let ctx = Ctx {
            shared: shared.clone(),
            events,
            stop: shutdown.child_token(),
            lost_after: config.lost_after,
        };
        let (outbox, queue) = mpsc::channel(config.outbox);
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
        tracker.spawn(write_loop(writer, queue, ctx.clone(), config.heartbeat));
        tracker.close();
        HostLink {
            shared,
            hello,
            accept,
            records_results,
            outbox,
            stop: ctx.stop,
            reader_done,
            tracker,
            session,
        }
    }

    /// The host's cluster name.
    pub fn host(&self) -> &str {
        &self.shared.host
    }

    /// The agent's hello: its version, the host name it sees, its capabilities.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// What the agent was told in the handshake.
    pub fn accepted(&self) -> &Accept {
        &self.accept
    }

    /// Whether the agent records each task's end in the store before reporting it (it
    /// opened the store sent in the handshake, or says it has one of its own).
    pub fn records_results(&self) -> bool {
        self.records_results
    }

    /// The reason, once the link is lost.
    pub fn lost(&self) -> Option<&str> {
        self.shared.lost.get().map(String::as_str)
    }

    /// Asks the agent to run a task. Waits while the writer is behind (bounded: the writer
    /// gives up on a stalled channel after `lost_after`).
    pub async fn dispatch(&self, dispatch: Dispatch) -> Result<(), LinkError> {
        self.send(ToAgent::Dispatch(dispatch)).await
    }

    /// Asks the agent to stop a task; its `Finished { status: Cancelled }` is the answer.
    pub async fn cancel(&self, key: TaskKey) -> Result<(), LinkError> {
        self.send(ToAgent::Cancel { key }).await
    }

    /// Asks the agent to stop every task and exit; it reports each stopped task as usual,
    /// then closes its end. No dispatch is accepted afterwards. Follow with `join`.
    pub async fn shutdown(&self, reason: impl Into<String>) -> Result<(), LinkError> {
        let reason = reason.into();
        self.usable()?;
        self.shared.closing.store(true, Ordering::Relaxed);
        self.send_now(ToAgent::Shutdown { reason }).await
    }

    async fn send(&self, message: ToAgent) -> Result<(), LinkError> {
        self.usable()?;
        self.send_now(message).await
    }

    async fn send_now(&self, message: ToAgent) -> Result<(), LinkError> {
        tokio::select! {
            sent = self.outbox.send(message) => sent.map_err(|_| self.gone()),
            _ = self.stop.cancelled() => Err(self.gone()),
            _ = self.shared.dead.cancelled() => Err(self.gone()),
        }
    }

    fn usable(&self) -> Result<(), LinkError> {
        if self.shared.lost.get().is_some() || self.stop.is_cancelled() {
            return Err(self.gone());
        }
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(LinkError::Closed {
                host: self.shared.host.clone(),
            });
        }
        Ok(())
    }

    fn gone(&self) -> LinkError {
        let host = self.shared.host.clone();
        match self.shared.lost.get() {
            Some(reason) => LinkError::Lost {
                host,
                reason: reason.clone(),
            },
            None => LinkError::Closed { host },
        }
    }

    /// Waits up to `grace` for the agent to close its end (after [`shutdown`](Self::shutdown),
    /// or a loss), then stops the link's tasks, closes the SSH session and says how the
    /// link ended. Events still queued on the way to the engine are delivered first only
    /// if the engine keeps reading.
    pub async fn join(mut self, grace: Duration) -> LinkEnd {
        let finished = tokio::time::timeout(grace, self.reader_done.cancelled())
            .await
            .is_ok();
        let end = self.end(finished, grace).await;
        self.stop.cancel();
        self.tracker.wait().await;
        if let Some(session) = self.session.take().and_then(|s| Arc::try_unwrap(s).ok()) {
            let _ = tokio::time::timeout(CLOSE_WAIT, session.close()).await;
        }
        end
    }

    /// How the link ended, with the exit status of a clean end (read before the session
    /// closes, which would turn a late status into "connection lost").
    async fn end(&self, finished: bool, grace: Duration) -> LinkEnd {
        if let Some(reason) = self.shared.lost.get() {
            return LinkEnd::Lost {
                reason: reason.clone(),
            };
        }
        if !finished || !self.shared.clean_end.load(Ordering::Relaxed) {
            return LinkEnd::Abandoned { after: grace };
        }
        let mut exit = self.shared.exit.clone();
        let status = tokio::time::timeout(EXIT_WAIT, exit.wait_for(Option::is_some)).await;
        let exit = status
            .ok()
            .and_then(|r| r.ok().and_then(|s| s.clone()))
            .and_then(Result::ok);
        LinkEnd::Clean { exit }
    }
}

/// Runs the agent command (bounded by the handshake timeout) and wraps its streams.
async fn open_channel(session: &Session, config: &LinkConfig) -> Result<Channel, LinkError> {
    let host = config.host_name.clone();
    let exec = session.exec(&config.agent_command);
    let channel = match tokio::time::timeout(config.handshake_timeout, exec).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(source)) => {
            let source = Box::new(source);
            return Err(LinkError::Exec { host, source });
        }
        Err(_) => {
            let after = config.handshake_timeout;
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

/// The agent's stderr lines from before the handshake ended: the last [`EARLY_LINES`].
#[derive(Debug, Default)]
struct Early(std::collections::VecDeque<String>);

impl Early {
    fn push(&mut self, line: String) {
        if self.0.len() == EARLY_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }
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
        config.handshake_timeout,
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
        heartbeat_interval_ms: u64::try_from(config.heartbeat.as_millis()).unwrap_or(u64::MAX),
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
    let frame = match tokio::time::timeout(config.handshake_timeout, read).await {
        Ok(frame) => frame.map_err(StoreWait::Protocol)?,
        Err(_) => {
            return Err(StoreWait::Protocol(ProtocolError::Timeout {
                waiting_for: "the agent's answer to the store",
                after: config.handshake_timeout,
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

/// The reader task: frames to events until the agent's output ends or the link stops.
async fn read_loop(mut reader: FrameReader<BoxRead>, ctx: &Ctx, stderr_done: &CancellationToken) {
    loop {
        let waited = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = tokio::time::timeout(ctx.lost_after, reader.read_frame::<ToCoordinator>()) => r,
        };
        let frame = match waited {
            Ok(frame) => frame,
            Err(_) => {
                let reason = format!("no heartbeat for {}", show(ctx.lost_after));
                return ctx.lose(reason).await;
            }
        };
        match frame {
            Ok(Some(message)) => {
                if !forward(message, ctx).await {
                    return;
                }
            }
            Ok(None) => return output_ended(ctx, None, stderr_done).await,
            Err(e) if !e.is_fatal() => {
                let host = ctx.host();
                let message = format!("dropped a frame: {}", error_chain(&e));
                if !ctx
                    .emit(HostEvent::AgentError {
                        host,
                        key: None,
                        message,
                    })
                    .await
                {
                    return;
                }
            }
            Err(e) => return output_ended(ctx, Some(e), stderr_done).await,
        }
    }
}

/// One agent message as an event; heartbeats only prove life. `false` when the link stops.
async fn forward(message: ToCoordinator, ctx: &Ctx) -> bool {
    let host = ctx.host();
    let event = match message {
        // A late `StoreReady` (it is read during the start) only proves life as well.
        ToCoordinator::Heartbeat(_) | ToCoordinator::StoreReady => return true,
        ToCoordinator::TaskStarted { key, pid } => HostEvent::Started { host, key, pid },
        ToCoordinator::TaskFinished {
            key,
            status,
            exit_code,
            result,
            error,
        } => HostEvent::Finished {
            host,
            key,
            status,
            exit_code,
            result,
            error,
        },
        ToCoordinator::Log(mut record) => {
            // The link, not the agent, knows which host this is.
            record.host.clone_from(&host);
            HostEvent::Log { host, record }
        }
        ToCoordinator::Output(batch) => HostEvent::Output { host, batch },
        ToCoordinator::TaskRan { key } => HostEvent::Ran { host, key },
        ToCoordinator::Error { key, message } => HostEvent::AgentError { host, key, message },
    };
    ctx.emit(event).await
}

/// The agent's output ended (cleanly between frames when `error` is `None`). Expected after
/// our shutdown; otherwise the link is lost, with the reason the exit status gives.
async fn output_ended(ctx: &Ctx, error: Option<ProtocolError>, stderr_done: &CancellationToken) {
    if error.is_none() && ctx.shared.shutting_down.load(Ordering::Relaxed) {
        ctx.shared.clean_end.store(true, Ordering::Relaxed);
        return;
    }
    // Let the exit status and the agent's last stderr lines (its panic, say) arrive first,
    // so they are in the log before `Lost`.
    let mut exit = ctx.shared.exit.clone();
    let _ = tokio::time::timeout(EXIT_WAIT, async {
        let _ = exit.wait_for(Option::is_some).await;
        stderr_done.cancelled().await;
    })
    .await;
    let ended = match exit.borrow().as_ref() {
        Some(status) => describe_exit(status),
        None => "agent closed its output".to_string(),
    };
    let reason = match error {
        Some(e) => format!("{} ({ended})", error_chain(&e)),
        None => ended,
    };
    ctx.lose(reason).await;
}

/// The writer task: queued messages out, a heartbeat whenever it has been quiet.
async fn write_loop(
    mut writer: FrameWriter<BoxWrite>,
    mut queue: mpsc::Receiver<ToAgent>,
    ctx: Ctx,
    heartbeat: Duration,
) {
    let mut beat = 0u64;
    loop {
        let first = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            message = queue.recv() => match message {
                Some(message) => message,
                // The link handle is gone; its drop cancels `stop` as well.
                None => return,
            },
            _ = tokio::time::sleep(heartbeat) => {
                beat += 1;
                ToAgent::Heartbeat(Heartbeat { seq: beat - 1, sent_at: now_micros() })
            }
        };
        let closing = queue_batch(&mut writer, first, &mut queue, &ctx).await;
        if !flush(&mut writer, &ctx, closing).await || closing {
            return;
        }
    }
}

/// Encodes `first` and whatever else is queued (up to a batch) into the writer's buffer.
/// `true` when a `Shutdown` was among them: nothing may follow it.
async fn queue_batch(
    writer: &mut FrameWriter<BoxWrite>,
    first: ToAgent,
    queue: &mut mpsc::Receiver<ToAgent>,
    ctx: &Ctx,
) -> bool {
    let mut next = Some(first);
    let mut count = 0;
    while let Some(message) = next.take() {
        let closing = matches!(message, ToAgent::Shutdown { .. });
        if closing {
            ctx.shared.shutting_down.store(true, Ordering::Relaxed);
        }
        if let Err(e) = writer.queue_frame(&message) {
            // Nothing was written (the message alone is too large): that task cannot run.
            let host = ctx.host();
            let key = message.key().cloned();
            let message = format!("cannot send a message to the agent: {}", error_chain(&e));
            ctx.emit(HostEvent::AgentError { host, key, message }).await;
        }
        count += 1;
        if closing {
            return true;
        }
        if count < WRITE_BATCH {
            next = queue.try_recv().ok();
        }
    }
    false
}

/// Writes the buffer out (and, when `closing`, sends EOF), bounded by `lost_after`.
/// `false` when the link is lost or stopped.
async fn flush(writer: &mut FrameWriter<BoxWrite>, ctx: &Ctx, closing: bool) -> bool {
    let write = async {
        writer.flush().await?;
        if closing {
            writer.shutdown().await?;
        }
        Ok::<_, ProtocolError>(())
    };
    let result = tokio::select! {
        _ = ctx.stop.cancelled() => return false,
        r = tokio::time::timeout(ctx.lost_after, write) => r,
    };
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            ctx.lose(format!("writing to the agent: {}", error_chain(&e)))
                .await;
            false
        }
        Err(_) => {
            let stalled = format!("writing to the agent stalled for {}", show(ctx.lost_after));
            ctx.lose(stalled).await;
            false
        }
    }
}

/// The stderr task: the agent's stderr lines as `Log` records (stream `Agent`), the lines
/// seen during the handshake first.
async fn forward_stderr(mut stderr: StderrSource, early: Early, ctx: Ctx, done: CancellationToken) {
    for line in early.0 {
        if !ctx.emit(stderr_event(&ctx, line)).await {
            return done.cancel();
        }
    }
    loop {
        let line = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            line = stderr.next_line() => line,
        };
        let Some(line) = line else { break };
        if !ctx.emit(stderr_event(&ctx, line)).await {
            break;
        }
    }
    let dropped = stderr.dropped_lines();
    if dropped > 0 {
        let note = format!("{dropped} lines of the agent's stderr were dropped (not read in time)");
        ctx.emit(stderr_event(&ctx, note)).await;
    }
    done.cancel();
}

fn stderr_event(ctx: &Ctx, text: String) -> HostEvent {
    let host = ctx.host();
    let record = LogRecord {
        time: now_micros(),
        level: LogLevel::Warn,
        host: host.clone(),
        task: None,
        stream: Stream::Agent,
        text,
    };
    HostEvent::Log { host, record }
}

fn describe_exit(status: &Result<ExitStatus, String>) -> String {
    match status {
        Ok(ExitStatus::Code(code)) => format!("agent exited with status {code}"),
        Ok(ExitStatus::Signal { name, .. }) => format!("agent was killed by signal {name}"),
        Err(ended) => ended.clone(),
    }
}

fn describe_ssh_end(error: &SshError) -> String {
    match error {
        SshError::ConnectionLost { .. } => "ssh connection lost".into(),
        SshError::NoExitStatus { .. } => "agent's channel closed without an exit status".into(),
        other => error_chain(other),
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

// ---------------------------------------------------------------------------------------------
// Many hosts at once: connect all, then per host check (and install) its agent
// (`deploy.rs`), forward the store to a `store_via: ssh` host (`store_tunnel.rs`), and
// start its link.
// ---------------------------------------------------------------------------------------------

/// What every link of a run shares; [`ConnectOptions::link_config`] makes each host's
/// [`LinkConfig`] from it.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub run_id: String,
    /// Arguments for every agent after its path (never a secret: see `store`).
    pub agent_args: Vec<String>,
    /// The store every agent records in, sent in the handshake (password included).
    pub store: Option<StoreAccess>,
    /// The binary installed on `deploy: auto` hosts whose agent is missing or differs
    /// (see [`deploy`]); `None`: `eventor-agent` next to this program.
    pub install: Option<std::path::PathBuf>,
    pub heartbeat: Duration,
    pub lost_after: Duration,
    pub handshake_timeout: Duration,
    /// Home, user and ssh-agent socket for SSH; `config_file` is replaced by the hosts
    /// file's `ssh_config`.
    pub ssh: ClientSettings,
}

impl ConnectOptions {
    /// The defaults of [`LinkConfig::new`], SSH settings from the environment.
    pub fn new(run_id: impl Into<String>, agent_args: Vec<String>) -> ConnectOptions {
        let defaults = LinkConfig::new("", "", "");
        ConnectOptions {
            run_id: run_id.into(),
            agent_args,
            heartbeat: defaults.heartbeat,
            lost_after: defaults.lost_after,
            handshake_timeout: defaults.handshake_timeout,
            store: None,
            install: None,
            ssh: ClientSettings::from_env(),
        }
    }

    /// The link settings for `host`.
    pub fn link_config(&self, host: &HostSpec) -> LinkConfig {
        LinkConfig {
            heartbeat: self.heartbeat,
            lost_after: self.lost_after,
            handshake_timeout: self.handshake_timeout,
            max_concurrent_tasks: MaxConcurrent::at_most(host.max_concurrent.unwrap_or(0) as usize),
            store: self.store.clone(),
            ..LinkConfig::new(
                &host.name,
                host.agent_command(&self.agent_args),
                &self.run_id,
            )
        }
    }
}

/// Connects to the hosts called `names` and starts a link to each, all at once (N hosts
/// take about one connect and one handshake). Results are in the order of `names`.
pub async fn connect_hosts(
    hosts: &HostsFile,
    names: &[String],
    options: &ConnectOptions,
    events: mpsc::Sender<HostEvent>,
    shutdown: &CancellationToken,
) -> Vec<Result<HostLink, LinkError>> {
    let specs: Vec<Option<&HostSpec>> = names.iter().map(|n| hosts.host(n)).collect();
    let settings = ClientSettings {
        config_file: hosts.ssh_config.clone(),
        ..options.ssh.clone()
    };
    let config = match SshConfig::load(settings) {
        Ok(config) => config,
        Err(e) => {
            let e = Arc::new(e);
            let fail = |name: &String| LinkError::SshConfig {
                host: name.clone(),
                source: e.clone(),
            };
            return names.iter().map(|n| Err(fail(n))).collect();
        }
    };
    let known: Vec<&HostSpec> = specs.iter().flatten().copied().collect();
    let aliases: Vec<&str> = known.iter().map(|h| h.ssh.as_str()).collect();
    // The local agent is hashed while the hosts are connected to, not after.
    let connected = async {
        tokio::select! {
            s = ssh::connect_all(&config, &aliases) => s,
            _ = shutdown.cancelled() => Vec::new(),
        }
    };
    let (sessions, plan) = tokio::join!(connected, deploy_plan(&known, options));
    let mut links = start_all(&known, sessions, options, &plan, events, shutdown).await;
    links.reverse();
    let mut out = Vec::with_capacity(names.len());
    for (name, spec) in names.iter().zip(&specs) {
        let cancelled = || LinkError::Cancelled { host: name.clone() };
        out.push(match spec {
            None => Err(LinkError::UnknownHost { host: name.clone() }),
            Some(_) => links.pop().unwrap_or_else(|| Err(cancelled())),
        });
    }
    out
}

/// The binary to install, hashed (once per process, off the runtime's threads), when any
/// host may need it.
async fn deploy_plan(hosts: &[&HostSpec], options: &ConnectOptions) -> DeployPlan {
    let auto = hosts.iter().any(|h| h.deploy == Deploy::Auto);
    let path = options
        .install
        .clone()
        .or_else(super::hosts::local_agent_binary);
    let local = match path {
        Some(path) if auto => tokio::task::spawn_blocking(move || LocalAgent::of(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| error_chain(&e)))
            .map(Arc::new),
        Some(_) => Err("no host installs it".to_string()),
        None => Err("this program's path is unknown".to_string()),
    };
    DeployPlan {
        local,
        probe_timeout: options.handshake_timeout,
    }
}

/// Forwards the store to a `store_via: ssh` host, makes sure of its agent, then starts its
/// link. An agent a probe verified before (its stamp still matches) starts straight away,
/// in the exec that checks the stamp (one channel instead of two: at 16 hosts the hosts'
/// `sshd`s starting programs is most of the connect time); otherwise, or when that check
/// fails, the agent is probed (and installed) first.
async fn deploy_and_start(
    session: Session,
    host: HostSpec,
    plan: DeployPlan,
    mut config: LinkConfig,
    events: mpsc::Sender<HostEvent>,
    shutdown: CancellationToken,
) -> Result<HostLink, LinkError> {
    let name = host.name.clone();
    let cancelled = || LinkError::Cancelled { host: name.clone() };
    let session = Arc::new(session);
    if host.store_via == StoreVia::Ssh {
        let store = config.store.as_ref();
        let tunnel = tokio::select! {
            t = store_tunnel::open(&session, &host, store, shutdown.clone()) => t?,
            _ = shutdown.cancelled() => return Err(cancelled()),
        };
        config.store = Some(tunnel);
    }
    if let Some(command) = deploy::checked_start(&host, &plan, &config.agent_command) {
        let quick = LinkConfig {
            agent_command: command,
            ..config.clone()
        };
        let started = HostLink::start(session.clone(), quick, events.clone(), shutdown.clone());
        match started.await {
            // The stamp did not match (97), or the command could not even run (a login shell
            // that is not POSIX, say): the full path below says what is wrong, if anything.
            Err(LinkError::Handshake {
                exit_code: Some(code),
                ..
            }) => tracing::debug!(host = %name, code, "agent not started by its stamp: probing it"),
            started => return started,
        }
    }
    tokio::select! {
        done = deploy::ensure(&session, &host, &plan) => { done?; }
        _ = shutdown.cancelled() => return Err(cancelled()),
    }
    HostLink::start(session, config, events, shutdown).await
}

/// Starts a link on each session concurrently; results in the order of `hosts`.
async fn start_all(
    hosts: &[&HostSpec],
    sessions: Vec<Result<Session, SshError>>,
    options: &ConnectOptions,
    plan: &DeployPlan,
    events: mpsc::Sender<HostEvent>,
    shutdown: &CancellationToken,
) -> Vec<Result<HostLink, LinkError>> {
    let mut tasks = JoinSet::new();
    let mut results: Vec<Option<Result<HostLink, LinkError>>> =
        hosts.iter().map(|_| None).collect();
    for (index, (host, session)) in hosts.iter().zip(sessions).enumerate() {
        let host_name = host.name.clone();
        let session = match session {
            Ok(session) => session,
            Err(source) => {
                results[index] = Some(Err(LinkError::Connect {
                    host: host_name,
                    source: Box::new(source),
                }));
                continue;
            }
        };
        let config = options.link_config(host);
        let (events, shutdown) = (events.clone(), shutdown.clone());
        let (host, plan) = ((*host).clone(), plan.clone());
        tasks.spawn(async move {
            let started = deploy_and_start(session, host, plan, config, events, shutdown);
            (index, started.await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // A start task only fails by panicking, which the hosts' other links survive.
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    hosts
        .iter()
        .zip(results)
        .map(|(host, r)| {
            r.unwrap_or_else(|| {
                Err(LinkError::Cancelled {
                    host: host.name.clone(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
