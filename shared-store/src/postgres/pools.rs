//! Shared pools on Postgres: declaring them, granting units (all of a request, or none) and
//! giving back a whole run's grants. A grant locks each pool's row in name order (so two
//! grants never deadlock), sums what the pool has granted, and inserts its rows; a retry
//! after a lost COMMIT finds its own rows (`held_by`) and answers granted. Giving back wakes
//! every coordinator waiting on a pool (`pg_notify` on the pools' channel, sent on commit).

use diesel::sql_types::Text;
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::retry::Failure;
use super::stmt::{Sql, Stmt};
use super::txn::finish;
use crate::query;
use crate::types::*;

/// Queues the pools' notification, delivered only if the transaction commits.
enum NotifyPools {}

impl Sql for NotifyPools {
    const SQL: &'static str = "SELECT 1 AS one FROM pg_notify(?, ?)";
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    #[allow(dead_code)] // only its presence matters
    one: i32,
}

/// Where a release tells waiting coordinators that units came back.
pub(crate) struct PoolsChannel {
    pub channel: String,
    pub payload: String,
}

/// Queues `channel`'s notification in the open transaction.
pub(super) async fn notify(conn: &mut AsyncPgConnection, to: &PoolsChannel) -> Result<(), Failure> {
    let _: One = Stmt::<NotifyPools>::new()
        .bind::<Text, _>(&to.channel)
        .bind::<Text, _>(&to.payload)
        .get_result(conn)
        .await?;
    Ok(())
}

/// One try at declaring `pools`; the first declaration of a pool stands.
pub(super) async fn declare_once(
    conn: &mut AsyncPgConnection,
    pools: &[(String, u32)],
) -> Result<(), Failure> {
    let outcome = async {
        conn.batch_execute("BEGIN").await?;
        for (name, units) in pools {
            let insert = query::declare_pool(name, *units as i32).on_conflict_do_nothing();
            insert.execute(conn).await?;
            let stored: i32 = query::pool_units(name).first(conn).await?;
            query::check_declared(name, *units, stored)?;
        }
        Ok(Some(()))
    }
    .await;
    finish(conn, outcome).await.map(drop)
}

/// One try at granting `request` (its pools sorted by name).
pub(super) async fn grant_once(
    conn: &mut AsyncPgConnection,
    request: &GrantRequest,
    at: Micros,
) -> Result<bool, Failure> {
    let outcome = async {
        conn.batch_execute("BEGIN").await?;
        grant(conn, request, at).await
    }
    .await;
    // A refusal (no room) rolls back: nothing was inserted anyway.
    let granted = finish(conn, outcome.map(|granted| granted.then_some(()))).await?;
    Ok(granted.is_some())
}

async fn grant(
    conn: &mut AsyncPgConnection,
    request: &GrantRequest,
    at: Micros,
) -> Result<bool, Failure> {
    for (pool, _) in &request.units {
        if query::lock_pool(pool).execute(conn).await? == 0 {
            return Err(StoreError::NoSuchPool(pool.to_string()).into());
        }
    }
    let held: Vec<String> = query::held_by(request).load(conn).await?;
    if !held.is_empty() {
        return Ok(true); // an earlier try committed
    }
    for (pool, units) in &request.units {
        let stored: Option<i32> = query::pool_units(pool).first(conn).await.optional()?;
        let stored = stored.ok_or_else(|| StoreError::NoSuchPool(pool.to_string()))?;
        let granted: Vec<i32> = query::units_granted(pool).load(conn).await?;
        if !query::fits(stored, &granted, *units) {
            return Ok(false);
        }
    }
    for (pool, units) in &request.units {
        query::insert_grant(request, pool, *units as i32, at)
            .execute(conn)
            .await?;
    }
    Ok(true)
}

/// One try at giving back every grant of `run_id`, waking the waiting coordinators.
pub(super) async fn release_run_once(
    conn: &mut AsyncPgConnection,
    run_id: &str,
    to: &PoolsChannel,
) -> Result<usize, Failure> {
    let outcome = async {
        conn.batch_execute("BEGIN").await?;
        let released = query::release_run_grants(run_id).execute(conn).await?;
        if released > 0 {
            notify(conn, to).await?;
        }
        Ok(Some(released))
    }
    .await;
    Ok(finish(conn, outcome).await?.unwrap_or(0))
}
