//! Reads of the SQLite backend: runs, tasks, triggers and delays turned back into records.
//!
//! Rows are loaded as plain tuples and converted by `rows.rs`, so text enums go through the
//! `FromStr` impls of `types.rs` and anything unexpected in the file becomes
//! [`StoreError::Corrupt`].

use diesel::prelude::*;

use crate::rows::*;
use crate::schema::{delays, runs, tasks, triggers};
use crate::types::*;

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
        .load::<TriggerRow>(conn)?;
    Ok(rows.into_iter().map(trigger_record).collect())
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
        .load::<DelayRow>(conn)?;
    Ok(rows.into_iter().map(delay_record).collect())
}
