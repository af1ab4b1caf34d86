//! A run's status as `status --json` prints it, for a program that runs the flow itself
//! (the original's `count_todos`): from inside one of the run's tasks, its coordinator
//! answers through the run's trigger socket; otherwise it is read from the store.

use super::state::Eventor;
use crate::report::json::StatusJson;
use crate::report::{open_store, run_report, ReportError, RunSelector};

/// Why a run's status could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach the task's run")]
    Socket(#[source] std::io::Error),
    #[error("the run cannot say its status: {0}")]
    Refused(String),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot start a runtime to read the store")]
    Runtime(#[source] std::io::Error),
}

impl Eventor {
    /// The status of this flow's run, as one line of JSON (`status --json`'s object): asked
    /// of its coordinator from inside one of its tasks, else read from its store (the run
    /// named by `run_id`, or the flow's latest). Not from inside an async runtime.
    pub fn status_json(&self) -> Result<String, StatusError> {
        let task = eventor_agent::current_task().filter(|t| *t.run_id == *self.run_id);
        if let Some(socket) = task.and_then(|t| t.trigger_socket.clone()) {
            let answer = eventor_agent::trigger_socket::status(std::path::Path::new(&*socket))
                .map_err(StatusError::Socket)?;
            return answer.map_err(StatusError::Refused);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StatusError::Runtime)?;
        runtime.block_on(self.stored_status())
    }

    async fn stored_status(&self) -> Result<String, StatusError> {
        // Read only: a store that is not there is not made.
        let store = open_store(&self.store_location()).await?;
        let selector = RunSelector {
            flow: Some(self.options.name.clone()),
            run_id: (!self.run_id.is_empty()).then(|| self.run_id.to_string()),
            recovery: None,
        };
        let report = run_report(&store, &selector).await?;
        Ok(serde_json::to_string(&StatusJson::of(&report)).unwrap_or_default())
    }
}
