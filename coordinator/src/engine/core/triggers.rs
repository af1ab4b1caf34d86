//! Firing events: the worklist, associations, expression events and status triggers.

use std::sync::Arc;

use eventor_store::{Change, Micros, TaskStatus};

use super::{Core, Record, TaskId, Work, TURN_CHANGES};
use crate::engine::program::{AssocId, EventId, Target};

impl Core {
    /// Works through the worklist until it is empty or the turn holds [`TURN_CHANGES`].
    pub(super) fn drain_work(&mut self) {
        while self.changes.len() < TURN_CHANGES {
            let Some(work) = self.work.pop_front() else {
                return;
            };
            match work {
                Work::Fire(event, sequence) => self.fire(event, sequence, Record::Yes),
                Work::FireRecorded(event, sequence) => self.fire(event, sequence, Record::No),
                Work::Targets {
                    assoc,
                    next,
                    sequence,
                } => self.activate_next(assoc, next, sequence),
            }
        }
    }

    /// Activates the association's target at `next`. The rest go first in line again, so
    /// the targets still come in order and before anything they set off.
    pub(super) fn activate_next(&mut self, assoc: AssocId, next: u32, sequence: Arc<str>) {
        let program = self.program.clone();
        let targets = &program.assoc(assoc).targets;
        if (next as usize) + 1 < targets.len() {
            self.work.push_front(Work::Targets {
                assoc,
                next: next + 1,
                sequence: sequence.clone(),
            });
        }
        match targets[next as usize] {
            Target::Event(event) => self.fire(event, sequence, Record::Yes),
            Target::Step(step) => self.create_task(step, sequence),
        }
    }

    pub(super) fn fired_bits(&mut self, sequence: &Arc<str>) -> &mut Vec<u64> {
        let words = self.program.events.len().div_ceil(64);
        self.fired
            .entry(sequence.clone())
            .or_insert_with(|| vec![0; words])
    }

    pub fn has_fired(&self, event: EventId, sequence: &str) -> bool {
        self.fired
            .get(sequence)
            .is_some_and(|bits| bits[event.0 as usize / 64] & (1 << (event.0 % 64)) != 0)
    }

    /// Fires `event` in `sequence` once; later fires of the same pair do nothing.
    pub(super) fn fire(&mut self, event: EventId, sequence: Arc<str>, record: Record) {
        if self.has_fired(event, &sequence) {
            return;
        }
        self.fired_bits(&sequence)[event.0 as usize / 64] |= 1 << (event.0 % 64);
        let program = self.program.clone();
        let def = program.event(event);
        if record == Record::Yes {
            self.changes.push(Change::Trigger {
                event: def.name.clone(),
                sequence: sequence.clone(),
                at: self.now,
            });
        }
        self.consequences(event, &sequence);
    }

    /// What firing `event` in `sequence` sets off: its associations and the expression
    /// events that mention it.
    pub(super) fn consequences(&mut self, event: EventId, sequence: &Arc<str>) {
        let program = self.program.clone();
        let def = program.event(event);
        for &assoc in &def.assocs {
            self.follow_assoc(assoc, sequence);
        }
        for &dependent in &def.dependents {
            self.check_expression(dependent, sequence);
        }
    }

    pub(super) fn follow_assoc(&mut self, assoc: AssocId, sequence: &Arc<str>) {
        let program = self.program.clone();
        let def = program.assoc(assoc);
        match def.delay {
            Some(delay) => {
                let due = self.now + delay.as_micros() as Micros;
                self.arm_delay(assoc, sequence.clone(), due);
            }
            None => self.activate(assoc, sequence),
        }
    }

    pub(super) fn activate(&mut self, assoc: AssocId, sequence: &Arc<str>) {
        if self.program.assoc(assoc).targets.is_empty() {
            return;
        }
        self.work.push_back(Work::Targets {
            assoc,
            next: 0,
            sequence: sequence.clone(),
        });
    }

    pub(super) fn check_expression(&mut self, event: EventId, sequence: &Arc<str>) {
        if self.has_fired(event, sequence) {
            return;
        }
        let program = self.program.clone();
        let Some(cond) = &program.event(event).cond else {
            return;
        };
        if cond.eval(&|e| self.has_fired(e, sequence)) {
            self.work.push_back(Work::Fire(event, sequence.clone()));
        }
    }

    pub(super) fn fire_status_triggers(&mut self, task: TaskId, status: TaskStatus) {
        let program = self.program.clone();
        let sequence = self.task(task).sequence.clone();
        let (direct, complete) = program.step(self.task(task).step).triggers.on(status);
        for &event in direct.iter().chain(complete) {
            self.work.push_back(Work::Fire(event, sequence.clone()));
        }
    }
}
