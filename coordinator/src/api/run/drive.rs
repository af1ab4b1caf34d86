//! A run's loops: the start triggers handed to the core, the log and cluster attached, the
//! executor made, the driver run under the run's lease, and the executor and cluster shut
//! down after it.

use std::sync::Arc;
use std::time::Duration;

use eventor_store::{now_micros, StoreError};
use tokio::sync::mpsc;

use super::attach::{central_output, Attached, EXEC_EVENTS};
use super::Run;
use crate::api::error::EventorError;
use crate::api::options::EventorOptions;
use crate::api::outcome::{outcome_of, RunOutcome};
use crate::api::run_lease::RunLease;
use crate::engine::core::Input;
use crate::engine::driver::{drive, DriverContext, Loops};
use crate::engine::events::{ExecEvent, PinnedTasks};
use crate::engine::executor::{Executor, ExecutorConfig};
use crate::engine::program::EventId;
use crate::log::{CentralLog, TaskLogs};

/// How long each agent gets to finish its tasks once told the run is over.
const HOSTS_GRACE: Duration = Duration::from_secs(10);

impl Run {
    /// Fires the start triggers queued since the last call.
    pub(super) fn trigger(&mut self, starts: Vec<(EventId, Arc<str>)>) {
        for (event, sequence) in starts {
            let input = Input::Trigger { event, sequence };
            self.core.handle(input, now_micros());
        }
    }

    /// One `run` call: log and hosts attached, the loops under the run's lease, the end
    /// stored (`finish.rs`).
    pub(super) async fn go(
        &mut self,
        options: &EventorOptions,
        loops: Loops,
    ) -> Result<RunOutcome, EventorError> {
        let config = ExecutorConfig {
            closure_threads: options.closure_threads,
            kill_grace: options.kill_grace,
        };
        let central = self.open_log(options).await?;
        let attached = match self.attach_cluster(options, central.as_ref()).await {
            Ok(attached) => attached,
            // The log ends with why nothing ran (its run row gets the same cause).
            Err(error) => {
                if let Some(log) = central {
                    let end = format!("failure: {}", crate::error_chain(&error));
                    super::finish::close_log(log, &end).await;
                }
                return Err(error);
            }
        };
        let lease = RunLease::new(&self.guard, &self.state.interrupt);
        let result = lease
            .watch(self.drive(loops, config, central.as_ref(), attached))
            .await?;
        self.finish(central, result).await
    }

    /// Drives the core through the requested loops and turns its state into an outcome.
    async fn drive(
        &mut self,
        loops: Loops,
        config: ExecutorConfig,
        central: Option<&CentralLog>,
        attached: Option<Attached>,
    ) -> Result<RunOutcome, StoreError> {
        let (tx, mut rx, remote) = match attached {
            Some(a) => (a.events, a.received, Some(Arc::new(a.remote))),
            None => {
                let (tx, rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
                (tx, rx, None)
            }
        };
        let has_file = central.is_some_and(|log| log.file().is_some());
        let central = central.map(central_output);
        // Only into a file: a log that only echoes on the console takes no closure's records.
        let _task_logs = (central.clone())
            .filter(|_| has_file)
            .map(|c| TaskLogs::open(&self.state.run.run_id, c));
        let pinned = remote.clone().map(|r| r as Arc<dyn PinnedTasks>);
        let run_env = self.state.run_env.clone();
        let executor = Executor::new(tx, &self.state.interrupt, config, central, pinned, run_env);
        let cx = DriverContext {
            state: &mut self.state,
            executor: &executor,
            events: &mut rx,
        };
        let result = drive(&mut self.core, cx, loops).await;
        executor.shutdown().await;
        drop(executor);
        match remote.map(Arc::try_unwrap) {
            Some(Ok(remote)) => remote.shutdown(HOSTS_GRACE).await,
            Some(Err(_)) => {
                tracing::warn!("the cluster is still held at the run's end: its links end without their agents' last lines")
            }
            None => {}
        }
        result?;
        Ok(outcome_of(&self.core))
    }
}
