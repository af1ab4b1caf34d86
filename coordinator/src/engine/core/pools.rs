//! Shared pools: asking the store for a task's shared units, and waiting when they are refused.

use std::sync::Arc;

use eventor_store::Change;

use super::{Core, Effect, TaskId};
use crate::engine::program::StepId;

impl Core {
    /// Tasks waiting for shared-pool units (the run waits for them, whatever its loops).
    pub fn pool_waiting(&self) -> usize {
        if self.stopped {
            return 0;
        }
        self.pool_wait.len()
    }

    /// The shared-pool units a task of `task`'s step acquires: `(pool, units)`.
    pub fn shared_units(&self, task: TaskId) -> Vec<(Arc<str>, u32)> {
        let step = self.program.step(self.task(task).step);
        let pools = &self.program.pools;
        let shared = step
            .acquires
            .iter()
            .filter(|(p, _)| pools[p.0 as usize].shared);
        shared
            .map(|(p, n)| (pools[p.0 as usize].name.clone(), *n))
            .collect()
    }

    pub(super) fn needs_grant(&self, step: StepId) -> bool {
        let pools = &self.program.pools;
        let acquires = &self.program.step(step).acquires;
        acquires.iter().any(|(p, _)| pools[p.0 as usize].shared)
    }

    /// One request at a time: while one is out, later tasks wait their turn (their local
    /// units back), so a refusal costs one store transaction, not one per waiting task.
    pub(super) fn ask_or_park(&mut self, task: TaskId, step: StepId) {
        if self.granting.is_empty() {
            return self.ask_grant(task);
        }
        self.untake_resources(step);
        self.pool_wait.push_back(task);
    }

    /// Holds the task's slot while the store is asked for its shared units.
    pub(super) fn ask_grant(&mut self, task: TaskId) {
        self.occupy(task);
        self.granting.insert(task);
        self.effects.push(Effect::Acquire(task));
    }

    /// The store's answer: start the task, or free its slot and local units and wait. A
    /// grant that comes after a stop goes back at once.
    pub(super) fn granted(&mut self, task: TaskId, granted: bool) {
        if !self.granting.remove(&task) {
            return;
        }
        if granted && !self.stopped {
            self.launch(task);
            return self.wake_pool_waiters(); // the next one asks
        }
        if granted {
            self.changes.push(self.grant_released(task));
        }
        let step = self.task(task).step;
        self.vacate(task);
        self.untake_resources(step);
        self.release_held(step);
        self.pool_wait.push_front(task); // first in line when units come back
    }

    /// Every task waiting on shared units asks again, in arrival order, before the queue.
    pub(super) fn wake_pool_waiters(&mut self) {
        while let Some(task) = self.pool_wait.pop_back() {
            self.queue.push_front(task);
        }
    }

    pub(super) fn grant_released(&self, task: TaskId) -> Change {
        let t = self.task(task);
        Change::GrantReleased {
            step: self.program.step(t.step).name.clone(),
            sequence: t.sequence.clone(),
            attempt: t.attempt,
        }
    }
}
