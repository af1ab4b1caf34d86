//! Connections to the server: how one is made (password, no TLS, the schema on its search
//! path), and the small pool the store's operations share.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

use super::retry::BoxError;
use super::PgOptions;
use crate::location::PgLocation;
use crate::pgpass;
use crate::types::StoreError;

/// Everything needed to open another connection to one store.
pub(super) struct Connector {
    config: Config,
    schema: String,
    /// How long the server keeps a silent session of ours (the location's `dead_after`).
    dead_after: Duration,
    /// The location as logs and errors show it (any password masked).
    describe: String,
}

/// Why a connection could not be made. `fatal` when trying again cannot help (bad password,
/// no such database), as opposed to a server that is down or restarting.
#[derive(Debug)]
pub(super) struct ConnectError {
    pub fatal: bool,
    pub source: BoxError,
}

/// The server-side settings of every session: the idle-in-transaction limit, and TCP
/// keepalives plus a user timeout on the server's end of the socket, so that a session of a
/// machine that went silent ends after `dead_after` (half of it idle, then three probes)
/// and frees its locks. Each is a per-session setting any role may make.
fn session_settings(options: &PgOptions, dead_after: Duration) -> String {
    let idle = (dead_after / 2).as_secs().max(1);
    let probe = (dead_after / 6).as_secs().max(1);
    format!(
        "-c idle_in_transaction_session_timeout={} -c tcp_keepalives_idle={idle} \
         -c tcp_keepalives_interval={probe} -c tcp_keepalives_count=3 -c tcp_user_timeout={}",
        options.idle_in_transaction.as_millis().max(1),
        dead_after.as_millis()
    )
}

impl Connector {
    /// Resolves the password (URL, `PGPASSWORD`, `~/.pgpass`) once, when the store opens.
    pub fn new(location: &PgLocation, options: &PgOptions) -> Connector {
        let mut config = Config::new();
        config
            .host(&location.host)
            .port(location.port)
            .user(&location.user)
            .dbname(&location.database)
            .application_name("eventor")
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(options.connect_timeout)
            .keepalives_idle(options.keepalives_idle)
            .options(session_settings(options, location.dead_after()));
        if let Some(password) = pgpass::resolve(location) {
            config.password(password);
        }
        Connector {
            config,
            schema: location.schema.clone(),
            dead_after: location.dead_after(),
            describe: location.to_string(),
        }
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// A plain tokio-postgres connection, for LISTEN and the run lock; the caller drives
    /// `Connection` (it carries the notifications).
    pub async fn raw(&self) -> Result<(Client, Connection<Socket, NoTlsStream>), ConnectError> {
        self.config.connect(NoTls).await.map_err(connect_error)
    }

    /// A diesel connection whose search path is the store's schema.
    pub async fn diesel(&self) -> Result<AsyncPgConnection, ConnectError> {
        let (client, connection) = self.raw().await?;
        let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(transient)?;
        let set_path = format!("SET search_path TO {}", quote_ident(&self.schema));
        conn.batch_execute(&set_path).await.map_err(transient)?;
        Ok(conn)
    }
}

fn connect_error(e: tokio_postgres::Error) -> ConnectError {
    let fatal = e.code().is_some_and(is_fatal);
    ConnectError {
        fatal,
        source: Box::new(e),
    }
}

fn transient(e: impl Into<BoxError>) -> ConnectError {
    ConnectError {
        fatal: false,
        source: e.into(),
    }
}

/// Refusals a reconnect cannot cure: credentials and the database itself.
fn is_fatal(code: &SqlState) -> bool {
    code.code().starts_with("28")
        || *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
}

/// `name` as a quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A few connections shared by a store's clones; one operation holds one at a time.
///
/// A connection comes back with [`Pool::put_back`] only when its operation ended cleanly; one
/// whose operation failed on the wire, or was cancelled halfway (its future dropped), is
/// simply dropped, so no half-done transaction is ever handed to the next operation.
pub(super) struct Pool {
    connector: Arc<Connector>,
    idle: Mutex<Vec<AsyncPgConnection>>,
    permits: Semaphore,
}

impl Pool {
    pub fn new(connector: Arc<Connector>, size: usize, first: AsyncPgConnection) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
        }
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// The right to use one connection; held for the whole operation.
    pub async fn permit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        self.permits.acquire().await.map_err(|_| StoreError::Closed)
    }

    /// An idle connection, or a new one (call with a permit held).
    pub async fn take(&self) -> Result<AsyncPgConnection, ConnectError> {
        let idle = self.idle().pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connector.diesel().await,
        }
    }

    pub fn put_back(&self, conn: AsyncPgConnection) {
        self.idle().push(conn);
    }

    /// Drops the idle connections: after one was lost, the others most likely were too.
    pub fn forget_idle(&self) {
        self.idle().clear();
    }

    fn idle(&self) -> MutexGuard<'_, Vec<AsyncPgConnection>> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
