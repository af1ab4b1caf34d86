//! Recording a remote task's final status in the shared store, before the prime hears of it:
//! one fenced `active → success|failure` transition, so a result survives the prime dying.

use std::sync::Arc;

use eventor_protocol::{Outcome, TaskKey};
use eventor_store::{Batch, Change, RunKey, Store, StoreError, TaskStatus};

use super::task::TaskEnd;
use super::writer::error_chain;

/// What became of the record.
#[derive(Debug)]
pub(super) enum Recorded {
    /// The agent has no store: the prime records the result.
    NoStore,
    /// The store took it.
    Written,
    /// Another writer had already moved the task on (a cancel, a recovery): the store keeps
    /// that writer's decision.
    Fenced(String),
    /// The store failed: the prime must record the result itself.
    Failed(String),
}

/// Commits `end` as the task's final status, fenced by its attempt and `active`.
pub(super) async fn record(store: Option<&Store>, key: &TaskKey, end: &TaskEnd) -> Recorded {
    let Some(store) = store else {
        return Recorded::NoStore;
    };
    match store.commit(batch(key, end)).await {
        Ok(()) => Recorded::Written,
        Err(error @ StoreError::Fenced { .. }) => Recorded::Fenced(error.to_string()),
        Err(error) => Recorded::Failed(error_chain(&error)),
    }
}

fn batch(key: &TaskKey, end: &TaskEnd) -> Batch {
    let to = match end.status {
        Outcome::Success => TaskStatus::Success,
        // The store has no "cancelled": like a local cancel or timeout, it is a failure
        // whose error says why.
        Outcome::Failure | Outcome::Cancelled | Outcome::TimedOut => TaskStatus::Failure,
    };
    Batch {
        run: RunKey {
            run_id: Arc::from(key.run_id.as_str()),
            recovery: key.recovery,
        },
        changes: vec![Change::TaskTransition {
            step: Arc::from(key.step.as_str()),
            sequence: Arc::from(key.sequence.as_str()),
            attempt: key.attempt,
            from: TaskStatus::Active,
            to,
            result: end.result.clone(),
            error: end.error.clone(),
            at: eventor_store::now_micros(),
        }],
    }
}
