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
//! This file holds the handle and its vocabulary; `start.rs` opens the channel and holds
//! the handshake, `loops.rs` the three tasks. Connecting many hosts at once (deploy, store
//! tunnel) is [`super::connect`].
//!
//! # Liveness
//!
//! Each end sends a heartbeat when it has been quiet for the interval, so an agent that
//! is alive produces *some* frame at least every interval. The reader waits for each frame
//! at most `lost_after` ([`LinkSettings`], at most [`MAX_LOST_AFTER`]); a longer silence
//! ends the link as [`HostEvent::Lost`] with the reason "no heartbeat for 5s" (at the
//! default). The clock runs only while the reader is actually waiting on the network, not
//! while it waits for the engine to take an event, so a busy coordinator cannot mistake
//! its own slowness for a dead host.
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
//! [`HostLink::join`] reports it as [`LinkEnd::Clean`]. How far such a polite end has come
//! is one forward-only `Phase` shared by the handle and the tasks.
//!
//! # Never a hang
//!
//! Every wait on the network is bounded or cancellable: `exec` and the handshake by
//! `handshake_timeout`, each read by `lost_after`, each write by `lost_after`, closing
//! the session by a second, and all of them by the `shutdown` token passed to `start`
//! (the link's own token is a child of it, cancelled by `join` and by dropping the link).
//! Sends on the event channel wait for the engine but are cancellable the same way.

mod channel;
mod loops;
mod start;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventor_agent::util::error_chain;
use eventor_agent::MaxConcurrent;
use eventor_protocol::{
    Accept, Dispatch, Hello, LogRecord, OutputBatch, ProtocolError, StoreAccess, StoreTls, TaskKey,
    ToAgent,
};
use eventor_ssh::{ExitStatus, Session, SshError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deploy::DeployError;
use super::store_tunnel::TunnelError;
use channel::ExitWatch;

/// `lost_after` may not exceed this: a dead host must not stall a run for long (and agents
/// wait longer than this on a silent prime).
pub const MAX_LOST_AFTER: Duration = eventor_protocol::MAX_LOST_AFTER;
/// How long the reader waits for the exit status (and the last stderr lines) after the
/// agent's output ends, to say why it ended.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// Bound on saying goodbye to the SSH server when the link ends.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a link keeps time and how much it queues: the same for every link of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// Each end sends a heartbeat after this long without sending anything.
    pub heartbeat: Duration,
    /// Silence from the agent for this long means the host is lost (at most
    /// [`MAX_LOST_AFTER`]).
    pub lost_after: Duration,
    /// Bound on starting the agent and on its hello.
    pub handshake_timeout: Duration,
    /// Messages queued for the writer before `dispatch` waits.
    pub outbox: usize,
}

impl Default for LinkSettings {
    /// Heartbeat 1 s, lost after 5 s, handshake within 10 s, 256 messages queued.
    fn default() -> LinkSettings {
        LinkSettings {
            heartbeat: Duration::from_secs(1),
            lost_after: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            outbox: 256,
        }
    }
}

impl LinkSettings {
    /// Why these settings cannot work, if they cannot.
    fn check(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() || self.handshake_timeout.is_zero() || self.outbox == 0 {
            return Err("heartbeat, handshake_timeout and outbox must be above zero".into());
        }
        if self.lost_after > MAX_LOST_AFTER || self.lost_after <= self.heartbeat {
            return Err(format!(
                "lost_after must be longer than the heartbeat ({}) and at most {}, found {}",
                show(self.heartbeat),
                show(MAX_LOST_AFTER),
                show(self.lost_after)
            ));
        }
        Ok(())
    }
}

/// Settings of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The host's cluster name: in the handshake, in every event and log record.
    pub host_name: String,
    /// The remote shell command that starts the agent (see
    /// [`HostSpec::agent_command`](super::HostSpec::agent_command)).
    pub agent_command: String,
    /// The run the agent serves.
    pub run_id: String,
    pub settings: LinkSettings,
    /// Told to the agent in the handshake: the host's own limit, if it has one.
    pub max_concurrent_tasks: MaxConcurrent,
    /// The store the agent records each task's end in, password included, sent in the
    /// handshake (`Debug` masks the password); `None`: the agent has its own or none.
    pub store: Option<StoreAccess>,
    /// The TLS `store` is reached with, sent with it to an agent of protocol 1.4 or later
    /// (`Debug` masks the key).
    pub store_tls: Option<StoreTls>,
    /// Sent to an agent of protocol 1.3 or later right after the handshake: how long it
    /// keeps its tasks running once it lost the prime. `None`: not sent (to their end).
    pub lease: Option<Duration>,
    /// Refuse an agent of another version than this prime's (`deploy: auto`, which puts
    /// the prime's own agent there: another version is not the file it checked). A
    /// re-adopted agent is taken whatever its version: it runs the attempts it answers for.
    pub same_version: bool,
    /// The host's `env:` as the agent command's shell reads it from stdin before the
    /// protocol starts ([`HostSpec::env_lines`](super::HostSpec::env_lines)); never on a
    /// command line.
    pub env_lines: EnvLines,
}

/// A host's `env:` as written to its agent's stdin; `Debug` says only how long it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvLines(pub String);

impl std::fmt::Debug for EnvLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvLines({} bytes)", self.0.len())
    }
}

impl LinkConfig {
    /// A config with the default [`LinkSettings`], no limit and no store.
    pub fn new(
        host_name: impl Into<String>,
        agent_command: impl Into<String>,
        run_id: impl Into<String>,
    ) -> LinkConfig {
        LinkConfig {
            host_name: host_name.into(),
            agent_command: agent_command.into(),
            run_id: run_id.into(),
            settings: LinkSettings::default(),
            max_concurrent_tasks: MaxConcurrent::UNLIMITED,
            store: None,
            store_tls: None,
            lease: None,
            same_version: false,
            env_lines: EnvLines::default(),
        }
    }

    fn check(&self) -> Result<(), LinkError> {
        self.settings.check().map_err(|message| LinkError::Config {
            host: self.host_name.clone(),
            message,
        })
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
        end: eventor_protocol::TaskEnd,
    },
    /// A line of a task's output, or of the agent's own logging (its stderr included).
    Log { host: String, record: LogRecord },
    /// Lines of a task's output, read together on the host.
    Output { host: String, batch: OutputBatch },
    /// A task's command on the host fires `event` in `sequence` in its run; answer `id`
    /// with [`HostLink::answer_trigger`].
    Trigger {
        host: String,
        id: u64,
        event: String,
        sequence: String,
    },
    /// A task's command on the host asks its run's status; answer `id` with
    /// [`HostLink::answer_status`].
    StatusAsk { host: String, id: u64 },
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
            | HostEvent::Trigger { host, .. }
            | HostEvent::StatusAsk { host, .. }
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
    #[error("{host}: writing the host's env to the agent's shell")]
    EnvNotSent {
        host: String,
        #[source]
        source: std::io::Error,
    },
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

impl LinkError {
    /// Whether the host could not be reached for a network reason: the run starts without
    /// it (it is away, and brought back in the background, as a host lost mid-run).
    /// Anything else (an unknown host, a refused login, a changed host key, an agent that
    /// fails its handshake) is a mistake to fix first.
    pub fn is_network(&self) -> bool {
        match self {
            LinkError::Connect { source, .. } | LinkError::Exec { source, .. } => {
                source.is_network()
            }
            LinkError::ExecTimeout { .. }
            | LinkError::EnvNotSent { .. }
            | LinkError::Lost { .. } => true,
            _ => false,
        }
    }

    /// Whether the set-up is wrong (an unknown host, the ssh config, a key, a host key, a
    /// refused login): exit 2, the user must fix it.
    pub fn is_set_up(&self) -> bool {
        match self {
            LinkError::Config { .. } | LinkError::UnknownHost { .. } => true,
            LinkError::SshConfig { .. } => true,
            LinkError::Connect { source, .. } => source.is_set_up(),
            _ => false,
        }
    }

    /// The host the error is about.
    pub fn host(&self) -> Option<&str> {
        match self {
            LinkError::Config { host, .. }
            | LinkError::UnknownHost { host }
            | LinkError::SshConfig { host, .. }
            | LinkError::EnvNotSent { host, .. }
            | LinkError::Connect { host, .. }
            | LinkError::Exec { host, .. }
            | LinkError::ExecTimeout { host, .. }
            | LinkError::Handshake { host, .. }
            | LinkError::AgentStore { host, .. }
            | LinkError::Cancelled { host }
            | LinkError::Lost { host, .. }
            | LinkError::Closed { host } => Some(host),
            LinkError::Deploy(_) | LinkError::Tunnel(_) => None,
        }
    }
}

/// How far a polite end has come. It only moves forward: `shutdown` was called (no more
/// dispatches), then the writer put `Shutdown` on the wire (the agent's end of output is
/// expected now), then the reader saw that end (`join` reports a clean end). Each phase
/// implies the ones before it. A loss is not a phase: it is [`Shared::lost`], and can come
/// in any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Open = 0,
    Closing = 1,
    ShutdownSent = 2,
    EndedClean = 3,
}

/// The [`Phase`] the handle and the link's tasks share.
#[derive(Debug)]
struct PhaseCell(AtomicU8);

impl Default for PhaseCell {
    fn default() -> PhaseCell {
        PhaseCell(AtomicU8::new(Phase::Open as u8))
    }
}

impl PhaseCell {
    /// Moves on to `phase`, unless the link is already there or past it.
    fn advance(&self, phase: Phase) {
        self.0.fetch_max(phase as u8, Ordering::AcqRel);
    }

    /// Whether the link has come to `phase` (or past it).
    fn reached(&self, phase: Phase) -> bool {
        self.0.load(Ordering::Acquire) >= phase as u8
    }
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
    /// How far a polite end has come.
    phase: PhaseCell,
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
    /// The attempts a re-adopted agent still answered for when it came back.
    adopted: Vec<TaskKey>,
    /// The lease the agent was told (zero when it was told none).
    lease: Duration,
    outbox: mpsc::Sender<ToAgent>,
    stop: CancellationToken,
    reader_done: CancellationToken,
    /// Cancelled once the agent's stderr has been read to its end.
    stderr_done: CancellationToken,
    tracker: TaskTracker,
    session: Option<Arc<Session>>,
}

impl Drop for HostLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HostLink {
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

    /// The task attempts an agent that outlived its prime still answered for when this link
    /// re-adopted it (their output and ends follow on the link); empty for a new agent.
    pub fn adopted(&self) -> &[TaskKey] {
        &self.adopted
    }

    /// How long the agent keeps running its tasks after losing the prime: the lease it
    /// was sent, or zero for an agent too old to be told one (its tasks run to their end,
    /// which nothing on the prime's side can wait out).
    pub fn lease(&self) -> Duration {
        self.lease
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

    /// Answers the agent's trigger request `id`: taken (`None`), or why not.
    pub async fn answer_trigger(&self, id: u64, refused: Option<String>) -> Result<(), LinkError> {
        self.send(ToAgent::TriggerAnswer { id, refused }).await
    }

    /// Answers the agent's status request `id`: the run's status, or why there is none.
    pub async fn answer_status(
        &self,
        id: u64,
        status: Result<String, String>,
    ) -> Result<(), LinkError> {
        let (status, refused) = match status {
            Ok(json) => (Some(json), None),
            Err(why) => (None, Some(why)),
        };
        self.send(ToAgent::StatusAnswer {
            id,
            status,
            refused,
        })
        .await
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
        self.shared.phase.advance(Phase::Closing);
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
        if self.shared.phase.reached(Phase::Closing) {
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

    /// Waits up to `within` for the agent's stderr to end (its last lines, its summary, come
    /// after its output ended).
    pub async fn last_lines(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.stderr_done.cancelled()).await;
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
        // The agent's last stderr lines (its summary) come after its output ended, once its
        // store is closed: read them to the end (within the grace, since a loaded machine can
        // take more than a second) before the link's tasks are stopped.
        if matches!(end, LinkEnd::Clean { .. }) {
            self.last_lines(grace).await;
        }
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
        if !finished || !self.shared.phase.reached(Phase::EndedClean) {
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

#[cfg(test)]
mod tests;
