//! What a run attaches before its loops: the central log, and the cluster of the hosts its
//! steps are pinned to.

use std::sync::Arc;

use eventor_agent::StepAction;
use tokio::sync::mpsc;

use super::Run;
use crate::api::error::EventorError;
use crate::api::options::EventorOptions;
use crate::cluster::{ClusterSettings, Remote, RunCluster};
use crate::engine::events::ExecEvent;
use crate::engine::executor::StepRuntime;
use crate::log::{CentralLog, CentralLogConfig, CentralOutput, ConsoleOutput};

/// Executor events queued ahead of the driver.
pub(super) const EXEC_EVENTS: usize = 4096;

/// The run's cluster, and the channel its events (and the local tasks') reach the driver on.
pub(super) struct Attached {
    pub(super) remote: Remote,
    pub(super) events: mpsc::Sender<ExecEvent>,
    pub(super) received: mpsc::Receiver<ExecEvent>,
}

impl Run {
    /// The run's central log, when the options name a folder for it or echo task output
    /// directly on the console.
    pub(super) async fn open_log(
        &self,
        options: &EventorOptions,
    ) -> Result<Option<CentralLog>, EventorError> {
        open_log(options, &self.state.run.run_id).await
    }

    /// Connects to the hosts the flow's steps are pinned to (none: `None`), all at once.
    pub(super) async fn attach_cluster(
        &self,
        options: &EventorOptions,
        central: Option<&CentralLog>,
    ) -> Result<Option<Attached>, EventorError> {
        let Some(cluster) = &options.cluster else {
            return Ok(None);
        };
        let names = self.host_names();
        if names.is_empty() {
            return Ok(None);
        }
        let state = &self.state;
        let remote_closures = remote_closures(&state.steps);
        let run_id = &state.run.run_id;
        let mut settings =
            ClusterSettings::for_run(cluster, run_id, &self.location, remote_closures)
                .map_err(EventorError::Cluster)?;
        // A recovery or continue may find agents of the run that outlived its last prime.
        settings.adopt = options.run_mode != eventor_store::RunMode::Restart;
        let run = RunCluster {
            settings,
            names,
            store: state.store.clone(),
            run: state.run.clone(),
            central: central.map(central_output),
            run_socket: self.run_socket.clone(),
            root: self.root.child_token(),
        };
        let (events, received) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
        let remote = Remote::connect(run, events.clone())
            .await
            .map_err(EventorError::Cluster)?;
        Ok(Some(Attached {
            remote,
            events,
            received,
        }))
    }

    /// The hosts the flow's steps are pinned to, sorted, without repeats.
    fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .steps
            .iter()
            .flat_map(|s| s.hosts().iter().map(|h| h.to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Whether any closure step is pinned to a host (the program then is its own agent there).
pub(super) fn remote_closures(steps: &[StepRuntime]) -> bool {
    steps.iter().any(|s| {
        !s.hosts().is_empty() && matches!(s.action, StepAction::Sync(_) | StepAction::Async(_))
    })
}

/// The run's central log (and console echo) as `options` ask: see [`CentralLog::open_to`].
pub(super) async fn open_log(
    options: &EventorOptions,
    run_id: &str,
) -> Result<Option<CentralLog>, EventorError> {
    let echo = match &options.console_output {
        ConsoleOutput::Direct(echo) => Some(echo),
        ConsoleOutput::Events => None,
    };
    let (dir, config) = (options.logdir.as_deref(), CentralLogConfig::default());
    let log = CentralLog::open_to(dir, &options.name, run_id, config, echo).await;
    log.map_err(EventorError::Log)
}

/// The central log as this host's output goes into it.
pub(super) fn central_output(log: &CentralLog) -> CentralOutput {
    CentralOutput {
        sink: log.sink(),
        host: Arc::from(crate::log::PRIME),
    }
}
