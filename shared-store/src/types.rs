//! The store's vocabulary: keys, records, changes and errors, shared by every backend.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Microseconds since the Unix epoch: the protocol's unit, so a time read from the store
/// goes into a message (and back) as it is.
pub use eventor_protocol::Micros;

/// The current time in [`Micros`].
pub fn now_micros() -> Micros {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_micros() as Micros
}

/// Defines a string-backed enum with `as_str` / `FromStr` / `Display`, so the store keeps
/// readable text in its columns.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        "unknown {} {other:?}", stringify!($name)
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a task is in its life.
    TaskStatus {
        Ready => "ready",
        Active => "active",
        Success => "success",
        Failure => "failure",
        /// Recovered without running: it succeeded in an earlier recovery.
        Skipped => "skipped",
    }
);

impl TaskStatus {
    /// Success or failure (skipped counts as success): the task will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Failure | TaskStatus::Skipped
        )
    }
}

text_enum!(
    /// How a run relates to earlier runs of the same flow.
    RunMode {
        Restart => "restart",
        Recover => "recover",
        Continue => "continue",
    }
);

text_enum!(
    /// Where a run is in its life.
    RunStatus {
        Running => "running",
        Success => "success",
        Failure => "failure",
        Incomplete => "incomplete",
        /// Stopped from outside (a signal); its stopped tasks failed saying so.
        Interrupted => "interrupted",
    }
);

/// One recovery of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub run_id: Arc<str>,
    pub recovery: i32,
}

/// A run row to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub key: RunKey,
    /// The flow's name.
    pub name: String,
    pub mode: RunMode,
    /// The host the prime coordinator runs on.
    pub host: String,
    /// A description of the program (the flow's definition as JSON), kept for `continue`.
    pub program: String,
    pub started_at: Micros,
    /// The run's parameters, name to value.
    pub params: BTreeMap<String, String>,
    /// The names of the variables its tasks get from the prime's environment (never their
    /// values: those are not stored).
    pub env_from_prime: Vec<String>,
}

/// A run row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub key: RunKey,
    pub name: String,
    pub mode: RunMode,
    pub status: RunStatus,
    pub host: String,
    pub program: String,
    pub started_at: Micros,
    pub ended_at: Option<Micros>,
    /// The run's parameters, name to value; `None` for a run stored before parameters were.
    pub params: Option<BTreeMap<String, String>>,
    /// The names of the variables its tasks got from the prime's environment.
    pub env_from_prime: Vec<String>,
    /// Why it could not do its work, as its coordinator saw it (`None`: it ended on its
    /// own, or was stored before causes were).
    pub cause: Option<String>,
}

/// A task row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: i64,
    pub step: String,
    pub sequence: String,
    pub status: TaskStatus,
    pub attempt: i32,
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// The closure's result as JSON text, or the command's exit code.
    pub result: Option<String>,
    pub error: Option<String>,
    /// The class of its last failed end (`exit:3`, `timeout`, …): what
    /// `eventor_protocol::FailureClass` writes; none for a success, a task not ended yet,
    /// or one stored before the column.
    pub failure_class: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// How many tasks of one run recovery are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    pub run: RunKey,
    pub status: TaskStatus,
    pub count: i64,
}

/// A trigger row as stored: `event` fired in `sequence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRecord {
    pub id: i64,
    pub event: String,
    pub sequence: String,
    pub created_at: Micros,
}

/// A request to a run from outside its coordinator (a `run_requests` row), such as
/// `eventor-coord cancel`: its coordinator acts on it, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub run: RunKey,
    pub kind: RequestKind,
    /// Who asked, as people read it: `eventor-coord cancel (user@host)`.
    pub by: String,
    pub at: Micros,
}

/// What a [`RunRequest`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Stop the run as an interrupt does: nothing new starts, what runs is stopped.
    Cancel,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Cancel => "cancel",
        }
    }

    /// The kind stored as `text`; `None` for one this version does not know (a newer
    /// program's), which a coordinator leaves alone.
    pub fn parse(text: &str) -> Option<RequestKind> {
        match text {
            "cancel" => Some(RequestKind::Cancel),
            _ => None,
        }
    }
}

/// One host's health in a run (a `host_health` row): written by the run's prime when the
/// host's state changes, read by `eventor-coord hosts` and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHealthRecord {
    pub host: String,
    pub state: HostState,
    /// When its quarantine ends (microseconds since the epoch); `None` unless quarantined.
    pub until: Option<Micros>,
    /// Why it is away or quarantined.
    pub reason: Option<String>,
    /// Its last host-class failures, oldest first: when, and why.
    pub failures: Vec<(Micros, String)>,
    pub updated_at: Micros,
}

/// Whether a host takes a run's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Up,
    /// Lost or unreachable, being brought back.
    Away,
    /// Gets no new task until its cool-down ends.
    Quarantined,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Away => "away",
            HostState::Quarantined => "quarantined",
        }
    }

    pub fn parse(text: &str) -> Option<HostState> {
        [HostState::Up, HostState::Away, HostState::Quarantined]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A request row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequestRecord {
    pub id: i64,
    /// `None`: a kind this version does not know.
    pub kind: Option<RequestKind>,
    pub by: String,
    pub created_at: Micros,
}

/// A delay row as stored: association number `assoc` is due in `sequence` at `due_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayRecord {
    pub id: i64,
    pub assoc: i32,
    pub sequence: String,
    pub due_at: Micros,
    pub fired: bool,
    pub created_at: Micros,
}

/// A retry row as stored: the task of step number `step` in `sequence` is retried (its
/// `number`-th retry in the recovery) at `due_at`; `taken` once that retry started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRecord {
    pub id: i64,
    pub step: i32,
    pub sequence: String,
    pub number: i32,
    pub due_at: Micros,
    pub taken: bool,
    pub created_at: Micros,
}

/// One state change decided by the engine. Names are shared `Arc<str>` so that a batch of a
/// hundred thousand changes does not copy each step name a hundred thousand times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `event` fired in `sequence`. Inserting a duplicate is an error.
    Trigger {
        event: Arc<str>,
        sequence: Arc<str>,
        at: Micros,
    },
    /// A new task row. Inserting a duplicate `(step, sequence)` is an error.
    TaskCreated {
        step: Arc<str>,
        sequence: Arc<str>,
        status: TaskStatus,
        attempt: i32,
        host: Option<Arc<str>>,
        at: Micros,
    },
    /// A fenced status change: applies only if the row is at `from` with `attempt`.
    TaskTransition {
        step: Arc<str>,
        sequence: Arc<str>,
        attempt: i32,
        from: TaskStatus,
        to: TaskStatus,
        result: Option<String>,
        error: Option<String>,
        /// The class of a failed end (`exit:3`, `timeout`: `eventor_protocol::FailureClass`
        /// as text); none for a success or a change that is no end.
        failure_class: Option<Arc<str>>,
        at: Micros,
    },
    /// A task goes back to `ready` as a new attempt: an active one whose runner died (with its
    /// coordinator), or one whose attempt failed and that has retries left (fenced: it must
    /// still be at `from` and `attempt`). Its pid is cleared; its last error stays until the
    /// new attempt ends.
    TaskRetry {
        step: Arc<str>,
        sequence: Arc<str>,
        from: TaskStatus,
        attempt: i32,
        new_attempt: i32,
        at: Micros,
    },
    /// The process id of an active task (fenced by attempt and status `active`).
    TaskPid {
        step: Arc<str>,
        sequence: Arc<str>,
        attempt: i32,
        pid: i64,
    },
    /// The cluster host an active task runs on (fenced by attempt and status `active`),
    /// written by the agent with the task's end (a task with no host ran on the prime).
    TaskHost {
        step: Arc<str>,
        sequence: Arc<str>,
        attempt: i32,
        host: Arc<str>,
    },
    /// A delayed association armed in `sequence`, due at `due_at`.
    DelayArmed {
        assoc: i32,
        sequence: Arc<str>,
        due_at: Micros,
        at: Micros,
    },
    /// A delay that became due and was acted on (fenced: it must not have fired already).
    DelayFired { assoc: i32, sequence: Arc<str> },
    /// A failed task's retry, due at `due_at`: its `number`-th in the recovery (the task went
    /// back to `ready` in the same batch, `TaskRetry`). `step` is the step's number, as a
    /// delay's `assoc` is the association's. Inserting a duplicate is an error.
    RetryScheduled {
        step: i32,
        sequence: Arc<str>,
        number: i32,
        due_at: Micros,
        at: Micros,
    },
    /// A retry that became due and started its task again (fenced: it must not have been
    /// taken already).
    RetryTaken {
        step: i32,
        sequence: Arc<str>,
        number: i32,
    },
    /// The shared-pool units one attempt of a task holds go back (none held: nothing to do).
    /// Committed with the task's end, so units are never held by a task that ended.
    GrantReleased {
        step: Arc<str>,
        sequence: Arc<str>,
        attempt: i32,
    },
}

/// Units of shared pools ([`Store::try_grant`](crate::Store::try_grant)) for one attempt of
/// one task: all of them, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub run: RunKey,
    pub step: Arc<str>,
    pub sequence: Arc<str>,
    pub attempt: i32,
    /// `(pool, units)`, each pool once.
    pub units: Vec<(Arc<str>, u32)>,
}

/// Everything one scheduler turn decided, for one run recovery.
#[derive(Debug, Clone)]
pub struct Batch {
    pub run: RunKey,
    pub changes: Vec<Change>,
    pub writer: Writer,
}

/// Who commits a batch. On SQLite it decides how new rows get their ids (`sqlite/ids.rs`);
/// Postgres numbers rows itself and ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The coordinator holding the run's lock, through its one store handle: it writes
    /// nearly every row of the run, so it numbers them from a counter it keeps.
    Coordinator,
    /// Anyone else (`trigger`, `serve`, an agent whose prime is gone): it numbers its rows
    /// above every row the run has, so the run's watcher, which reads rows above the last
    /// one it saw, cannot miss them.
    Other,
}

/// Why a store operation failed. Messages are lowercase; causes are in `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot migrate store {path}")]
    Migrate {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} already exists in the store")]
    Duplicate { what: String },
    #[error("task {step}[{sequence}] attempt {attempt} is no longer {expected}: another writer changed it")]
    Fenced {
        step: String,
        sequence: String,
        attempt: i32,
        expected: TaskStatus,
    },
    #[error("delay {assoc}[{sequence}] has already fired or does not exist")]
    DelayFenced { assoc: i32, sequence: String },
    #[error("retry {number} of step {step}[{sequence}] has already been taken or does not exist")]
    RetryFenced {
        step: i32,
        sequence: String,
        number: i32,
    },
    #[error("no run {0} in the store")]
    NoSuchRun(String),
    #[error("shared pool `{pool}` has {stored} units in the store, not {declared}: every flow that shares it must declare the same units")]
    PoolMismatch {
        pool: String,
        declared: u32,
        stored: u32,
    },
    #[error("shared pool `{0}` is not declared in the store")]
    NoSuchPool(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store query failed")]
    Query(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store's connection owner has stopped")]
    Closed,
    #[error("run {run_id} is already being run by another coordinator")]
    RunLocked { run_id: String },
    /// The run's lock was lost ([`Lease::Lost`](crate::Lease)): this handle writes nothing
    /// more to the run.
    #[error("lost the run lock of run {run_id}: another coordinator may hold the run now")]
    RunLost { run_id: String },
    #[error("cannot use run lock file {path}")]
    LockFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store transaction still conflicted with other writers after {attempts} attempts")]
    Conflict {
        attempts: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("lost the connection to store {store} and could not reconnect within {waited:.0?}")]
    Unavailable {
        store: String,
        waited: std::time::Duration,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
