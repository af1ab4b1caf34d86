//! The wire types: the handshake, and the closed message enum of each direction.
//!
//! The payload codec is not self-describing, so these types *are* the wire format: a field's
//! position and type, and a variant's position, are what is sent. Change them only as the
//! crate's opening essay allows (append enum variants at the end; anything else is a new
//! major version), and never use `skip_serializing_if`, `flatten`, `untagged` or `tag`
//! here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::Role;
use crate::failure::{
    signal_name, FailureClass, CANNOT_START, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, KILLED_BY_SIGNAL,
    NO_COORDINATOR,
};

/// Microseconds since the Unix epoch (`eventor-store` re-exports it: the store's unit too).
pub type Micros = i64;

/// How long an agent whose lease ran out takes at most to stop its tasks: SIGTERM to each
/// command's group, then SIGKILL this long after. A coordinator adds it to the lease before
/// it calls a silent host's tasks dead.
pub const LEASE_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A protocol version. Ends with the same `major` can talk; `minor` says which appended
/// variants a peer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Bumped for any change to an existing type's layout.
    pub major: u16,
    /// Bumped when a variant is appended to a wire enum.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this build speaks.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };

    /// The first minor of major 1 with [`HandshakeReply::AcceptWithStore`] and
    /// [`ToCoordinator::StoreReady`].
    pub const STORE_ACCESS: ProtocolVersion = ProtocolVersion { major: 1, minor: 1 };

    /// Whether a peer of this version knows the variants of [`Self::STORE_ACCESS`].
    pub fn has_store_access(self) -> bool {
        self.major == Self::STORE_ACCESS.major && self.minor >= Self::STORE_ACCESS.minor
    }

    /// The first minor of major 1 with [`ToCoordinator::Output`] and
    /// [`ToCoordinator::TaskRan`].
    pub const OUTPUT_BATCHES: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };

    /// Whether a peer of this version knows [`ToCoordinator::Output`].
    pub fn has_output_batches(self) -> bool {
        self.major == Self::OUTPUT_BATCHES.major && self.minor >= Self::OUTPUT_BATCHES.minor
    }

    /// The first minor of major 1 with [`ToAgent::Lease`].
    pub const LEASES: ProtocolVersion = ProtocolVersion { major: 1, minor: 3 };

    /// Whether a peer of this version knows [`ToAgent::Lease`].
    pub fn has_leases(self) -> bool {
        self.major == Self::LEASES.major && self.minor >= Self::LEASES.minor
    }

    /// The first minor of major 1 with [`ToCoordinator::Adopted`]: an agent that outlived
    /// its prime may be re-adopted by the next one.
    pub const ADOPTION: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };

    /// Whether a peer of this version knows [`ToCoordinator::Adopted`].
    pub fn has_adoption(self) -> bool {
        self.major == Self::ADOPTION.major && self.minor >= Self::ADOPTION.minor
    }

    /// The first minor of major 1 with [`HandshakeReply::AcceptWithStoreTls`].
    pub const STORE_TLS: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };

    /// Whether a peer of this version knows [`HandshakeReply::AcceptWithStoreTls`].
    pub fn has_store_tls(self) -> bool {
        self.major == Self::STORE_TLS.major && self.minor >= Self::STORE_TLS.minor
    }

    /// The version both ends understand: our major, the lower minor. Send only what it has.
    pub fn common(self, peer: ProtocolVersion) -> ProtocolVersion {
        ProtocolVersion {
            major: self.major,
            minor: self.minor.min(peer.minor),
        }
    }
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        ProtocolVersion::CURRENT
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Names one attempt of one task, so messages about many concurrent tasks can share a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    /// The run the task belongs to.
    pub run_id: String,
    /// The step the task runs.
    pub step: String,
    /// The sequence the task runs in.
    pub sequence: String,
    /// The run's recovery number.
    pub recovery: i32,
    /// The task's attempt number; a retry is a new key.
    pub attempt: i32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}[{}] recovery {} attempt {}",
            self.run_id, self.step, self.sequence, self.recovery, self.attempt
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake.
// ---------------------------------------------------------------------------------------------

/// The agent's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the agent speaks (the frame header carries it too).
    pub protocol: ProtocolVersion,
    /// The agent's build, e.g. its crate version.
    pub agent_version: String,
    /// The host name the agent sees (`hostname`), which may differ from the cluster's name.
    pub host: String,
    /// Optional features the agent has. Strings, not an enum, so an older coordinator can
    /// read a newer agent's list and ignore what it does not know.
    pub capabilities: Vec<String>,
}

impl Hello {
    /// A hello for the protocol version this build speaks.
    pub fn new(
        agent_version: impl Into<String>,
        host: impl Into<String>,
        capabilities: Vec<String>,
    ) -> Hello {
        Hello {
            protocol: ProtocolVersion::CURRENT,
            agent_version: agent_version.into(),
            host: host.into(),
            capabilities,
        }
    }
}

/// What the coordinator allows an accepted agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The coordinator's frame cap: the agent must keep every payload within it.
    pub max_frame_bytes: u32,
    /// How many tasks the coordinator may have running on this agent at once.
    pub max_concurrent_tasks: u32,
}

/// The coordinator's welcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The run this agent serves.
    pub run_id: String,
    /// The host's name in the cluster (for log records), which may differ from `Hello::host`.
    pub host: String,
    /// Both ends send a heartbeat this often when otherwise idle.
    pub heartbeat_interval_ms: u64,
    /// What the agent may send.
    pub limits: Limits,
}

/// The store an agent records its tasks' ends in, with the password to reach it (since
/// 1.1, in [`HandshakeReply::AcceptWithStore`]). This is the only way credentials reach an
/// agent: over the channel, never on its command line or in its environment. `Debug`
/// masks the password; nothing may log it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreAccess {
    /// The store without a password: `postgres://user@host:port/db?schema=…` (the host and
    /// port as the agent reaches them) or `sqlite:/absolute/path`.
    pub location: String,
    /// The password the prime resolved (from the URL, `PGPASSWORD`, `~/.pgpass` or its
    /// config file); `None` when there is none.
    pub password: Option<String>,
}

impl fmt::Debug for StoreAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreAccess")
            .field("location", &self.location)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .finish()
    }
}

/// How the agent reaches a Postgres store over TLS (since 1.4, in
/// [`HandshakeReply::AcceptWithStoreTls`]): what the prime resolved from the store URL's
/// `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (or their `PGSSL*` variables and
/// `~/.postgresql` files), the files' contents rather than their paths, so no certificate
/// or key is ever left as a file on a host. `Debug` masks the key; nothing may log it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTls {
    /// libpq's word: `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub mode: String,
    /// The name the server's certificate must match (the store's host as the prime names
    /// it, whatever address the agent connects to); `None`: the host connected to.
    pub server_name: Option<String>,
    /// The root certificates (PEM) the server's chain is checked against.
    pub root_cert: Option<Vec<u8>>,
    /// The client certificate chain (PEM), for a server that asks for one.
    pub client_cert: Option<Vec<u8>>,
    /// Its private key (PEM).
    pub client_key: Option<Vec<u8>>,
}

impl fmt::Debug for StoreTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |pem: &Option<Vec<u8>>| pem.as_ref().map(Vec::len);
        f.debug_struct("StoreTls")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .field("root_cert_bytes", &size(&self.root_cert))
            .field("client_cert_bytes", &size(&self.client_cert))
            .field("client_key", &self.client_key.as_ref().map(|_| "****"))
            .finish()
    }
}

/// The coordinator's refusal; it closes the channel after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    /// Why, for the agent's log and the operator.
    pub reason: String,
}

/// The coordinator's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// Go ahead.
    Accept(Accept),
    /// Go away.
    Refuse(Refuse),
    /// Go ahead, and record each task's end in this store (since 1.1; sent only to an
    /// agent whose hello says 1.1 or later). The agent opens the store, then answers
    /// [`ToCoordinator::StoreReady`], or an `Error` without a key and exits.
    AcceptWithStore {
        /// The welcome proper.
        accept: Accept,
        /// The store and its password.
        store: StoreAccess,
    },
    /// [`AcceptWithStore`](Self::AcceptWithStore) with the TLS the store is reached with
    /// (since 1.4; sent only to an agent whose hello says 1.4 or later). The agent answers
    /// as it does to `AcceptWithStore`.
    AcceptWithStoreTls {
        /// The welcome proper.
        accept: Accept,
        /// The store and its password.
        store: StoreAccess,
        /// How the store is reached over TLS.
        tls: StoreTls,
    },
}

// ---------------------------------------------------------------------------------------------
// Coordinator to agent.
// ---------------------------------------------------------------------------------------------

/// What a task runs. Its `Debug` names a command's variables but never shows their values
/// (some are secrets from the prime's environment).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Work {
    /// A shell command.
    Command {
        /// The command line, run by the host's shell.
        command: String,
        /// Variables added to the agent's environment, in order (a later one wins).
        env: Vec<(String, String)>,
        /// The working directory; the agent's own when absent.
        cwd: Option<String>,
        /// Kill the command after this long.
        timeout_ms: Option<u64>,
    },
    /// A named step of the program the agent was built with.
    Closure {
        /// The step's name.
        step: String,
    },
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Command {
                command,
                env,
                cwd,
                timeout_ms,
            } => {
                let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
                f.debug_struct("Command")
                    .field("command", command)
                    .field("env", &names)
                    .field("cwd", cwd)
                    .field("timeout_ms", timeout_ms)
                    .finish()
            }
            Work::Closure { step } => f.debug_struct("Closure").field("step", step).finish(),
        }
    }
}

/// Start a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// The task attempt; every later message about it carries this key.
    pub key: TaskKey,
    /// What to run.
    pub work: Work,
}

/// A liveness beacon, sent by each end when it has been quiet for the heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counts up from 0 on each end, so a gap shows a lost beat.
    pub seq: u64,
    /// The sender's clock when it sent the beat.
    pub sent_at: Micros,
}

/// Everything the coordinator sends after the handshake. Append new variants at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    /// Start a task.
    Dispatch(Dispatch),
    /// Stop a task; the agent answers with `TaskFinished` with an end of status `Cancelled`, or with
    /// nothing if the task had already finished.
    Cancel {
        /// The task attempt to stop.
        key: TaskKey,
    },
    /// Take no new work, answer queued tasks as cancelled, let the running ones finish (a
    /// coordinator that wants one stopped sends `Cancel` for it), then exit; the coordinator
    /// closes its end after this.
    Shutdown {
        /// Why, for the agent's log.
        reason: String,
    },
    /// The coordinator is alive.
    Heartbeat(Heartbeat),
    /// How long the agent keeps running its tasks after it lost its coordinator (since
    /// 1.3; sent once, right after the handshake). When the lease runs out with no
    /// coordinator, the agent stops its tasks (the whole group: SIGTERM, grace, SIGKILL) and
    /// records them failed; until then the coordinator starts no other attempt of them.
    Lease {
        /// The lease in milliseconds, counted from the last frame the agent read.
        lease_ms: u64,
    },
    /// The answer to the agent's [`ToCoordinator::Trigger`] `id` (since 1.4): `None` when
    /// the run took the event, else why not.
    TriggerAnswer {
        /// The request answered.
        id: u64,
        /// Why the run did not take the event (an unknown event, a run that is over).
        refused: Option<String>,
    },
    /// The answer to the agent's [`ToCoordinator::StatusAsk`] `id` (since 1.4): the run's
    /// status as `status --json` prints it, or why it cannot be told.
    StatusAnswer {
        /// The request answered.
        id: u64,
        /// The status, one line of JSON.
        status: Option<String>,
        /// Why there is none.
        refused: Option<String>,
    },
}

impl ToAgent {
    /// The task this message concerns, if any.
    pub fn key(&self) -> Option<&TaskKey> {
        match self {
            ToAgent::Dispatch(d) => Some(&d.key),
            ToAgent::Cancel { key } => Some(key),
            ToAgent::Shutdown { .. }
            | ToAgent::Heartbeat(_)
            | ToAgent::Lease { .. }
            | ToAgent::TriggerAnswer { .. }
            | ToAgent::StatusAnswer { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agent to coordinator.
// ---------------------------------------------------------------------------------------------

/// How a task ended, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndStatus {
    /// It ran and succeeded (exit code 0, or the closure returned `Ok`).
    Success,
    /// It ran and failed.
    Failure,
    /// It was stopped by [`ToAgent::Cancel`] or the agent's own stop, or answered while
    /// still queued (a `Cancel`, or a [`ToAgent::Shutdown`]).
    Cancelled,
    /// It was stopped because its `timeout_ms` passed.
    TimedOut,
}

/// How a task attempt ended: the one shape of a task's end, from the command or closure
/// that ran it through the protocol to the store's row and the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnd {
    /// How it ended.
    pub status: EndStatus,
    /// The command's exit code, if it exited (not for closures or signals).
    pub exit_code: Option<i32>,
    /// What the store records as the result: a closure's JSON text, or a command's exit
    /// code in words (`"3"`).
    pub result: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The failure's class when the end was made on the prime (a lost host, an interrupt),
    /// where status, code and error cannot tell it. Never on the
    /// wire (skipped both ways, so the bytes are those of every 1.x): an agent's end is
    /// classed from its other fields ([`TaskEnd::failure_class`]).
    #[serde(skip)]
    pub class: Option<FailureClass>,
}

impl TaskEnd {
    /// A success with `result` (a closure's JSON text).
    pub fn success(result: Option<String>) -> TaskEnd {
        TaskEnd {
            status: EndStatus::Success,
            exit_code: None,
            result,
            error: None,
            class: None,
        }
    }

    /// A failure with `error` as its reason.
    pub fn failure(error: impl Into<String>) -> TaskEnd {
        TaskEnd {
            status: EndStatus::Failure,
            exit_code: None,
            result: None,
            error: Some(error.into()),
            class: None,
        }
    }

    /// A failure made on the prime because the task's host was lost or unreachable.
    pub fn host_lost(error: impl Into<String>) -> TaskEnd {
        TaskEnd::failure(error).classed(FailureClass::HostLost)
    }

    /// A failure made on the prime because the run was interrupted or stopped.
    pub fn interrupted(error: impl Into<String>) -> TaskEnd {
        TaskEnd::failure(error).classed(FailureClass::Interrupted)
    }

    /// This end with `class` as its class.
    pub fn classed(self, class: FailureClass) -> TaskEnd {
        TaskEnd {
            class: Some(class),
            ..self
        }
    }

    /// The class of a failed end (`None` for a success): the one it was made with, else
    /// the one its status, exit code and error tell ([`TaskEnd::derived_class`]).
    pub fn failure_class(&self) -> Option<FailureClass> {
        match self.status {
            EndStatus::Success => None,
            _ => self.class.clone().or_else(|| self.derived_class()),
        }
    }

    /// The class of an end that carries none of its own: derived from its status, exit code
    /// and error as an agent of any protocol version writes them. `None` for a success.
    pub fn derived_class(&self) -> Option<FailureClass> {
        let end = self;
        let error = end.error.as_deref().unwrap_or("");
        match end.status {
            EndStatus::Success => None,
            EndStatus::TimedOut => Some(FailureClass::Timeout),
            EndStatus::Cancelled => Some(FailureClass::Interrupted),
            EndStatus::Failure => Some(match end.exit_code {
                Some(EXIT_NOT_FOUND | EXIT_NOT_EXECUTABLE) => FailureClass::Start,
                Some(code) => FailureClass::Exit(Some(code)),
                None if error.starts_with(CANNOT_START) => FailureClass::Start,
                None if error.starts_with(NO_COORDINATOR) => FailureClass::HostLost,
                None => match error.strip_prefix(KILLED_BY_SIGNAL) {
                    Some(number) => FailureClass::Signal(signal_name(number)),
                    // A closure's error is its exit: it returned a failure.
                    None => FailureClass::Exit(None),
                },
            }),
        }
    }

    /// Stopped (a cancel, or the run's stop), `why` saying by what.
    pub fn cancelled(why: impl Into<String>) -> TaskEnd {
        TaskEnd {
            status: EndStatus::Cancelled,
            ..TaskEnd::failure(why)
        }
    }

    /// Stopped because its time limit passed; `error` says after how long.
    pub fn timed_out(error: impl Into<String>) -> TaskEnd {
        TaskEnd {
            status: EndStatus::TimedOut,
            ..TaskEnd::failure(error)
        }
    }

    /// A command that exited with `code`: a success for 0, else a failure saying the code.
    pub fn exited(code: i32) -> TaskEnd {
        let (status, error) = match code {
            0 => (EndStatus::Success, None),
            _ => (
                EndStatus::Failure,
                Some(format!("exited with status {code}")),
            ),
        };
        TaskEnd {
            status,
            exit_code: Some(code),
            result: Some(code.to_string()),
            error,
            class: None,
        }
    }

    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == EndStatus::Success
    }
}

/// A log record's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal progress.
    Info,
    /// Detail for debugging.
    Debug,
    /// Even more detail.
    Trace,
}

/// Where a log record's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
    /// The agent itself.
    Agent,
}

/// One line (or chunk) of output or agent logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When the agent read or wrote it.
    pub time: Micros,
    /// Severity (output lines are `Info` for stdout and `Warn` for stderr by convention).
    pub level: LogLevel,
    /// The host's name in the cluster ([`Accept::host`]).
    pub host: String,
    /// The task whose output this is; `None` for the agent's own logging.
    pub task: Option<TaskKey>,
    /// Which stream.
    pub stream: Stream,
    /// The text, without its line end; invalid UTF-8 is replaced by the agent.
    pub text: String,
}

/// Consecutive lines of one task's stream, read together (since 1.2). One frame carries
/// what one [`LogRecord`] per line would, without repeating the task, host and time, so a
/// flood of output costs a frame (and a wake-up on each end) per batch, not per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBatch {
    /// The task whose output this is.
    pub task: TaskKey,
    /// `Stdout` (level `Info`) or `Stderr` (level `Warn`).
    pub stream: Stream,
    /// When the agent read the batch.
    pub time: Micros,
    /// The lines, each without its line end, joined by `\n` (so a line holds no `\n`).
    pub text: String,
}

impl OutputBatch {
    /// The batch's lines, in order.
    pub fn lines(&self) -> std::str::Split<'_, char> {
        self.text.split('\n')
    }
}

/// Everything the agent sends after the handshake. Append new variants at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// A dispatched task is running.
    TaskStarted {
        /// The task attempt.
        key: TaskKey,
        /// Its process id on the agent's host (the agent's own for a closure).
        pid: u32,
    },
    /// A task ended; the last message about its key.
    TaskFinished {
        /// The task attempt.
        key: TaskKey,
        /// How it ended (its fields on the wire as they were inline before 1.5's rename:
        /// the same bytes).
        end: TaskEnd,
    },
    /// Output or agent logging.
    Log(LogRecord),
    /// The agent is alive.
    Heartbeat(Heartbeat),
    /// Something went wrong outside a task's own run (e.g. a dispatch for a key already
    /// running, or a command that could not be spawned before it had a pid).
    Error {
        /// The task it concerns, if any.
        key: Option<TaskKey>,
        /// What happened.
        message: String,
    },
    /// The agent opened the store of [`HandshakeReply::AcceptWithStore`] and records each
    /// task's end there before reporting it (since 1.1; the agent's first message then).
    StoreReady,
    /// Lines of a task's output (since 1.2; an older coordinator gets one `Log` per line).
    Output(OutputBatch),
    /// A task's work is over (its command exited, its closure returned): its slot on the
    /// agent is free while its end is recorded; `TaskFinished` follows (since 1.2).
    TaskRan {
        /// The task attempt.
        key: TaskKey,
    },
    /// The agent outlived its prime and this coordinator re-adopted it (since 1.4; its
    /// hello then has the [`ADOPTED`] capability and this is its first message after the
    /// store's answer): the task attempts it started whose ends no coordinator has read
    /// yet. Their held output, then their `TaskFinished`, follow in order.
    Adopted {
        /// The task attempts, running or ended and not yet reported.
        tasks: Vec<TaskKey>,
    },
    /// A task's command fires `event` in `sequence` in its own run (since 1.4;
    /// `eventor-coord trigger` inside a task on this host). The coordinator hands it to
    /// the run's driver, which fires each (event, sequence) once, and answers with
    /// [`ToAgent::TriggerAnswer`] `id`.
    Trigger {
        /// Names this request in the answer.
        id: u64,
        /// The event's name.
        event: String,
        /// The sequence it fires in.
        sequence: String,
    },
    /// A task's command asks its run's status (since 1.4; `eventor-coord status` inside a
    /// task on this host); answered by [`ToAgent::StatusAnswer`] `id`.
    StatusAsk {
        /// Names this request in the answer.
        id: u64,
    },
}

/// The capability in the hello of an agent that outlived its prime and is being re-adopted:
/// [`ToCoordinator::Adopted`] follows the handshake.
pub const ADOPTED: &str = "adopted";

impl ToCoordinator {
    /// The task this message concerns, if any.
    pub fn key(&self) -> Option<&TaskKey> {
        match self {
            ToCoordinator::TaskStarted { key, .. }
            | ToCoordinator::TaskFinished { key, .. }
            | ToCoordinator::TaskRan { key } => Some(key),
            ToCoordinator::Log(record) => record.task.as_ref(),
            ToCoordinator::Output(batch) => Some(&batch.task),
            ToCoordinator::Error { key, .. } => key.as_ref(),
            ToCoordinator::Heartbeat(_)
            | ToCoordinator::StoreReady
            | ToCoordinator::Adopted { .. }
            | ToCoordinator::Trigger { .. }
            | ToCoordinator::StatusAsk { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The types that may be a frame's payload.
// ---------------------------------------------------------------------------------------------

mod sealed {
    pub trait Sealed {}
}

/// A type that may travel as a frame's payload: only the four below.
///
/// The trait knows who sends the type, so a decoder can word a version mismatch by role.
pub trait WireMessage: Serialize + DeserializeOwned + sealed::Sealed {
    /// The end that sends this type.
    const SENDER: Role;
    /// The type's name, for error messages.
    const NAME: &'static str;
}

macro_rules! wire_message {
    ($ty:ty, $sender:expr, $name:literal) => {
        impl sealed::Sealed for $ty {}
        impl WireMessage for $ty {
            const SENDER: Role = $sender;
            const NAME: &'static str = $name;
        }
    };
}

wire_message!(Hello, Role::Agent, "hello");
wire_message!(HandshakeReply, Role::Coordinator, "handshake reply");
wire_message!(ToAgent, Role::Coordinator, "coordinator message");
wire_message!(ToCoordinator, Role::Agent, "agent message");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_s_debug_names_its_variables_and_never_shows_a_value() {
        let work = Work::Command {
            command: "make".into(),
            env: vec![("DB_PASSWORD".into(), "hunter2-secret".into())],
            cwd: None,
            timeout_ms: None,
        };
        let shown = format!("{work:?}");
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("make"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn an_agents_end_is_classed_from_what_the_wire_carries() {
        let cases = [
            (TaskEnd::exited(0), None),
            (TaskEnd::exited(3), Some("exit:3")),
            (TaskEnd::exited(127), Some("start")),
            (TaskEnd::exited(126), Some("start")),
            (
                TaskEnd::failure("killed by signal 9"),
                Some("signal:SIGKILL"),
            ),
            (
                TaskEnd::failure("killed by signal 64"),
                Some("signal:SIG64"),
            ),
            (
                TaskEnd::failure("killed by signal 15; last stderr: bye"),
                Some("signal:SIGTERM"),
            ),
            (
                TaskEnd::failure("cannot start `x`: no space"),
                Some("start"),
            ),
            (
                TaskEnd::failure("no coordinator for 30s"),
                Some("host_lost"),
            ),
            (TaskEnd::failure("closure said no"), Some("exit")),
            (TaskEnd::timed_out("timed out after 1s"), Some("timeout")),
            (TaskEnd::cancelled("cancelled"), Some("interrupted")),
        ];
        for (end, want) in cases {
            let got = end.failure_class().map(|c| c.to_string());
            assert_eq!(got.as_deref(), want, "{end:?}");
        }
    }

    #[test]
    fn a_prime_made_end_keeps_the_class_it_was_made_with() {
        assert_eq!(
            TaskEnd::host_lost("host a lost").failure_class(),
            Some(FailureClass::HostLost)
        );
        assert_eq!(
            TaskEnd::interrupted("interrupted by SIGINT").failure_class(),
            Some(FailureClass::Interrupted)
        );
    }
}
