//! Which hosts a task of an earlier coordinator of the run may still be running on.
//!
//! A coordinator that died (or lost its store) leaves its tasks `active` in the store. On a
//! cluster host such a task may still run: its agent keeps it going for its lease, waiting
//! for a prime. A recovery or continue must not decide about them before that lease is out
//! (their agents may still record their ends), so it waits it out first. The tasks
//! are found as each (step, sequence)'s latest row across the run's recoveries, as the
//! recovery itself decides them: a row left active by a recovery that a later one redid is
//! not a leftover.

use std::collections::{BTreeSet, HashMap};

use eventor_store::{RunKey, Store, StoreError, TaskStatus};

use crate::engine::executor::StepRuntime;
use crate::engine::program::Program;

/// The hosts of the steps whose latest task of the run (up to `key`'s recovery) is active.
pub(crate) async fn leftover_hosts(
    store: &Store,
    key: &RunKey,
    program: &Program,
    steps: &[StepRuntime],
) -> Result<Vec<String>, StoreError> {
    let mut latest: HashMap<(String, String), TaskStatus> = HashMap::new();
    let history = store.run_history(&key.run_id).await?;
    for record in history.iter().filter(|r| r.key.recovery <= key.recovery) {
        for task in store.tasks(record.key.clone()).await? {
            latest.insert((task.step, task.sequence), task.status);
        }
    }
    let hosts_of: HashMap<&str, &StepRuntime> = program
        .steps
        .iter()
        .zip(steps)
        .map(|(def, runtime)| (&*def.name, runtime))
        .collect();
    let mut hosts = BTreeSet::new();
    for ((step, _), status) in latest {
        if status != TaskStatus::Active {
            continue;
        }
        if let Some(runtime) = hosts_of.get(step.as_str()) {
            hosts.extend(runtime.hosts().iter().map(|h| h.to_string()));
        }
    }
    Ok(hosts.into_iter().collect())
}
