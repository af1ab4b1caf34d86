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
//! The coordinator's ids are even and the others' odd, so even a counter that fell behind
//! never repeats an id: a run's rows have one order, ties included. Ids of a transaction
//! that rolls back are not given back: a gap orders nothing wrongly.

use std::collections::HashMap;

use diesel::dsl::max;
use diesel::prelude::*;

use crate::schema::{tasks, triggers};
use crate::types::{RunKey, Writer};

/// The distance between two ids of one writer (see the parity above).
pub(crate) const STRIDE: i64 = 2;

/// The next id of each run this connection has written as its coordinator.
#[derive(Default)]
pub(crate) struct RowIds {
    next: HashMap<RunKey, i64>,
}

impl RowIds {
    /// The first of `count` ids, [`STRIDE`] apart, for new rows of `run` written by
    /// `writer`. Called inside the write transaction.
    pub fn take(
        &mut self,
        conn: &mut SqliteConnection,
        run: &RunKey,
        writer: Writer,
        count: usize,
    ) -> QueryResult<i64> {
        let span = STRIDE * count as i64;
        match (writer, self.next.get_mut(run)) {
            (Writer::Coordinator, Some(next)) => {
                *next += span;
                Ok(*next - span)
            }
            (Writer::Coordinator, None) => {
                let first = even_above(largest_id(conn, run)?);
                self.next.insert(run.clone(), first + span);
                Ok(first)
            }
            // Only runs this connection coordinates get a counter (`serve` triggers many
            // runs); one it does is moved past what was just written.
            (Writer::Other, kept) => {
                let first = even_above(largest_id(conn, run)?) + 1;
                if let Some(next) = kept {
                    *next = (*next).max(first + span + 1);
                }
                Ok(first)
            }
        }
    }
}

/// The smallest even number above `id`.
fn even_above(id: i64) -> i64 {
    (id / 2 + 1) * 2
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

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::Text;

    use super::even_above;

    #[derive(QueryableByName)]
    struct Order {
        #[diesel(sql_type = Text)]
        names: String,
    }

    /// Each run's trigger and task names, in id order.
    fn orders(conn: &mut SqliteConnection) -> Vec<String> {
        let sql = "SELECT group_concat(event) AS names FROM \
                   (SELECT * FROM triggers ORDER BY run_id, id) GROUP BY run_id \
                   UNION ALL SELECT group_concat(step) AS names FROM \
                   (SELECT * FROM tasks ORDER BY run_id, id) GROUP BY run_id";
        let rows: Vec<Order> = diesel::sql_query(sql).load(conn).unwrap();
        rows.into_iter().map(|r| r.names).collect()
    }

    /// Ids count per run after the migration, so two runs share ids; going back to row
    /// tables numbers the rows anew and keeps each run's order, and so does coming back.
    #[test]
    fn the_migration_down_and_up_keeps_each_runs_order() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let up =
            include_str!("../../migrations/sqlite/2027-07-01-000000_keyed_tasks_triggers/up.sql");
        let down =
            include_str!("../../migrations/sqlite/2027-07-01-000000_keyed_tasks_triggers/down.sql");
        conn.batch_execute(include_str!(
            "../../migrations/sqlite/2025-01-01-000000_create_store/up.sql"
        ))
        .unwrap();
        conn.batch_execute(
            "PRAGMA foreign_keys = ON; ALTER TABLE tasks ADD COLUMN failure_class TEXT;",
        )
        .unwrap();
        conn.batch_execute(up).unwrap();
        for run in ["A", "B"] {
            conn.batch_execute(&format!(
                "INSERT INTO runs (run_id, recovery, name, mode, status, host, program, \
                 started_at) VALUES ('{run}', 0, 'n', 'restart', 'running', 'h', '{{}}', 0);"
            ))
            .unwrap();
            for (i, name) in ["z", "a", "m"].into_iter().enumerate() {
                let id = 2 * (i as i64 + 1);
                conn.batch_execute(&format!(
                    "INSERT INTO triggers (id, run_id, recovery, event, sequence, created_at) \
                     VALUES ({id}, '{run}', 0, '{name}', '1', 0); \
                     INSERT INTO tasks (id, run_id, recovery, step, sequence, status, attempt, \
                     created_at, updated_at) VALUES ({}, '{run}', 0, '{name}', '1', 'ready', 1, 0, 0);",
                    id + 1
                ))
                .unwrap();
            }
        }
        let kept = ["z,a,m"; 4];
        conn.batch_execute(down).unwrap();
        assert_eq!(orders(&mut conn), kept);
        conn.batch_execute(up).unwrap();
        assert_eq!(orders(&mut conn), kept);
    }

    #[test]
    fn even_above_is_the_next_even_number() {
        let got: Vec<_> = [0, 1, 2, 3, 10, 11].into_iter().map(even_above).collect();
        assert_eq!(got, [2, 2, 4, 4, 12, 12]);
    }
}
