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

pub(super) async fn retries(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<RetryRecord>, Failure> {
    let rows = query::retries_of(run).load(conn).await?;
    Ok(retry_records(rows)?)
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

#[derive(diesel::QueryableByName)]
struct Held {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
}

/// Whether a session of this database holds the two-key advisory lock `(class, key)`.
pub(super) async fn advisory_held(
    conn: &mut AsyncPgConnection,
    class: i32,
    key: i32,
) -> Result<bool, Failure> {
    use diesel::sql_types::Integer;
    // The two-key form shows its keys as oids (classid, objid) with objsubid 2.
    let found: Held = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2) AS held",
    )
    .bind::<Integer, _>(class)
    .bind::<Integer, _>(key)
    .get_result(conn)
    .await?;
    Ok(found.held)
}
