//! How a run is set up: the options an [`Eventor`](super::Eventor) is built with.

use std::path::PathBuf;
use std::time::Duration;

use eventor_store::{RunMode, StoreLocation};

use super::config::EventorConfig;
use crate::cluster::ClusterOptions;
use crate::engine::interrupt::Interrupt;
use crate::log::ConsoleOutput;

/// How a run is set up. Build with struct update syntax:
/// `EventorOptions { name: "nightly".into(), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct EventorOptions {
    /// The flow's name: names the default store file and the runs in it.
    pub name: String,
    /// Where the store is; `None`: `<name>.run.db` in the working directory.
    pub store: Option<StoreLocation>,
    pub run_mode: RunMode,
    /// A restart under a run id the store already holds drops that id's history first
    /// (`--replace`); otherwise it is refused.
    pub replace_history: bool,
    /// The run's id; `None`: a new one is generated (and reported by [`Eventor::run_id`]), or
    /// for recover/continue, the latest run of this flow in the store.
    pub run_id: Option<String>,
    /// Recover from this recovery of the run instead of its latest one.
    pub recovery: Option<i32>,
    pub config: EventorConfig,
    /// How long a stopped command gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Where the run's central log goes (`<logdir>/<flow>/<run_id>.log`, read with
    /// `eventor-coord logs`); `None`: no central log, output only in the console log.
    pub logdir: Option<PathBuf>,
    /// How tasks' output lines reach the console: `eventor::output` tracing events (the
    /// default), or written directly in the central log's format, batched
    /// ([`ConsoleOutput::Direct`], what `eventor-coord run` does: about 2 µs a line cheaper).
    pub console_output: ConsoleOutput,
    /// Stops the run from outside (the CLI fires it on SIGINT, SIGTERM and SIGHUP): nothing
    /// new starts, running commands are stopped, the outcome is `Interrupted`.
    pub interrupt: Option<Interrupt>,
    /// The cluster, for steps pinned to hosts; `None`: everything runs here.
    pub cluster: Option<ClusterOptions>,
    /// Most threads running blocking closure steps at once; more ready closures wait for a
    /// thread (a bounded pool keeps a fan-out of 100,000 closures from starting thousands).
    pub closure_threads: usize,
    /// With [`RunMode::Recover`]: tasks run again although they succeeded (`--rerun`), what
    /// their success triggered following as usual.
    pub rerun: Vec<RerunTask>,
    /// The run's parameter values given by the user (`--param NAME=VALUE`): each must be
    /// declared ([`Eventor::declare_param`](super::Eventor::declare_param)); they replace a
    /// recovery's or continue's stored values.
    pub params: std::collections::BTreeMap<String, String>,
}

/// A task a recovery runs again whatever it did before: a step in one sequence, or in every
/// sequence (`sequence: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunTask {
    pub step: String,
    pub sequence: Option<String>,
}

impl Default for EventorOptions {
    fn default() -> Self {
        EventorOptions {
            name: "eventor".to_string(),
            store: None,
            run_mode: RunMode::Restart,
            replace_history: false,
            run_id: None,
            recovery: None,
            config: EventorConfig::default(),
            kill_grace: Duration::from_secs(5),
            logdir: None,
            console_output: ConsoleOutput::Events,
            cluster: None,
            interrupt: None,
            closure_threads: 64,
            rerun: Vec::new(),
            params: Default::default(),
        }
    }
}
