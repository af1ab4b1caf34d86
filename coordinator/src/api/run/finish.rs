//! A run's end as stored: the central log completed, the run row's final status, and a run
//! that failed after its row was written recorded as failed rather than left `running`.

use eventor_store::{now_micros, RunStatus, StoreError};

use super::Run;
use crate::api::error::EventorError;
use crate::api::outcome::RunOutcome;
use crate::api::run_lease::run_failure;
use crate::log::CentralLog;

impl Run {
    /// Completes the central log and stores the run's status for the loops' `result`.
    pub(super) async fn finish(
        &self,
        central: Option<CentralLog>,
        result: Result<RunOutcome, StoreError>,
    ) -> Result<RunOutcome, EventorError> {
        let (store, key) = (&self.state.store, &self.state.run);
        let store_name = store.describe();
        if let Some(log) = central {
            let end = match &result {
                Ok(outcome) => outcome.to_string(),
                Err(e) => format!("failure: {}", crate::error_chain(e)),
            };
            close_log(log, &end).await;
        }
        let outcome = result.map_err(|source| run_failure(&store_name, source))?;
        let status = match &outcome {
            RunOutcome::Success => RunStatus::Success,
            RunOutcome::Failure { .. } => RunStatus::Failure,
            RunOutcome::Incomplete { .. } => RunStatus::Incomplete,
            RunOutcome::Interrupted { .. } => RunStatus::Interrupted,
        };
        store
            .set_run_status(key.clone(), status, now_micros())
            .await
            .map_err(|source| run_failure(&store_name, source))?;
        tracing::info!(run_id = %key.run_id, "Processing finished with: {outcome}");
        Ok(outcome)
    }

    /// A run that fails after its row was written (no hosts, no log) is recorded as failed,
    /// with its cause on its row and in the log, rather than left `running` forever; a run
    /// another coordinator took over is not ours to write any more.
    pub(super) async fn record_failed(&self, error: &EventorError) {
        if matches!(error, EventorError::RunTakenOver { .. }) {
            return;
        }
        let (store, key) = (&self.state.store, &self.state.run);
        let cause = crate::error_chain(error);
        tracing::error!(run_id = %key.run_id, error = %cause, "the run failed");
        let caused = store.set_run_cause(key.clone(), &cause).await;
        let failed = match caused {
            Ok(()) => {
                store
                    .set_run_status(key.clone(), RunStatus::Failure, now_micros())
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = failed {
            tracing::warn!(error = %e, "cannot record the run as failed");
        }
    }
}

/// Ends the central log with `end` (`-- end of run ID: END`).
pub(super) async fn close_log(log: CentralLog, end: &str) {
    if let Err(e) = log.close(end).await {
        tracing::warn!(error = %e, "the central log could not be completed");
    }
}
