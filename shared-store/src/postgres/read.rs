//! Reads of the Postgres backend: the same queries as SQLite's, run on a pooled connection
//! and converted by `rows.rs`.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::retry::Failure;
use crate::rows::*;
use crate::schema::{delays, runs, tasks, triggers};
use crate::types::*;

/// The newest run of the flow `name`: highest `started_at`, then highest recovery.
pub(super) async fn latest_run(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<RunRecord>, Failure> {
    let row = runs::table
        .filter(runs::name.eq(name))
        .order((runs::started_at.desc(), runs::recovery.desc()))
        .select(RUN_COLUMNS)
        .first::<RunRow>(conn)
        .await
        .optional()?;
    Ok(row.map(run_record).transpose()?)
}

/// Every recovery of `run_id`, lowest first.
pub(super) async fn run_history(
    conn: &mut AsyncPgConnection,
    run_id: &str,
) -> Result<Vec<RunRecord>, Failure> {
    let rows = runs::table
        .filter(runs::run_id.eq(run_id))
        .order(runs::recovery.asc())
        .select(RUN_COLUMNS)
        .load::<RunRow>(conn)
        .await?;
    Ok(rows.into_iter().map(run_record).collect::<Result<_, _>>()?)
}

/// Every task of one run recovery, in creation order.
pub(super) async fn tasks(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<TaskRecord>, Failure> {
    let rows = tasks::table
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
        .load::<TaskRow>(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(task_record)
        .collect::<Result<_, _>>()?)
}

/// Every trigger of one run recovery, in firing order.
pub(super) async fn triggers(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<TriggerRecord>, Failure> {
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
        .load::<TriggerRow>(conn)
        .await?;
    Ok(rows.into_iter().map(trigger_record).collect())
}

/// Every delay of one run recovery, in arming order.
pub(super) async fn delays(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<DelayRecord>, Failure> {
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
        .load::<DelayRow>(conn)
        .await?;
    Ok(rows.into_iter().map(delay_record).collect())
}
