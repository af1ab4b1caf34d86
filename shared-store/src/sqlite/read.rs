//! Reads of the SQLite backend: runs, tasks, triggers and delays turned back into records.
//!
//! Rows are loaded as plain tuples and converted here, so text enums go through the `FromStr`
//! impls of `types.rs` and anything unexpected in the file becomes [`StoreError::Corrupt`].

use std::sync::Arc;

use diesel::prelude::*;

use crate::schema::{delays, runs, tasks, triggers};
use crate::types::*;

type RunRow = (
    String,
    i32,
    String,
    String,
    String,
    String,
    String,
    Micros,
    Option<Micros>,
);

const RUN_COLUMNS: (
    runs::run_id,
    runs::recovery,
    runs::name,
    runs::mode,
    runs::status,
    runs::host,
    runs::program,
    runs::started_at,
    runs::ended_at,
) = (
    runs::run_id,
    runs::recovery,
    runs::name,
    runs::mode,
    runs::status,
    runs::host,
    runs::program,
    runs::started_at,
    runs::ended_at,
);

/// The newest run of the flow `name`: highest `started_at`, then highest recovery.
pub(super) fn latest_run(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let row = runs::table
        .filter(runs::name.eq(name))
        .order((runs::started_at.desc(), runs::recovery.desc()))
        .select(RUN_COLUMNS)
        .first::<RunRow>(conn)
        .optional()?;
    row.map(run_record).transpose()
}

/// Every recovery of `run_id`, lowest first.
pub(super) fn run_history(
    conn: &mut SqliteConnection,
    run_id: &str,
) -> Result<Vec<RunRecord>, StoreError> {
    runs::table
        .filter(runs::run_id.eq(run_id))
        .order(runs::recovery.asc())
        .select(RUN_COLUMNS)
        .load::<RunRow>(conn)?
        .into_iter()
        .map(run_record)
        .collect()
}

fn run_record(row: RunRow) -> Result<RunRecord, StoreError> {
    let (run_id, recovery, name, mode, status, host, program, started_at, ended_at) = row;
    Ok(RunRecord {
        key: RunKey {
            run_id: Arc::from(run_id),
            recovery,
        },
        name,
        mode: mode.parse()?,
        status: status.parse()?,
        host,
        program,
        started_at,
        ended_at,
    })
}

type TaskRow = (
    i64,
    String,
    String,
    String,
    i32,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Micros,
    Micros,
);

/// Every task of one run recovery, in creation order.
pub(super) fn tasks(
    conn: &mut SqliteConnection,
    run: &RunKey,
) -> Result<Vec<TaskRecord>, StoreError> {
    tasks::table
        .filter(tasks::run_id.eq(&*run.run_id))
        .filter(tasks::recovery.eq(run.recovery))
        .order(tasks::id.asc())
        .select((
            tasks::id,
            tasks::step,
            tasks::sequence,
            tasks::status,
            tasks::attempt,
            tasks::host,
            tasks::pid,
            tasks::result,
            tasks::error,
            tasks::created_at,
            tasks::updated_at,
        ))
        .load::<TaskRow>(conn)?
        .into_iter()
        .map(task_record)
        .collect()
}

fn task_record(row: TaskRow) -> Result<TaskRecord, StoreError> {
    let (id, step, sequence, status, attempt, host, pid, result, error, created_at, updated_at) =
        row;
    Ok(TaskRecord {
        id,
        step,
        sequence,
        status: status.parse()?,
        attempt,
        host,
        pid,
        result,
        error,
        created_at,
        updated_at,
    })
}

/// Every trigger of one run recovery, in firing order.
pub(super) fn triggers(
    conn: &mut SqliteConnection,
    run: &RunKey,
) -> Result<Vec<TriggerRecord>, StoreError> {
    let rows = triggers::table
        .filter(triggers::run_id.eq(&*run.run_id))
        .filter(triggers::recovery.eq(run.recovery))
        .order(triggers::id.asc())
        .select((
            triggers::id,
            triggers::event,
            triggers::sequence,
            triggers::created_at,
        ))
        .load::<(i64, String, String, Micros)>(conn)?;
    let records = rows
        .into_iter()
        .map(|(id, event, sequence, created_at)| TriggerRecord {
            id,
            event,
            sequence,
            created_at,
        });
    Ok(records.collect())
}

/// Every delay of one run recovery, in arming order.
pub(super) fn delays(
    conn: &mut SqliteConnection,
    run: &RunKey,
) -> Result<Vec<DelayRecord>, StoreError> {
    let rows = delays::table
        .filter(delays::run_id.eq(&*run.run_id))
        .filter(delays::recovery.eq(run.recovery))
        .order(delays::id.asc())
        .select((
            delays::id,
            delays::assoc,
            delays::sequence,
            delays::due_at,
            delays::fired,
            delays::created_at,
        ))
        .load::<(i64, i32, String, Micros, bool, Micros)>(conn)?;
    let records =
        rows.into_iter().map(
            |(id, assoc, sequence, due_at, fired, created_at)| DelayRecord {
                id,
                assoc,
                sequence,
                due_at,
                fired,
                created_at,
            },
        );
    Ok(records.collect())
}
