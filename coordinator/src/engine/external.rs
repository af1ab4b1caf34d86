//! Triggers and requests written by other programs (`eventor-coord trigger` and `cancel`, or
//! any writer of the shared store) reach a running coordinator here.
//!
//! On Postgres a LISTEN/NOTIFY subscription wakes the driver when another process commits to
//! this run; on SQLite the file's `data_version` is watched (every 250 ms); on any store a
//! slow re-scan every [`RESCAN_EVERY`] is the safety net (a missed notification). A wake-up
//! reads the run's trigger rows newer than the last one seen and hands those the core has
//! not fired to it as [`Input::RecordedTrigger`]: they are acted on, not written again. It
//! reads the run's request rows newer than the last one seen too: a cancel stops the run
//! through its [`Interrupt`], as Ctrl-C does. Requests stored before this coordinator took
//! the run's lock (an earlier session of the same recovery, before a continue) were for
//! another one and are passed over; one stored after it, even before this watch began, is
//! acted on at the driver's first look.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_store::{now_micros, RequestKind, RunKey, Store, StoreError, Subscription};

use super::core::{Core, Input};
use super::interrupt::Interrupt;
use super::program::EventId;

/// The fallback re-scan period: slow on purpose, notifications do the real work.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// Watches one run recovery for triggers from elsewhere.
pub struct ExternalTriggers {
    subscription: Subscription,
    events: Arc<HashMap<String, EventId>>,
    /// The highest trigger row id already looked at.
    seen: i64,
    /// The highest request row id already looked at.
    requests_seen: i64,
}

impl ExternalTriggers {
    /// Watches `run`; its requests up to `requests_seen` were for an earlier coordinator.
    pub async fn new(
        store: &Store,
        run: RunKey,
        events: Arc<HashMap<String, EventId>>,
        requests_seen: i64,
    ) -> Result<ExternalTriggers, StoreError> {
        Ok(ExternalTriggers {
            subscription: store.subscribe(run).await?,
            events,
            seen: 0,
            requests_seen,
        })
    }

    /// Resolves when it is time to look: a notification, or the fallback period.
    pub async fn wake(&mut self) {
        tokio::select! {
            _ = self.subscription.next() => {}
            _ = tokio::time::sleep(RESCAN_EVERY) => {}
        }
    }

    /// Feeds the core every trigger row it has not fired yet, and stops the run through
    /// `interrupt` for a new cancel request.
    pub async fn rescan(
        &mut self,
        core: &mut Core,
        store: &Store,
        run: &RunKey,
        interrupt: &Interrupt,
    ) -> Result<(), StoreError> {
        self.take_requests(store, run, interrupt).await?;
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

    /// Acts on the requests stored since the last look: a cancel stops the run (the first
    /// stop's reason stands; a later one changes nothing).
    async fn take_requests(
        &mut self,
        store: &Store,
        run: &RunKey,
        interrupt: &Interrupt,
    ) -> Result<(), StoreError> {
        for request in store
            .requests_after(run.clone(), self.requests_seen)
            .await?
        {
            self.requests_seen = self.requests_seen.max(request.id);
            match request.kind {
                Some(RequestKind::Cancel) => {
                    tracing::warn!(by = %request.by, "cancelled by {}: stopping the run", request.by);
                    interrupt.cancel(&request.by);
                }
                None => {
                    tracing::warn!(by = %request.by, "a request of a kind this coordinator does not know was ignored")
                }
            }
        }
        Ok(())
    }
}
