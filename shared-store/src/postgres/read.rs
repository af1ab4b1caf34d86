//! Reads of the Postgres backend: the queries of `query.rs`, run on a pooled connection and
//! turned into records by `rows.rs`.

use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::retry::Failure;
use super::RunLockKey;
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

pub(super) async fn requests(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    after: i64,
) -> Result<Vec<RunRequestRecord>, Failure> {
    let rows = query::requests_of(run, after).load(conn).await?;
    Ok(request_records(rows))
}

pub(super) async fn host_health(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
) -> Result<Vec<HostHealthRecord>, Failure> {
    let rows = query::host_health_of(run).load(conn).await?;
    Ok(health_records(rows))
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

pub(super) async fn failure_class_counts(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(Option<String>, i64)>, Failure> {
    Ok(query::failure_class_counts().load(conn).await?)
}

#[derive(diesel::QueryableByName)]
struct Held {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
}

/// Whether a session of this database holds the run lock `key`.
pub(super) async fn run_lock_held(
    conn: &mut AsyncPgConnection,
    key: RunLockKey,
) -> Result<bool, Failure> {
    use diesel::sql_types::BigInt;
    let (high, low) = key.in_pg_locks();
    let found: Held = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 1) AS held",
    )
    .bind::<BigInt, _>(high)
    .bind::<BigInt, _>(low)
    .get_result(conn)
    .await?;
    Ok(found.held)
}
