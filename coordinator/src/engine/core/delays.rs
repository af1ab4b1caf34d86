//! Delayed associations: arming, firing when due, and what is pending.

use std::sync::Arc;

use eventor_store::{Change, Micros};

use super::Core;
use crate::engine::program::AssocId;

impl Core {
    /// The due time of the earliest pending delay or retry.
    pub fn next_due(&self) -> Option<Micros> {
        let delay = self.delays.first().map(|(due, _, _)| *due);
        let retry = self.retry_timers.first().map(|(due, _)| *due);
        delay.into_iter().chain(retry).min()
    }

    /// Delays and retries not yet due.
    pub fn pending_delays(&self) -> usize {
        self.delays.len() + self.retry_timers.len()
    }

    pub(super) fn arm_delay(&mut self, assoc: AssocId, sequence: Arc<str>, due: Micros) {
        if !self.armed.insert((assoc, sequence.clone())) {
            return;
        }
        self.changes.push(Change::DelayArmed {
            assoc: assoc.0 as i32,
            sequence: sequence.clone(),
            due_at: due,
            at: self.now,
        });
        // No effect: the driver asks for the next due time itself (`Core::next_due`).
        self.delays.insert((due, assoc, sequence));
    }

    pub(super) fn fire_due_delays(&mut self) {
        self.fire_due_retries();
        while self
            .delays
            .first()
            .is_some_and(|(due, _, _)| *due <= self.now)
        {
            let Some((_, assoc, sequence)) = self.delays.pop_first() else {
                break;
            };
            self.changes.push(Change::DelayFired {
                assoc: assoc.0 as i32,
                sequence: sequence.clone(),
            });
            self.activate(assoc, &sequence);
        }
    }
}
