//! Events fired into a run from outside it (`eventor-coord trigger FLOW …`, and `serve`'s
//! HTTP triggers): written as trigger rows of the run's latest recovery, which its
//! coordinator picks up (Postgres notifies it; SQLite's file is watched every 250 ms) or a
//! later continue replays. A trigger already fired is reported, not written again.

use std::collections::HashSet;
use std::sync::Arc;

use eventor_store::{now_micros, Batch, Change, RunRecord, Store, StoreError, Writer};

/// One event asked for, and whether it was new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub event: String,
    pub sequence: String,
    /// It had fired before in that recovery: nothing was written.
    pub already: bool,
}

/// Writes `wanted` (event, sequence) into `run`'s recovery, in one batch; the same pair twice
/// in one call is one trigger.
pub async fn record_triggers(
    store: &Store,
    run: &RunRecord,
    wanted: Vec<(String, String)>,
) -> Result<Vec<Fired>, StoreError> {
    let fired = store.triggers(run.key.clone()).await?;
    let mut changes = Vec::new();
    let mut report = Vec::new();
    let mut seen = HashSet::new();
    for (event, sequence) in wanted {
        // A duplicate would abort the whole batch.
        if !seen.insert((event.clone(), sequence.clone())) {
            continue;
        }
        let already = fired
            .iter()
            .any(|t| *t.event == *event && *t.sequence == *sequence);
        if !already {
            changes.push(Change::Trigger {
                event: Arc::from(event.as_str()),
                sequence: Arc::from(sequence.as_str()),
                at: now_micros(),
            });
        }
        report.push(Fired {
            event,
            sequence,
            already,
        });
    }
    let batch = Batch {
        run: run.key.clone(),
        changes,
        // Not the run's coordinator: its watcher must find these rows.
        writer: Writer::Other,
    };
    store.commit(batch).await?;
    Ok(report)
}
