//! Reads of the Postgres backend: the queries of `query.rs`, run on a pooled connection and
//! turned into records by `rows.rs`.

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::retry::Failure;
use crate::query;
use crate::rows::*;
use crate::types::*;

pub(super) async fn latest_run(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<RunRecord>, Failure> {
    let rows = query::latest_run(name).load(conn).await?;
    Ok(newest_run(rows)?)
}

pub(super) async fn run_history(
    conn: &mut AsyncPgConnection,
    run_id: &str,
) -> Result<Vec<RunRecord>, Failure> {
    let rows = query::run_history(run_id).load(conn).await?;
    Ok(run_records(rows)?)
}

pub(super) async fn tasks(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<TaskRecord>, Failure> {
    let rows = query::tasks_of(run).load(conn).await?;
    Ok(task_records(rows)?)
}

pub(super) async fn triggers(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    after: i64,
) -> Result<Vec<TriggerRecord>, Failure> {
    let rows = query::triggers_of(run, after).load(conn).await?;
    Ok(trigger_records(rows)?)
}

pub(super) async fn delays(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<DelayRecord>, Failure> {
    let rows = query::delays_of(run).load(conn).await?;
    Ok(delay_records(rows)?)
}

pub(super) async fn old_runs(
    conn: &mut AsyncPgConnection,
    name: Option<&str>,
    older_than: Micros,
) -> Result<Vec<String>, Failure> {
    Ok(query::old_runs(name, older_than).load(conn).await?)
}

pub(super) async fn runs(
    conn: &mut AsyncPgConnection,
    name: Option<&str>,
) -> Result<Vec<RunRecord>, Failure> {
    let rows = query::runs_listing(name).load(conn).await?;
    Ok(run_records(rows)?)
}

pub(super) async fn task_counts(conn: &mut AsyncPgConnection) -> Result<Vec<TaskCount>, Failure> {
    let rows = query::task_counts().load(conn).await?;
    Ok(crate::rows::task_counts(rows)?)
}
