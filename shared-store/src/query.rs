//! The queries both backends run, written once as diesel query values: SQLite executes them on
//! its owner thread, Postgres through diesel-async, and `rows.rs` turns what they load into
//! records. Only bind parameters and standard SQL, so diesel renders each in either dialect.

use diesel::dsl::{self, auto_type};
use diesel::helper_types;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use crate::rows::{run_label, to_json};
use crate::schema::{
    delays, grants, host_health, pools, retries, run_requests, runs, tasks, triggers,
};
use crate::types::*;

/// The columns a [`RunRow`](crate::rows::RunRow) is loaded from, in its order.
#[auto_type]
fn run_columns() -> _ {
    (
        runs::run_id,
        runs::recovery,
        runs::name,
        runs::mode,
        runs::status,
        runs::host,
        runs::program,
        runs::started_at,
        runs::ended_at,
        runs::params,
        runs::env_from_prime,
        runs::cause,
    )
}

/// The newest run of the flow `name`: highest `started_at`, then highest recovery.
#[auto_type(no_type_alias)]
pub(crate) fn latest_run<'a>(name: &'a str) -> _ {
    runs::table
        .filter(runs::name.eq(name))
        .order((runs::started_at.desc(), runs::recovery.desc()))
        .select(run_columns())
        .limit(1_i64)
}

/// Every recovery of `run_id`, lowest first.
#[auto_type(no_type_alias)]
pub(crate) fn run_history<'a>(run_id: &'a str) -> _ {
    runs::table
        .filter(runs::run_id.eq(run_id))
        .order(runs::recovery.asc())
        .select(run_columns())
}

/// The ids of the runs whose newest recovery started before `older_than`, of the flow `name`
/// if one is given, in id order.
#[auto_type(no_type_alias)]
pub(crate) fn old_runs<'a>(name: Option<&'a str>, older_than: Micros) -> _ {
    let wanted: dsl::AsExprOf<Option<&'a str>, Nullable<Text>> = name.into_sql::<Nullable<Text>>();
    let newest: helper_types::max<runs::started_at> = dsl::max(runs::started_at);
    runs::table
        .filter(wanted.is_null().or(runs::name.nullable().eq(wanted)))
        .group_by(runs::run_id)
        .having(newest.lt(older_than))
        .select(runs::run_id)
        .order(runs::run_id.asc())
}

/// Every task of one run recovery, in creation order (a [`TaskRow`](crate::rows::TaskRow)).
#[auto_type(no_type_alias)]
pub(crate) fn tasks_of<'a>(run: &'a RunKey) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    tasks::table
        .filter(tasks::run_id.eq(run_id))
        .filter(tasks::recovery.eq(recovery))
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
            tasks::failure_class,
        ))
}

/// The triggers of one run recovery whose row id is above `after`, in firing order.
#[auto_type(no_type_alias)]
pub(crate) fn triggers_of<'a>(run: &'a RunKey, after: i64) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    triggers::table
        .filter(triggers::run_id.eq(run_id))
        .filter(triggers::recovery.eq(recovery))
        .filter(triggers::id.gt(after))
        .order(triggers::id.asc())
        .select((
            triggers::id,
            triggers::event,
            triggers::sequence,
            triggers::created_at,
        ))
}

/// Every delay of one run recovery, in arming order.
#[auto_type(no_type_alias)]
pub(crate) fn delays_of<'a>(run: &'a RunKey) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    delays::table
        .filter(delays::run_id.eq(run_id))
        .filter(delays::recovery.eq(recovery))
        .order(delays::id.asc())
        .select((
            delays::id,
            delays::assoc,
            delays::sequence,
            delays::due_at,
            delays::fired,
            delays::created_at,
        ))
}

/// Every retry of one run recovery, in scheduling order.
#[auto_type(no_type_alias)]
pub(crate) fn retries_of<'a>(run: &'a RunKey) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    retries::table
        .filter(retries::run_id.eq(run_id))
        .filter(retries::recovery.eq(recovery))
        .order(retries::id.asc())
        .select((
            retries::id,
            retries::step,
            retries::sequence,
            retries::number,
            retries::due_at,
            retries::taken,
            retries::created_at,
        ))
}

/// A new run's row: status `running`, not ended.
#[derive(Insertable)]
#[diesel(table_name = runs)]
pub(crate) struct NewRunRow<'a> {
    run_id: &'a str,
    recovery: i32,
    name: &'a str,
    mode: &'a str,
    status: &'a str,
    host: &'a str,
    program: &'a str,
    started_at: Micros,
    params: String,
    env_from_prime: String,
}

impl<'a> NewRunRow<'a> {
    fn of(run: &'a NewRun) -> Self {
        NewRunRow {
            run_id: &run.key.run_id,
            recovery: run.key.recovery,
            name: &run.name,
            mode: run.mode.as_str(),
            status: RunStatus::Running.as_str(),
            host: &run.host,
            program: &run.program,
            started_at: run.started_at,
            params: to_json(&run.params),
            env_from_prime: to_json(&run.env_from_prime),
        }
    }
}

/// The requests to one run recovery whose row id is above `after`, oldest first (a
/// [`RequestRow`](crate::rows::RequestRow)).
#[auto_type(no_type_alias)]
pub(crate) fn requests_of<'a>(run: &'a RunKey, after: i64) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    run_requests::table
        .filter(run_requests::run_id.eq(run_id))
        .filter(run_requests::recovery.eq(recovery))
        .filter(run_requests::id.gt(after))
        .order(run_requests::id.asc())
        .select((
            run_requests::id,
            run_requests::kind,
            run_requests::requested_by,
            run_requests::created_at,
        ))
}

/// Inserts a request to a run recovery.
#[auto_type(no_type_alias)]
pub(crate) fn insert_request<'a>(request: &'a RunRequest) -> _ {
    let run_id: &'a str = &request.run.run_id;
    let recovery: i32 = request.run.recovery;
    let kind: &'static str = request.kind.as_str();
    let by: &'a str = &request.by;
    let at: Micros = request.at;
    dsl::insert_into(run_requests::table).values((
        run_requests::run_id.eq(run_id),
        run_requests::recovery.eq(recovery),
        run_requests::kind.eq(kind),
        run_requests::requested_by.eq(by),
        run_requests::created_at.eq(at),
    ))
}

/// The health rows of one run recovery, by host (a [`HealthRow`](crate::rows::HealthRow)).
#[auto_type(no_type_alias)]
pub(crate) fn host_health_of<'a>(run: &'a RunKey) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    host_health::table
        .filter(host_health::run_id.eq(run_id))
        .filter(host_health::recovery.eq(recovery))
        .order(host_health::host.asc())
        .select((
            host_health::host,
            host_health::state,
            host_health::until_at,
            host_health::reason,
            host_health::failures,
            host_health::updated_at,
        ))
}

/// Deletes one host's health row of a run recovery (before its new one goes in).
#[auto_type(no_type_alias)]
pub(crate) fn delete_host_health<'a>(run: &'a RunKey, host: &'a str) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    dsl::delete(
        host_health::table
            .filter(host_health::run_id.eq(run_id))
            .filter(host_health::recovery.eq(recovery))
            .filter(host_health::host.eq(host)),
    )
}

/// Inserts one host's health row of a run recovery (`failures` as stored: see the migration).
#[auto_type(no_type_alias)]
pub(crate) fn insert_host_health<'a>(
    run: &'a RunKey,
    health: &'a HostHealthRecord,
    failures: String,
) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    let host: &'a str = &health.host;
    let state: &'static str = health.state.as_str();
    let until: Option<Micros> = health.until;
    let reason: Option<&'a str> = health.reason.as_deref();
    let at: Micros = health.updated_at;
    dsl::insert_into(host_health::table).values((
        host_health::run_id.eq(run_id),
        host_health::recovery.eq(recovery),
        host_health::host.eq(host),
        host_health::state.eq(state),
        host_health::until_at.eq(until),
        host_health::reason.eq(reason),
        host_health::failures.eq(failures),
        host_health::updated_at.eq(at),
    ))
}

/// Inserts `run`. What a duplicate does is the backend's choice (an error or no row).
#[auto_type(no_type_alias)]
pub(crate) fn insert_run<'a>(run: &'a NewRun) -> _ {
    let row: NewRunRow<'a> = NewRunRow::of(run);
    dsl::insert_into(runs::table).values(row)
}

/// Sets a run's status; a final status also stamps `ended_at`, `running` clears it.
#[auto_type(no_type_alias)]
pub(crate) fn set_run_status<'a>(run: &'a RunKey, status: RunStatus, at: Micros) -> _ {
    let key: (&'a str, i32) = (&run.run_id, run.recovery);
    let ended_at: Option<Micros> = (status != RunStatus::Running).then_some(at);
    let status: &'static str = status.as_str();
    dsl::update(runs::table.find(key)).set((runs::status.eq(status), runs::ended_at.eq(ended_at)))
}

/// Records why a run could not do its work.
#[auto_type(no_type_alias)]
pub(crate) fn set_run_cause<'a>(run: &'a RunKey, cause: String) -> _ {
    let key: (&'a str, i32) = (&run.run_id, run.recovery);
    dsl::update(runs::table.find(key)).set(runs::cause.eq(cause))
}

/// Replaces a run's parameters (a recovery's or continue's `--param` overrides).
#[auto_type(no_type_alias)]
pub(crate) fn set_run_params<'a>(run: &'a RunKey, params: String) -> _ {
    let key: (&'a str, i32) = (&run.run_id, run.recovery);
    dsl::update(runs::table.find(key)).set(runs::params.eq(params))
}

/// Deletes the rows that reference the runs of `run_id` (every recovery): its hosts' health,
/// tasks, triggers, delays, retries and requests. They go before [`delete_runs`], in the same transaction.
#[auto_type(no_type_alias)]
pub(crate) fn delete_rows_of<'a>(run_id: &'a str) -> _ {
    (
        dsl::delete(host_health::table.filter(host_health::run_id.eq(run_id))),
        dsl::delete(run_requests::table.filter(run_requests::run_id.eq(run_id))),
        dsl::delete(tasks::table.filter(tasks::run_id.eq(run_id))),
        dsl::delete(triggers::table.filter(triggers::run_id.eq(run_id))),
        dsl::delete(delays::table.filter(delays::run_id.eq(run_id))),
        dsl::delete(retries::table.filter(retries::run_id.eq(run_id))),
    )
}

/// Deletes every recovery of `run_id`; the count of deleted rows is the count of recoveries.
#[auto_type(no_type_alias)]
pub(crate) fn delete_runs<'a>(run_id: &'a str) -> _ {
    dsl::delete(runs::table.filter(runs::run_id.eq(run_id)))
}

/// What [`set_run_status`] updating `updated` rows means: none, that the run does not exist.
pub(crate) fn run_updated(updated: usize, run: &RunKey) -> Result<(), StoreError> {
    if updated == 0 {
        return Err(StoreError::NoSuchRun(run_label(run)));
    }
    Ok(())
}

/// Every run row, only those of the flow `name` if one is given, newest first (as
/// [`latest_run`] orders them).
#[auto_type(no_type_alias)]
pub(crate) fn runs_listing<'a>(name: Option<&'a str>) -> _ {
    let wanted: dsl::AsExprOf<Option<&'a str>, Nullable<Text>> = name.into_sql::<Nullable<Text>>();
    runs::table
        .filter(wanted.is_null().or(runs::name.nullable().eq(wanted)))
        .order((runs::started_at.desc(), runs::recovery.desc()))
        .select(run_columns())
}

/// How many tasks each run recovery holds in each status (a
/// [`TaskCountRow`](crate::rows::TaskCountRow)), every run of the store.
#[auto_type(no_type_alias)]
pub(crate) fn task_counts() -> _ {
    let count: dsl::count_star = dsl::count_star();
    tasks::table
        .group_by((tasks::run_id, tasks::recovery, tasks::status))
        .select((tasks::run_id, tasks::recovery, tasks::status, count))
}

/// How many failed tasks the store holds by failure class (`None`: stored before classes
/// were), every run of the store.
#[auto_type(no_type_alias)]
pub(crate) fn failure_class_counts() -> _ {
    let count: dsl::count_star = dsl::count_star();
    let failure: &'static str = "failure";
    tasks::table
        .filter(tasks::status.eq(failure))
        .group_by(tasks::failure_class)
        .select((tasks::failure_class, count))
}

// ---- shared pools -------------------------------------------------------------------------
// A grant transaction, on either backend: `lock_pool` each pool in name order (a row lock on
// Postgres; SQLite's write transaction holds the whole file), `held_by` to see whether an
// earlier try of the same request committed, `pool_units` and `units_granted` for each
// pool's room, then `insert_grant` per pool. All of it commits, or none.

/// Declares a shared pool with `units` (each backend adds `ON CONFLICT DO NOTHING`: the
/// first declaration stands).
#[auto_type(no_type_alias)]
pub(crate) fn declare_pool<'a>(name: &'a str, units: i32) -> _ {
    dsl::insert_into(pools::table).values((pools::name.eq(name), pools::units.eq(units)))
}

/// The units a shared pool was declared with.
#[auto_type(no_type_alias)]
pub(crate) fn pool_units<'a>(name: &'a str) -> _ {
    pools::table.find(name).select(pools::units)
}

/// A no-op update of a pool's row: on Postgres it takes the row lock that serializes the
/// grants of that pool across coordinators.
#[auto_type(no_type_alias)]
pub(crate) fn lock_pool<'a>(name: &'a str) -> _ {
    dsl::update(pools::table.find(name)).set(pools::units.eq(pools::units))
}

/// The units of `pool` granted now, one row per grant.
#[auto_type(no_type_alias)]
pub(crate) fn units_granted<'a>(pool: &'a str) -> _ {
    grants::table
        .filter(grants::pool.eq(pool))
        .select(grants::units)
}

/// The pools one attempt of a task holds (an earlier try of the same request committed).
#[auto_type(no_type_alias)]
pub(crate) fn held_by<'a>(request: &'a GrantRequest) -> _ {
    let run_id: &'a str = &request.run.run_id;
    let recovery: i32 = request.run.recovery;
    let step: &'a str = &request.step;
    let sequence: &'a str = &request.sequence;
    let attempt: i32 = request.attempt;
    grants::table
        .filter(grants::run_id.eq(run_id))
        .filter(grants::recovery.eq(recovery))
        .filter(grants::step.eq(step))
        .filter(grants::sequence.eq(sequence))
        .filter(grants::attempt.eq(attempt))
        .select(grants::pool)
}

/// Records `units` of `pool` as held by the request's task attempt.
#[auto_type(no_type_alias)]
pub(crate) fn insert_grant<'a>(
    request: &'a GrantRequest,
    pool: &'a str,
    units: i32,
    at: Micros,
) -> _ {
    let run_id: &'a str = &request.run.run_id;
    let recovery: i32 = request.run.recovery;
    let step: &'a str = &request.step;
    let sequence: &'a str = &request.sequence;
    let attempt: i32 = request.attempt;
    dsl::insert_into(grants::table).values((
        grants::pool.eq(pool),
        grants::run_id.eq(run_id),
        grants::recovery.eq(recovery),
        grants::step.eq(step),
        grants::sequence.eq(sequence),
        grants::attempt.eq(attempt),
        grants::units.eq(units),
        grants::granted_at.eq(at),
    ))
}

/// Gives back what one attempt of a task holds (in the batch of its end).
#[auto_type(no_type_alias)]
pub(crate) fn release_grant<'a>(
    run: &'a RunKey,
    step: &'a str,
    sequence: &'a str,
    attempt: i32,
) -> _ {
    let run_id: &'a str = &run.run_id;
    let recovery: i32 = run.recovery;
    dsl::delete(
        grants::table
            .filter(grants::run_id.eq(run_id))
            .filter(grants::recovery.eq(recovery))
            .filter(grants::step.eq(step))
            .filter(grants::sequence.eq(sequence))
            .filter(grants::attempt.eq(attempt)),
    )
}

/// Gives back everything every recovery of `run_id` holds: its coordinator is gone (a new
/// recovery or a continue of the run starts, under the run lock).
#[auto_type(no_type_alias)]
pub(crate) fn release_run_grants<'a>(run_id: &'a str) -> _ {
    dsl::delete(grants::table.filter(grants::run_id.eq(run_id)))
}

/// What declaring `declared` units found stored: the same, or a refusal.
pub(crate) fn check_declared(pool: &str, declared: u32, stored: i32) -> Result<(), StoreError> {
    if stored as i64 == declared as i64 {
        return Ok(());
    }
    Err(StoreError::PoolMismatch {
        pool: pool.to_owned(),
        declared,
        stored: stored.max(0) as u32,
    })
}

/// Whether `wanted` more units fit in a pool of `units` of which `granted` are held.
pub(crate) fn fits(units: i32, granted: &[i32], wanted: u32) -> bool {
    let held: i64 = granted.iter().map(|&u| i64::from(u)).sum();
    held + i64::from(wanted) <= i64::from(units)
}
