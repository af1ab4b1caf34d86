//! Triggers written by other programs (`eventor-coord trigger`, or any writer of the shared
//! store) reach a running coordinator here.
//!
//! On Postgres a LISTEN/NOTIFY subscription wakes the driver when another process commits to
//! this run; on any store a slow re-scan every [`RESCAN_EVERY`] is the safety net (a missed
//! notification, or SQLite, which has no notifications). A wake-up reads the run's trigger
//! rows newer than the last one seen and hands those the core has not fired to it as
//! [`Input::RecordedTrigger`]: they are acted on, not written again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_store::{now_micros, RunKey, Store, StoreError, Subscription};

use super::core::{Core, Input};
use super::program::EventId;

/// The fallback re-scan period: slow on purpose, notifications do the real work.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// Watches one run recovery for triggers from elsewhere.
pub struct ExternalTriggers {
    subscription: Subscription,
    events: Arc<HashMap<String, EventId>>,
    /// The highest trigger row id already looked at.
    seen: i64,
}

impl ExternalTriggers {
    pub async fn new(
        store: &Store,
        run: RunKey,
        events: Arc<HashMap<String, EventId>>,
    ) -> Result<ExternalTriggers, StoreError> {
        Ok(ExternalTriggers {
            subscription: store.subscribe(run).await?,
            events,
            seen: 0,
        })
    }

    /// Resolves when it is time to look: a notification, or the fallback period.
    pub async fn wake(&mut self) {
        tokio::select! {
            _ = self.subscription.next() => {}
            _ = tokio::time::sleep(RESCAN_EVERY) => {}
        }
    }

    /// Feeds the core every trigger row it has not fired yet.
    pub async fn rescan(
        &mut self,
        core: &mut Core,
        store: &Store,
        run: &RunKey,
    ) -> Result<(), StoreError> {
        // Only rows past the last one seen: a busy run wakes this often (every commit of
        // an agent), and its trigger table only grows.
        let rows = store.triggers_after(run.clone(), self.seen).await?;
        for row in rows {
            self.seen = self.seen.max(row.id);
            let Some(&event) = self.events.get(&row.event) else {
                tracing::warn!(event = %row.event, "a trigger of an event this flow does not have was ignored");
                continue;
            };
            if !core.has_fired(event, &row.sequence) {
                tracing::info!(event = %row.event, sequence = %row.sequence, "triggered from outside the run");
                let sequence = Arc::from(row.sequence.as_str());
                core.handle(Input::RecordedTrigger { event, sequence }, now_micros());
            }
        }
        Ok(())
    }
}
