//! Limits and run-local resources: the global and per-step slots, the units tasks take and
//! give back.

use super::{Core, TaskId};
use crate::engine::program::StepId;

impl Core {
    pub(super) fn can_start_front(&self) -> bool {
        self.queue.front().is_some_and(|_| self.global_room())
    }

    pub(super) fn global_room(&self) -> bool {
        self.program.max_concurrent.allows(self.active)
    }

    pub(super) fn step_full(&self, step: StepId) -> bool {
        let running = self.active_per_step[step.0 as usize] as usize;
        !self.program.step(step).max_concurrent.allows(running)
    }

    /// Counts the task against the global and per-step limits.
    pub(super) fn occupy(&mut self, task: TaskId) {
        self.active += 1;
        let step = self.task(task).step;
        self.active_per_step[step.0 as usize] += 1;
    }

    /// Frees the task's slot in the limits.
    pub(super) fn vacate(&mut self, task: TaskId) {
        self.active -= 1;
        let step = self.task(task).step;
        let running = &mut self.active_per_step[step.0 as usize];
        *running = running.saturating_sub(1);
    }

    /// Takes every acquisition of `step`, or none of them.
    pub(super) fn try_take_resources(&mut self, step: StepId) -> bool {
        let program = self.program.clone();
        let acquires = &program.step(step).acquires;
        let local = acquires
            .iter()
            .filter(|(p, _)| !program.pools[p.0 as usize].shared);
        if local
            .clone()
            .any(|&(pool, n)| self.free[pool.0 as usize] < n)
        {
            return false;
        }
        self.take_resources_unchecked(step);
        true
    }

    pub(super) fn take_resources_unchecked(&mut self, step: StepId) {
        let program = self.program.clone();
        for &(pool, n) in &program.step(step).acquires {
            let free = &mut self.free[pool.0 as usize];
            *free = free.saturating_sub(n);
        }
    }

    /// Gives back what `step` took of run-local pools (its shared units were refused).
    pub(super) fn untake_resources(&mut self, step: StepId) {
        let program = self.program.clone();
        for &(pool, n) in &program.step(step).acquires {
            let capacity = program.pools[pool.0 as usize].capacity;
            let free = &mut self.free[pool.0 as usize];
            *free = (*free + n).min(capacity);
        }
    }

    /// Gives back what `step` releases, and lets every task waiting on a pool try again.
    pub(super) fn give_back_resources(&mut self, step: StepId) {
        let program = self.program.clone();
        let releases = &program.step(step).releases;
        for &(pool, n) in releases {
            let capacity = program.pools[pool.0 as usize].capacity;
            let free = &mut self.free[pool.0 as usize];
            *free = (*free + n).min(capacity);
        }
        if !releases.is_empty() {
            while let Some(task) = self.resource_wait.pop_back() {
                self.queue.push_front(task);
            }
        }
    }

    /// Puts one task held by the step's limit back at the front of the queue.
    pub(super) fn release_held(&mut self, step: StepId) {
        if let Some(held) = self.held.get_mut(&step) {
            if let Some(task) = held.pop_front() {
                self.queue.push_front(task);
            }
        }
    }
}
