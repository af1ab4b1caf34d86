//! How a run ended, as the API reports it.

use std::time::{Duration, SystemTime};

use eventor_store::Micros;

use crate::engine::core::Core;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Success,
    /// Some task failed and nothing handled it.
    Failure {
        failed: Vec<FailedTask>,
    },
    /// The loops ran out (or delays are pending) with work left.
    Incomplete {
        outstanding: usize,
        next_due: Option<SystemTime>,
    },
    /// Stopped from outside (a signal, a cancel); the tasks it stopped failed saying so.
    Interrupted {
        /// Why, as a phrase: `interrupted by SIGINT`, `cancelled by eventor-coord cancel
        /// (user@host)`.
        reason: String,
    },
}

impl RunOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Success)
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunOutcome::Success => write!(f, "success"),
            RunOutcome::Failure { failed } => {
                write!(f, "failure: ")?;
                for (i, task) in failed.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}[{}]", task.step, task.sequence)?;
                    if let Some(error) = &task.error {
                        write!(f, " ({error})")?;
                    }
                }
                Ok(())
            }
            RunOutcome::Incomplete {
                outstanding,
                next_due,
            } => {
                write!(f, "incomplete: {outstanding} outstanding")?;
                if let Some(due) = next_due {
                    write!(
                        f,
                        ", next due at {}",
                        humantime::format_rfc3339_seconds(*due)
                    )?;
                }
                Ok(())
            }
            RunOutcome::Interrupted { reason } => write!(f, "{reason}"),
        }
    }
}

/// A task that failed without a failure trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    pub step: String,
    pub sequence: String,
    pub error: Option<String>,
}

pub(super) fn outcome_of(core: &Core) -> RunOutcome {
    if let Some(reason) = core.interrupted() {
        return RunOutcome::Interrupted {
            reason: reason.to_string(),
        };
    }
    if !core.failed().is_empty() {
        let failed = core
            .failed()
            .iter()
            .map(|f| {
                let task = core.task(f.task);
                FailedTask {
                    step: core.program().step(task.step).name.to_string(),
                    sequence: task.sequence.to_string(),
                    error: f.error.clone(),
                }
            })
            .collect();
        return RunOutcome::Failure { failed };
    }
    let outstanding = core.waiting() + core.pending_delays();
    if outstanding > 0 {
        return RunOutcome::Incomplete {
            outstanding,
            next_due: core.next_due().map(system_time),
        };
    }
    RunOutcome::Success
}

fn system_time(micros: Micros) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}
