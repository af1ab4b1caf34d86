//! Ids for new task and trigger rows on SQLite, where those tables are keyed by their
//! natural keys (`WITHOUT ROWID`) and SQLite no longer numbers them.
//!
//! The ids only order rows: tasks by creation, triggers by firing. Two readers rely on
//! that order. A recovery replays a run's triggers in it. And a running coordinator's
//! watcher reads the triggers above the last id it saw, to find the ones another program
//! wrote (`trigger`, `serve`): such a row must never get an id at or below one already
//! committed for the run, or the watcher, past it already, would miss it.
//!
//! So ids are handed out per run, inside the write transaction (which holds SQLite's one
//! write lock), in two ways by [`Writer`]:
//! - [`Writer::Other`] numbers above the largest id the run has, found by reading the run's
//!   rows (a range of each table's key). That read costs as much as the run is big, but such
//!   writes are rare, and they are the ones the watcher must not miss.
//! - [`Writer::Coordinator`] counts on from a number kept per run on this connection, found
//!   that same way at its first write. It writes nearly every row of its run, one commit a
//!   step, so it must not read the run each time. Its counter may fall behind an `Other`
//!   row written since: its own rows then sort before that one. It never needs to find its
//!   own rows (its core fired them), so the watcher misses nothing; only a replay may take
//!   such a trigger a little later than it came, among rows written at the same time.
//!
//! Ids of a transaction that rolls back are not given back: a gap orders nothing wrongly.

use std::collections::HashMap;

use diesel::dsl::max;
use diesel::prelude::*;

use crate::schema::{tasks, triggers};
use crate::types::{RunKey, Writer};

/// The next id of each run this connection has written as its coordinator.
#[derive(Default)]
pub(crate) struct RowIds {
    next: HashMap<RunKey, i64>,
}

impl RowIds {
    /// The first of `count` consecutive ids for new rows of `run`, written by `writer`.
    /// Called inside the write transaction.
    pub fn take(
        &mut self,
        conn: &mut SqliteConnection,
        run: &RunKey,
        writer: Writer,
        count: usize,
    ) -> QueryResult<i64> {
        let kept = match writer {
            Writer::Coordinator => self.next.get(run).copied(),
            Writer::Other => None,
        };
        let first = match kept {
            Some(next) => next,
            // A counter kept from an earlier write still only grows.
            None => (largest_id(conn, run)? + 1).max(self.next.get(run).copied().unwrap_or(1)),
        };
        self.next.insert(run.clone(), first + count as i64);
        Ok(first)
    }
}

/// The largest task or trigger id `run` has (0 for none).
fn largest_id(conn: &mut SqliteConnection, run: &RunKey) -> QueryResult<i64> {
    let trigger: Option<i64> = triggers::table
        .filter(triggers::run_id.eq(&*run.run_id))
        .filter(triggers::recovery.eq(run.recovery))
        .select(max(triggers::id))
        .first(conn)?;
    let task: Option<i64> = tasks::table
        .filter(tasks::run_id.eq(&*run.run_id))
        .filter(tasks::recovery.eq(run.recovery))
        .select(max(tasks::id))
        .first(conn)?;
    Ok(trigger.unwrap_or(0).max(task.unwrap_or(0)))
}
