//! Getting a schema ready when a store opens: created if missing, migrated with the embedded
//! diesel migrations, and pruned of old batch ids — all under a session advisory lock, so two
//! stores opening a new schema at once do the work once.
//!
//! diesel's migration harness wants a synchronous connection: the async one is wrapped in
//! diesel-async's `AsyncConnectionWrapper` and driven from a blocking thread.
//!
//! A store opened by an agent of a run whose prime has just prepared the schema only checks
//! it ([`is_current`]: one query, no lock).

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{Bool, Text};
use diesel::{QueryableByName, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::connect::quote_ident;
use super::retry::BoxError;
use super::MIGRATE_LOCK_CLASS;
use crate::types::StoreError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

type SyncPg = AsyncConnectionWrapper<AsyncPgConnection>;

/// Creates and migrates `schema` on `conn` (whose search path is already `schema`) and hands
/// the connection back for the pool.
pub(super) async fn prepare(
    conn: AsyncPgConnection,
    schema: &str,
    lock_key: i32,
    store: &str,
) -> Result<AsyncPgConnection, StoreError> {
    let schema = schema.to_owned();
    let work = tokio::task::spawn_blocking(move || {
        let mut conn = SyncPg::from(conn);
        let prepared = locked(&mut conn, lock_key, |conn| ready_schema(conn, &schema));
        prepared.map(|()| conn.into_inner())
    });
    let joined = work.await.map_err(|e| migrate_error(store, Box::new(e)))?;
    joined.map_err(|e| migrate_error(store, e))
}

fn migrate_error(store: &str, source: BoxError) -> StoreError {
    StoreError::Migrate {
        path: store.to_owned(),
        source,
    }
}

/// Runs `work` holding the schema's migration lock; the lock is released whatever happens.
fn locked(
    conn: &mut SyncPg,
    key: i32,
    work: impl FnOnce(&mut SyncPg) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    conn.batch_execute(&format!(
        "SELECT pg_advisory_lock({MIGRATE_LOCK_CLASS}, {key})"
    ))?;
    let outcome = work(conn);
    let unlocked = conn.batch_execute(&format!(
        "SELECT pg_advisory_unlock({MIGRATE_LOCK_CLASS}, {key})"
    ));
    outcome?;
    Ok(unlocked?)
}

/// Whether `schema` holds this build's newest migration. Any error (no such table) is
/// `false`: the caller then prepares the schema as usual.
pub(super) async fn is_current(conn: &mut AsyncPgConnection, schema: &str) -> bool {
    let Some(newest) = newest_migration() else {
        return false;
    };
    let query = format!(
        "SELECT EXISTS (SELECT 1 FROM {}.__diesel_schema_migrations WHERE version = $1) \
         AS present",
        quote_ident(schema)
    );
    let query = diesel::sql_query(query).bind::<Text, _>(newest);
    let found = diesel_async::RunQueryDsl::get_result::<Present>(query, conn).await;
    matches!(found, Ok(Present { present: true }))
}

/// The version of the newest embedded migration.
fn newest_migration() -> Option<String> {
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS).ok()?;
    let versions = migrations.iter().map(|m| m.name().version().to_string());
    versions.max()
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = Bool)]
    present: bool,
}

fn ready_schema(conn: &mut SyncPg, schema: &str) -> Result<(), BoxError> {
    // Looking first spares a user who may use, but not create, the schema the privilege
    // check of CREATE SCHEMA IF NOT EXISTS.
    let found: Present = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS present",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)?;
    if !found.present {
        conn.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))?;
        tracing::info!(%schema, "created the store's postgres schema");
    }
    let applied = conn.run_pending_migrations(MIGRATIONS)?;
    if !applied.is_empty() {
        tracing::info!(count = applied.len(), %schema, "applied postgres store migrations");
    }
    // A retry needs its batch id for seconds; a day is plenty.
    conn.batch_execute("DELETE FROM batches WHERE committed_at < now() - interval '1 day'")?;
    Ok(())
}
