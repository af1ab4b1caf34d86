//! Carrying on from a stored run (`continue`) and the recovery policy (`recover`): restored
//! tasks, replayed triggers, skipped steps.

use std::sync::Arc;

use eventor_store::{Change, Micros, TaskStatus};

use super::retries::retries_by_task;
use super::{Core, CoreOptions, PreviousTask, StoredState, StoredTask, Task, TaskId};
use crate::engine::program::{Program, RecoverAction, StepId};

impl Core {
    /// A core that carries on from a run's stored state (`continue`). A task that was active
    /// when its coordinator died runs again as a new attempt (at-least-once); what finished
    /// keeps its outcome, and pools are charged for what those tasks took and gave back.
    pub fn restore(
        program: Arc<Program>,
        options: CoreOptions,
        stored: StoredState,
        now: Micros,
    ) -> Core {
        let mut core = Core::new(program, options);
        core.now = now;
        let retries = retries_by_task(stored.retries);
        for task in stored.tasks {
            let key = (task.step, task.sequence.clone());
            let id = core.restore_task(task);
            if let Some(&(used, pending)) = retries.get(&key) {
                core.restore_retries(id, used, pending);
            }
        }
        for delay in stored.delays {
            core.armed.insert((delay.assoc, delay.sequence.clone()));
            if !delay.fired {
                core.delays.insert((delay.due, delay.assoc, delay.sequence));
            }
        }
        // Replay every stored trigger: what its turn committed is found in place (tasks and
        // delays exist, so nothing is made twice); what was never acted on (a trigger written
        // by another program) happens now.
        for (event, sequence) in &stored.triggers {
            core.fired_bits(sequence)[event.0 as usize / 64] |= 1 << (event.0 % 64);
        }
        for (event, sequence) in stored.triggers {
            core.consequences(event, &sequence);
        }
        core.drain_work();
        core
    }

    pub(super) fn restore_task(&mut self, stored: StoredTask) -> TaskId {
        let id = TaskId(self.tasks.len() as u32);
        self.index_task(stored.step, &stored.sequence, id);
        self.tasks.push(Task {
            step: stored.step,
            sequence: stored.sequence.clone(),
            status: stored.status,
            attempt: stored.attempt,
            retries: 0,
            waited: false,
            pending_create: None,
        });
        match stored.status {
            TaskStatus::Ready => self.queue.push_back(id),
            TaskStatus::Active => {
                self.changes.push(Change::TaskRetry {
                    step: self.program.step(stored.step).name.clone(),
                    sequence: stored.sequence,
                    from: TaskStatus::Active,
                    attempt: stored.attempt,
                    new_attempt: stored.attempt + 1,
                    at: self.now,
                });
                let task = &mut self.tasks[id.0 as usize];
                task.status = TaskStatus::Ready;
                task.attempt += 1;
                self.queue.push_back(id);
            }
            TaskStatus::Success | TaskStatus::Skipped | TaskStatus::Failure => {
                self.take_resources_unchecked(stored.step);
                self.give_back_resources(stored.step);
                if stored.status == TaskStatus::Failure {
                    self.note_failure(id, stored.step, stored.error);
                }
            }
        }
        id
    }

    /// The task's outcome before this recovery, if it had one.
    pub(super) fn previous_of(&self, task: TaskId) -> Option<&PreviousTask> {
        let t = self.task(task);
        self.options.previous.get(&(t.step, t.sequence.clone()))
    }

    /// Whether a recovered task is skipped (not run again) by its step's policy.
    pub(super) fn carried_over(&self, step: StepId, previous: &PreviousTask) -> Option<TaskStatus> {
        let action = self.program.step(step).recovery.for_status(previous.status);
        (action == RecoverAction::Skip).then_some(TaskStatus::Skipped)
    }

    /// Records a recovered task as skipped and goes on as if it had succeeded: its success
    /// triggers fire. An earlier status other than success is kept in the row's note. Its
    /// resources are taken and given back as if it had run, so pools held across steps stay
    /// right.
    pub(super) fn carry_over(&mut self, task: TaskId, status: TaskStatus) {
        let step = self.task(task).step;
        self.take_resources_unchecked(step);
        self.give_back_resources(step);
        let note = self.previous_of(task).and_then(|p| {
            let was = p.status;
            (!matches!(was, TaskStatus::Success | TaskStatus::Skipped)).then(|| {
                format!(
                    "skipped by recovery policy; was {was} in recovery {}",
                    p.recovery
                )
            })
        });
        let outcome = super::tasks::Outcome {
            error: note,
            ..Default::default()
        };
        self.set_status(task, status, outcome);
        self.fire_status_triggers(task, status);
    }
}
