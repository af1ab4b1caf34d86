//! Why defining or running a flow failed, and which of those are the user's input.

use std::path::PathBuf;

use eventor_agent::AgentError;
use eventor_store::{RunMode, StoreError};

use crate::cluster::ClusterError;
use crate::log::CentralLogError;

/// Why defining or running a flow failed. Messages are lowercase; causes in `source`.
#[derive(Debug, thiserror::Error)]
pub enum EventorError {
    #[error("`{0}` is already defined")]
    Duplicate(String),
    #[error("event `{event}`: {message}")]
    BadExpression { event: String, message: String },
    #[error("{context}: unknown event `{name}`")]
    UnknownEvent { context: String, name: String },
    #[error("{context}: unknown {what} `{name}`")]
    UnknownTarget {
        context: String,
        /// `step or event`, `step` or `event`: what the target said it is.
        what: &'static str,
        name: String,
    },
    #[error(
        "{context}: `{name}` is both a step and an event: write {{step: {name}}} or {{event: {name}}}"
    )]
    AmbiguousTarget { context: String, name: String },
    #[error("resource pool `{0}` is defined twice")]
    DuplicatePool(String),
    #[error("step `{step}`: unknown resource pool `{pool}`")]
    UnknownPool { step: String, pool: String },
    #[error("step `{step}`: acquires {wanted} of pool `{pool}`, whose capacity is {capacity}")]
    OverCapacity {
        step: String,
        pool: String,
        wanted: u32,
        capacity: u32,
    },
    #[error("no {} to {mode} in {store}", match run_id {
        Some(id) => format!("run {id}"),
        None => format!("previous run of flow {flow}"),
    })]
    NoPreviousRun {
        mode: RunMode,
        flow: String,
        /// The run asked for (`--run-id`), if any; else the flow's latest was looked for.
        run_id: Option<String>,
        store: String,
    },
    #[error("run {run_id} has no recovery {recovery} in {store}")]
    NoSuchRecovery {
        run_id: String,
        recovery: i32,
        store: String,
    },
    #[error("{0}")]
    RunLocked(String),
    /// A shared pool the store holds with other units than this flow declares.
    #[error("{0}")]
    PoolMismatch(String),
    #[error("central log")]
    Log(#[source] CentralLogError),
    #[error("step `{step}` is pinned to host `{host}`, which {}{near}", match hosts_file {
        Some(path) => format!("{} does not name", path.display()),
        None => "needs a hosts file (--hosts)".to_string(),
    })]
    UnknownHost {
        step: String,
        host: String,
        hosts_file: Option<PathBuf>,
        /// "; did you mean `node1`?" for a host of the file close to `host`, else empty.
        near: String,
    },
    #[error("cannot reach the cluster")]
    Cluster(#[source] ClusterError),
    #[error("serving as an agent")]
    Agent(#[source] AgentError),
    #[error("store {store}")]
    Store {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot start a runtime for the run")]
    Runtime(#[source] std::io::Error),
    #[error("run() was called inside a tokio runtime; use run_async().await there")]
    InsideRuntime,
    #[error("the eventor is closed")]
    Closed,
    #[error("{what} `{}` {why}", value.escape_debug())]
    BadName {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("store {store}: {why}")]
    BadStore { store: String, why: String },
    #[error("the log directory {} is not writable", dir.display())]
    LogdirUnwritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("max_loops must be at least 1 (or negative: no limit), found {0}")]
    BadMaxLoops(i64),
    /// This prime lost its run lock (cut off from the store for longer than `dead_after`):
    /// it wrote nothing more and left the run and its agents to the new coordinator.
    #[error("run {run_id}: run taken over by another coordinator (this one lost contact with the store)")]
    RunTakenOver {
        run_id: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "run {run_id} already exists in {store}: use --mode recover to go on with it, \
             another --run-id for a new run, or --replace to drop its history and restart"
    )]
    RunExists { run_id: String, store: String },
    #[error("unknown parameter `{name}` (the flow's parameters: {known}){hint}")]
    UnknownParam {
        name: String,
        /// The declared names, joined, or `none`.
        known: String,
        /// `; did you mean …?`, or nothing.
        hint: String,
    },
    #[error("parameter `{name}` is required and has no value (pass --param {name}=VALUE)")]
    MissingParam { name: String },
    #[error(transparent)]
    MissingPrimeVar(#[from] crate::engine::prime_env::MissingPrimeVar),
}

/// Whose the error is: the user's input (exit 2), or the run's (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A definition, an option or a missing earlier run.
    Input,
    /// The store, the runtime, the cluster or the log failed while running.
    Run,
    /// The run could not start its work: its store cannot be reached (or opened), or its
    /// log folder cannot be written. Exit status 4, apart from a failed flow's 1.
    CannotRun,
}

impl EventorError {
    /// Every variant says whose it is, so a new one cannot be misfiled by default.
    pub fn kind(&self) -> ErrorKind {
        use EventorError::*;
        match self {
            Duplicate(_) | BadExpression { .. } | UnknownEvent { .. } | UnknownTarget { .. } => {
                ErrorKind::Input
            }
            AmbiguousTarget { .. } => ErrorKind::Input,
            DuplicatePool(_) | UnknownPool { .. } | OverCapacity { .. } => ErrorKind::Input,
            NoPreviousRun { .. } | NoSuchRecovery { .. } | RunLocked(_) => ErrorKind::Input,
            PoolMismatch(_) => ErrorKind::Input,
            RunExists { .. } | BadName { .. } | BadStore { .. } => ErrorKind::Input,
            LogdirUnwritable { .. } => ErrorKind::CannotRun,
            Store { source, .. } if unreachable(source) => ErrorKind::CannotRun,
            UnknownParam { .. } | MissingParam { .. } | MissingPrimeVar(_) => ErrorKind::Input,
            UnknownHost { .. } | InsideRuntime | BadMaxLoops(_) => ErrorKind::Input,
            Cluster(e) if e.is_set_up() => ErrorKind::Input,
            Store { .. } | Runtime(_) | Closed | Cluster(_) | Agent(_) | Log(_) => ErrorKind::Run,
            RunTakenOver { .. } => ErrorKind::Run,
        }
    }

    /// Whether the error is in what the user gave rather than a failure while running.
    pub fn is_input_error(&self) -> bool {
        self.kind() == ErrorKind::Input
    }
}

/// A store that cannot be reached or opened: nothing of the run could be done there.
fn unreachable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Open { .. } | StoreError::Unavailable { .. } | StoreError::Migrate { .. }
    )
}

/// Wraps a store failure with the store's name.
pub(super) fn store_error(store: String) -> impl Fn(StoreError) -> EventorError {
    move |source| EventorError::Store {
        store: store.clone(),
        source,
    }
}
