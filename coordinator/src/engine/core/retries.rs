//! Retries: a failed attempt with retries left, whose failure's class the step's `retry_on`
//! covers, goes back to `ready` and starts again when its retry is due.

use std::collections::HashMap;
use std::sync::Arc;

use eventor_protocol::FailureClass;
use eventor_store::{Change, Micros, TaskStatus};

use super::{Core, StoredRetry, TaskId};
use crate::engine::program::{RetryOn, StepId};

impl Core {
    /// Notes the retries a restored task used; a ready task whose last retry is not due yet
    /// waits for it instead of the queue.
    pub(super) fn restore_retries(&mut self, task: TaskId, used: u32, pending: Option<Micros>) {
        self.tasks[task.0 as usize].retries = used;
        let Some(due) = pending else { return };
        if self.task(task).status == TaskStatus::Ready {
            self.queue.retain(|&t| t != task);
            self.retry_timers.insert((due, task));
        }
    }

    /// Queues every task whose retry is due, marking its retry's row taken.
    pub(super) fn fire_due_retries(&mut self) {
        while self
            .retry_timers
            .first()
            .is_some_and(|(due, _)| *due <= self.now)
        {
            let Some((_, task)) = self.retry_timers.pop_first() else {
                break;
            };
            self.changes.push(self.retry_taken(task));
            self.queue.push_back(task);
        }
    }

    /// The change that marks `task`'s latest retry row taken.
    pub(super) fn retry_taken(&self, task: TaskId) -> Change {
        let t = self.task(task);
        Change::RetryTaken {
            step: t.step.0 as i32,
            sequence: t.sequence.clone(),
            number: t.retries as i32,
        }
    }

    /// Whether a task that just failed with `class` gets another attempt: its step has
    /// retries left, spends them on that class, and the run still starts tasks.
    pub(super) fn may_retry(&self, task: TaskId, class: Option<&FailureClass>) -> bool {
        let t = self.task(task);
        let retry = &self.program.step(t.step).retry;
        !self.stopped
            && t.retries < retry.retries
            && class.is_none_or(|class| retry.on.covers(class))
    }

    /// The step's `retry_on` when it alone keeps a task that just failed with `class` from
    /// another attempt (retries were left, the run goes on), for the log to say so.
    pub fn refused_by_retry_on(&self, task: TaskId, class: &FailureClass) -> Option<&RetryOn> {
        let t = self.task(task);
        let retry = &self.program.step(t.step).retry;
        let left = !self.stopped && t.retries < retry.retries;
        (left && !retry.on.covers(class)).then_some(&retry.on)
    }

    /// Puts a failed task back to `ready` as its next attempt, and schedules its retry: a
    /// retry row (taken at once when the step has no retry delay).
    pub(super) fn retry(&mut self, task: TaskId) {
        let delay = self.program.step(self.task(task).step).retry.delay;
        let now = self.now;
        let t = &mut self.tasks[task.0 as usize];
        t.retries += 1;
        t.attempt += 1;
        t.status = TaskStatus::Ready;
        let (step, sequence, attempt, number) = (t.step, t.sequence.clone(), t.attempt, t.retries);
        let due = now + delay.as_micros() as Micros;
        self.changes.push(Change::TaskRetry {
            step: self.program.step(step).name.clone(),
            sequence: sequence.clone(),
            from: TaskStatus::Failure,
            attempt: attempt - 1,
            new_attempt: attempt,
            at: now,
        });
        self.changes.push(Change::RetryScheduled {
            step: step.0 as i32,
            sequence,
            number: number as i32,
            due_at: due,
            at: now,
        });
        self.retry_timers.insert((due, task));
        self.fire_due_retries();
    }
}

/// Per task, how many retries it used and the due time of one not yet taken.
pub(super) fn retries_by_task(
    rows: Vec<StoredRetry>,
) -> HashMap<(StepId, Arc<str>), (u32, Option<Micros>)> {
    let mut out: HashMap<(StepId, Arc<str>), (u32, Option<Micros>)> = HashMap::new();
    for row in rows {
        let entry = out.entry((row.step, row.sequence)).or_default();
        entry.0 = entry.0.max(row.number);
        if !row.taken {
            entry.1 = Some(row.due);
        }
    }
    out
}
