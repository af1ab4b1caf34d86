//! Connections to the server: how one is made (password, TLS as the `sslmode` says, the
//! schema on its search path), and the small pool the store's operations share.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Connection, Socket};

use super::retry::BoxError;
use super::tls::{refusal_of, requires_tls, PgStream, PgTls};
use super::PgOptions;
use crate::location::PgLocation;
use crate::pgpass;
use crate::tls::SslMode;
use crate::tls_files as tls_setup;
use crate::types::StoreError;

/// A connection as [`Connector::raw`] makes it, plain or TLS.
pub(super) type RawConnection = Connection<Socket, PgStream>;

/// Everything needed to open another connection to one store.
pub(super) struct Connector {
    config: Config,
    tls: PgTls,
    /// The `sslmode` resolved (for `allow`'s second try and for the errors).
    mode: SslMode,
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
    /// Resolves the password (URL, `PGPASSWORD`, `~/.pgpass`) and the TLS (`sslmode` and
    /// its files, [`crate::tls`]) once, when the store opens.
    pub fn new(location: &PgLocation, options: &PgOptions) -> Result<Connector, StoreError> {
        let setup_error = |source: crate::tls::TlsSetupError| StoreError::Open {
            path: location.to_string(),
            source: Box::new(source),
        };
        let material = tls_setup::resolve(location).map_err(setup_error)?;
        let tls = PgTls::new(&material).map_err(setup_error)?;
        // As libpq: no TLS over a Unix socket, whatever the mode.
        let mode = match location.host.starts_with('/') {
            true => SslMode::Disable,
            false => material.mode,
        };
        let mut config = Config::new();
        config
            .host(&location.host)
            .port(location.port)
            .user(&location.user)
            .dbname(&location.database)
            .application_name("eventor")
            .ssl_mode(first_try(mode))
            .connect_timeout(options.connect_timeout)
            .keepalives_idle(options.keepalives_idle)
            .options(session_settings(options, location.dead_after()));
        if let Some(password) = pgpass::resolve(location) {
            config.password(password);
        }
        Ok(Connector {
            config,
            tls,
            mode,
            schema: location.schema.clone(),
            dead_after: location.dead_after(),
            describe: location.to_string(),
        })
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

    /// A tokio-postgres connection, for LISTEN and the run lock; the caller drives
    /// `Connection` (it carries the notifications). Every connection of the store is made
    /// here, so each has the store's TLS.
    pub async fn raw(&self) -> Result<(Client, RawConnection), ConnectError> {
        match self.config.connect(self.tls.clone()).await {
            // `allow`: plain text first, TLS when the server wants it.
            Err(e) if self.mode == SslMode::Allow && requires_tls(&e) => {
                let mut config = self.config.clone();
                config.ssl_mode(WireMode::Require);
                let connected = config.connect(self.tls.clone()).await;
                connected.map_err(|e| connect_error(e, self.mode))
            }
            connected => connected.map_err(|e| connect_error(e, self.mode)),
        }
    }

    /// A login as the store's connections make it, and one trivial question.
    pub async fn login(&self) -> Result<(), ConnectError> {
        let (client, connection) = self.raw().await?;
        let driven = tokio::spawn(connection);
        let asked = client.simple_query("SELECT 1").await;
        drop(client);
        let _ = driven.await;
        asked.map(|_| ()).map_err(|e| connect_error(e, self.mode))
    }

    /// A login over `stream` (a way to the server through another machine: an SSH
    /// channel), TLS negotiated on it as the mode says; the session is closed at once.
    pub async fn login_over<S>(&self, stream: S, host: &str) -> Result<(), ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tls = self.tls.connector_for::<S>(host).map_err(transient)?;
        let (client, connection) = self
            .config
            .connect_raw(stream, tls)
            .await
            .map_err(|e| connect_error(e, self.mode))?;
        let driven = tokio::spawn(connection);
        let asked = client.simple_query("SELECT 1").await;
        drop(client);
        let _ = driven.await;
        asked.map(|_| ()).map_err(|e| connect_error(e, self.mode))
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

/// How the first try of a connection in `mode` goes on the wire (`verify-*` are `Require`
/// there: the certificate check is the connector's).
fn first_try(mode: SslMode) -> WireMode {
    match mode {
        SslMode::Disable | SslMode::Allow => WireMode::Disable,
        SslMode::Prefer => WireMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
    }
}

/// A TLS refusal is told as such and is fatal (trying again cannot change a certificate or
/// the server's rules); otherwise as the server said.
fn connect_error(e: tokio_postgres::Error, mode: SslMode) -> ConnectError {
    if let Some(refusal) = refusal_of(&e, mode) {
        return ConnectError {
            fatal: true,
            source: Box::new(refusal),
        };
    }
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
