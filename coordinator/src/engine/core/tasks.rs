//! Tasks: creating them, starting them as the limits allow, recording their statuses and ends.

use std::sync::Arc;

use eventor_store::{Change, TaskStatus};

use super::{Core, Effect, Failed, Task, TaskEnd, TaskId};
use crate::engine::program::StepId;

/// What a status change records besides the status: a result, an error and the class of
/// a failure (its text, `exit:3`), each none for a change that is no end.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub result: Option<String>,
    pub error: Option<String>,
    pub class: Option<Arc<str>>,
}

impl Core {
    pub(super) fn index_task(&mut self, step: StepId, sequence: &Arc<str>, id: TaskId) {
        let tasks = match self.task_index.get_mut(sequence) {
            Some(tasks) => tasks,
            None => self.task_index.entry(sequence.clone()).or_default(),
        };
        tasks.insert(step, id);
    }

    /// Creates the task of `step` in `sequence` unless it exists (one task per step and
    /// sequence in a recovery) or a failure stopped the flow. In a recovery, the step's
    /// policy may carry the previous outcome over instead of queueing the task.
    pub(super) fn create_task(&mut self, step: StepId, sequence: Arc<str>) {
        if self.stopped_by_failure || self.find_task(step, &sequence).is_some() {
            return;
        }
        let previous = self
            .options
            .previous
            .get(&(step, sequence.clone()))
            .cloned();
        let carried = previous
            .as_ref()
            .filter(|_| !self.options.reruns(step, &sequence))
            .and_then(|p| self.carried_over(step, p));
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
            waited: false,
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
                self.say_waiting(task, step);
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

    /// The first time `task` waits for a pool, an effect names the pool it found short.
    fn say_waiting(&mut self, task: TaskId, step: StepId) {
        let record = &mut self.tasks[task.0 as usize];
        if std::mem::replace(&mut record.waited, true) {
            return;
        }
        let program = &self.program;
        let short = program.step(step).acquires.iter().find(|&&(pool, n)| {
            !program.pools[pool.0 as usize].shared && self.free[pool.0 as usize] < n
        });
        if let Some(&(pool, _)) = short {
            let pool = program.pools[pool.0 as usize].name.clone();
            self.effects.push(Effect::Waits { task, pool });
        }
    }

    /// Moves a task from ready to active. Recovery and resources hook in here.
    pub(super) fn start(&mut self, task: TaskId) {
        self.occupy(task);
        self.launch(task);
    }

    /// Records the (occupying) task active and has the driver start it.
    pub(super) fn launch(&mut self, task: TaskId) {
        self.set_status(task, TaskStatus::Active, Outcome::default());
        self.effects.push(Effect::Start(task));
        self.fire_status_triggers(task, TaskStatus::Active);
    }

    /// Records a status change: rewrites an uncommitted create, or adds a fenced transition.
    pub(super) fn set_status(&mut self, task: TaskId, to: TaskStatus, outcome: Outcome) {
        let Outcome {
            result,
            error,
            class,
        } = outcome;
        let now = self.now;
        let record = &mut self.tasks[task.0 as usize];
        let from = std::mem::replace(&mut record.status, to);
        if let (Some(index), None, None, None) = (record.pending_create, &result, &error, &class) {
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
            failure_class: class,
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

    pub(super) fn finish(&mut self, task: TaskId, end: TaskEnd, recorded: bool) {
        let Some(record) = self.tasks.get(task.0 as usize) else {
            return;
        };
        if record.status != TaskStatus::Active {
            return; // a stale report (e.g. after a cancel); the store is already right
        }
        let step = record.step;
        let status = if end.succeeded() {
            TaskStatus::Success
        } else {
            TaskStatus::Failure
        };
        let error = end.error.clone();
        let class = end.failure_class();
        if recorded {
            self.tasks[task.0 as usize].status = status;
        } else {
            let outcome = Outcome {
                result: end.result,
                error: end.error,
                class: class.as_ref().map(|c| c.to_string().into()),
            };
            self.set_status(task, status, outcome);
        }
        self.vacate(task);
        self.release_held(step);
        self.give_back_resources(step);
        if self.needs_grant(step) {
            self.changes.push(self.grant_released(task));
            self.wake_pool_waiters();
        }
        if status == TaskStatus::Failure && self.may_retry(task, class.as_ref()) {
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
            self.stopped_by_failure = true;
        }
    }
}
