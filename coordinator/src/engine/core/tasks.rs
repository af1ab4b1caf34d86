//! Tasks: creating them, starting them as the limits allow, recording their statuses and ends.

use std::sync::Arc;

use eventor_store::{Change, TaskStatus};

use super::{Core, Effect, Failed, Outcome, Task, TaskId};
use crate::engine::program::StepId;

impl Core {
    pub(super) fn index_task(&mut self, step: StepId, sequence: &Arc<str>, id: TaskId) {
        let tasks = match self.task_index.get_mut(sequence) {
            Some(tasks) => tasks,
            None => self.task_index.entry(sequence.clone()).or_default(),
        };
        tasks.insert(step, id);
    }

    /// Creates the task of `step` in `sequence` unless it exists (one task per step and
    /// sequence in a recovery). In a recovery, the step's policy may carry the previous
    /// outcome over instead of queueing the task.
    pub(super) fn create_task(&mut self, step: StepId, sequence: Arc<str>) {
        if self.find_task(step, &sequence).is_some() {
            return;
        }
        let previous = self
            .options
            .previous
            .get(&(step, sequence.clone()))
            .cloned();
        let carried = previous.as_ref().and_then(|p| self.carried_over(step, p));
        let attempt = match (&previous, carried) {
            (Some(p), Some(_)) => p.attempt, // not run again: keeps its attempt number
            (Some(p), None) => p.attempt + 1,
            (None, _) => 1,
        };
        let id = TaskId(self.tasks.len() as u32);
        self.index_task(step, &sequence, id);
        self.changes.push(Change::TaskCreated {
            step: self.program.step(step).name.clone(),
            sequence: sequence.clone(),
            status: TaskStatus::Ready,
            attempt,
            host: None,
            at: self.now,
        });
        self.tasks.push(Task {
            step,
            sequence,
            status: TaskStatus::Ready,
            attempt,
            retries: 0,
            pending_create: Some((self.changes.len() - 1) as u32),
        });
        self.uncommitted.push(id);
        self.fire_status_triggers(id, TaskStatus::Ready);
        match carried {
            Some(status) => self.carry_over(id, status),
            None => self.queue.push_back(id),
        }
    }

    /// Starts queued tasks while the limits and the stop flag allow.
    pub(super) fn schedule(&mut self) {
        loop {
            self.drain_work();
            if self.stopped || !self.global_room() {
                return;
            }
            let Some(&task) = self.queue.front() else {
                return;
            };
            self.queue.pop_front();
            let step = self.task(task).step;
            if self.step_full(step) {
                self.held.entry(step).or_default().push_back(task);
                continue;
            }
            if !self.try_take_resources(step) {
                self.resource_wait.push_back(task);
                continue;
            }
            if self.needs_grant(step) {
                self.ask_or_park(task, step);
                continue;
            }
            self.start(task);
        }
    }

    /// Moves a task from ready to active. Recovery and resources hook in here.
    pub(super) fn start(&mut self, task: TaskId) {
        self.occupy(task);
        self.launch(task);
    }

    /// Records the (occupying) task active and has the driver start it.
    pub(super) fn launch(&mut self, task: TaskId) {
        self.set_status(task, TaskStatus::Active, None, None);
        self.effects.push(Effect::Start(task));
        self.fire_status_triggers(task, TaskStatus::Active);
    }

    /// Records a status change: rewrites an uncommitted create, or adds a fenced transition.
    pub(super) fn set_status(
        &mut self,
        task: TaskId,
        to: TaskStatus,
        result: Option<String>,
        error: Option<String>,
    ) {
        let now = self.now;
        let record = &mut self.tasks[task.0 as usize];
        let from = std::mem::replace(&mut record.status, to);
        if let (Some(index), None, None) = (record.pending_create, &result, &error) {
            if let Change::TaskCreated { status, .. } = &mut self.changes[index as usize] {
                *status = to;
                return;
            }
        }
        self.changes.push(Change::TaskTransition {
            step: self.program.step(record.step).name.clone(),
            sequence: record.sequence.clone(),
            attempt: record.attempt,
            from,
            to,
            result,
            error,
            at: now,
        });
    }

    pub(super) fn record_pid(&mut self, task: TaskId, pid: i64) {
        let Some(record) = self.tasks.get(task.0 as usize) else {
            return;
        };
        if record.status != TaskStatus::Active {
            return;
        }
        self.changes.push(Change::TaskPid {
            step: self.program.step(record.step).name.clone(),
            sequence: record.sequence.clone(),
            attempt: record.attempt,
            pid,
        });
    }

    pub(super) fn finish(&mut self, task: TaskId, outcome: Outcome) {
        let Some(record) = self.tasks.get(task.0 as usize) else {
            return;
        };
        if record.status != TaskStatus::Active {
            return; // a stale report (e.g. after a cancel); the store is already right
        }
        let step = record.step;
        let status = if outcome.success {
            TaskStatus::Success
        } else {
            TaskStatus::Failure
        };
        let error = outcome.error.clone();
        if outcome.recorded {
            self.tasks[task.0 as usize].status = status;
        } else {
            self.set_status(task, status, outcome.result, outcome.error);
        }
        self.vacate(task);
        self.release_held(step);
        self.give_back_resources(step);
        if self.needs_grant(step) {
            self.changes.push(self.grant_released(task));
            self.wake_pool_waiters();
        }
        if status == TaskStatus::Failure && self.may_retry(task) {
            return self.retry(task);
        }
        self.fire_status_triggers(task, status);
        if status == TaskStatus::Failure {
            self.note_failure(task, step, error);
        }
    }

    pub(super) fn note_failure(&mut self, task: TaskId, step: StepId, error: Option<String>) {
        let def = self.program.step(step);
        if def.triggers.handles_failure() {
            return;
        }
        self.failed.push(Failed { task, error });
        if def.stop_on_exception {
            self.stopped = true;
        }
    }
}
