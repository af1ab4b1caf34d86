//! The two long-lived sessions a store opens besides its pool, both plain tokio-postgres
//! connections: a LISTEN for one run's notifications, and the session holding one run's
//! advisory lock. diesel-async's pooled connections would not do: a LISTEN must outlive any
//! one operation, and a session lock lives exactly as long as its session.
//!
//! Each is driven by its own task, which reconnects with backoff when the server goes away.
//! A listener then wakes its subscriber once (commits made while it was away sent
//! notifications nobody heard); a run lock takes its lock again, and reports it lost if
//! another session took it meanwhile. A run lock also asks its session, every
//! `dead_after / 6`, whether it still holds the lock, so a prime cut off from the server
//! knows it within half of `dead_after` (see [`Lease`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Notification};

use super::connect::{ConnectError, Connector, RawConnection};
use super::retry::FIRST_RECONNECT_WAIT;
use super::RunLockKey;
use crate::lease::Lease;
use crate::types::{RunKey, StoreError};

/// A session's reconnect waits stop growing here: a lock or a listener should come back soon
/// after the server does.
const MAX_SESSION_WAIT: Duration = Duration::from_secs(2);

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection, its notifications forwarded by a driver task; `messages` closes when the
/// connection ends.
struct PgSession {
    client: Client,
    messages: mpsc::UnboundedReceiver<Notification>,
    _driver: AbortOnDrop,
}

impl PgSession {
    async fn open(connector: &Connector) -> Result<PgSession, ConnectError> {
        let (client, connection) = connector.raw().await?;
        let (forward, messages) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(connection, forward));
        Ok(PgSession {
            client,
            messages,
            _driver: AbortOnDrop(driver),
        })
    }
}

/// Polls the connection (which runs the client's queries) and forwards its notifications.
async fn drive(mut connection: RawConnection, forward: mpsc::UnboundedSender<Notification>) {
    while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
        match message {
            Ok(AsyncMessage::Notification(note)) => {
                if forward.send(note).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "store session ended");
                return;
            }
        }
    }
}

/// Waits before a reconnect: 200 ms, then twice as long each time, up to 2 s.
struct Backoff<'c> {
    connector: &'c Connector,
    what: &'static str,
    wait: Duration,
}

impl<'c> Backoff<'c> {
    fn new(connector: &'c Connector, what: &'static str) -> Self {
        Backoff {
            connector,
            what,
            wait: FIRST_RECONNECT_WAIT,
        }
    }

    async fn pause(&mut self) {
        let (store, what, wait) = (self.connector.describe(), self.what, self.wait);
        tracing::warn!(%store, "store {what} connection lost, reconnecting in {wait:?}");
        tokio::time::sleep(wait).await;
        self.wait = (wait * 2).min(MAX_SESSION_WAIT);
    }

    fn failed(&self, e: ConnectError) {
        tracing::debug!(error = %e.source, "store {} reconnect failed", self.what);
    }

    fn done(&self) {
        let store = self.connector.describe();
        tracing::info!(%store, "store {} connection re-established", self.what);
    }
}

fn session_error(connector: &Connector, e: ConnectError) -> StoreError {
    StoreError::Open {
        path: connector.describe().to_owned(),
        source: e.source,
    }
}

fn query_error(e: tokio_postgres::Error) -> ConnectError {
    ConnectError {
        fatal: false,
        source: Box::new(e),
    }
}

// ---- notifications -------------------------------------------------------------------------

/// The notification payload of a write to `run` by the store `origin`.
pub(super) fn payload(origin: u64, run: &RunKey) -> String {
    format!("{origin:016x} {} {}", run.recovery, run.run_id)
}

/// Which notifications wake a subscriber: its run's, from any store but its own.
pub(super) struct Filter {
    pub origin: u64,
    pub run: RunKey,
}

impl Filter {
    fn wakes(&self, payload: &str) -> bool {
        let mut parts = payload.splitn(3, ' ');
        let (Some(origin), Some(recovery), Some(run_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        origin != format!("{:016x}", self.origin)
            && recovery.parse() == Ok(self.run.recovery)
            && run_id == &*self.run.run_id
    }
}

/// A LISTEN on one run's channel; [`Listener::next`] returns once per burst of writes.
pub(crate) struct Listener {
    wake: Arc<Notify>,
    _task: AbortOnDrop,
}

impl Listener {
    /// Listens before returning, so every write committed after this call wakes it.
    pub(super) async fn start(
        connector: Arc<Connector>,
        channel: String,
        filter: Filter,
    ) -> Result<Listener, StoreError> {
        let session = listen(&connector, &channel)
            .await
            .map_err(|e| session_error(&connector, e))?;
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(pump(connector, channel, filter, wake.clone(), session));
        Ok(Listener {
            wake,
            _task: AbortOnDrop(task),
        })
    }

    /// Waits for the next write by another store (writes while nobody waited count once).
    pub(crate) async fn next(&mut self) {
        self.wake.notified().await;
    }
}

async fn listen(connector: &Connector, channel: &str) -> Result<PgSession, ConnectError> {
    let session = PgSession::open(connector).await?;
    // The channel name is `eventor_` and hex digits: nothing to quote.
    let sql = format!("LISTEN {channel}");
    session
        .client
        .batch_execute(&sql)
        .await
        .map_err(query_error)?;
    Ok(session)
}

async fn pump(
    connector: Arc<Connector>,
    channel: String,
    filter: Filter,
    wake: Arc<Notify>,
    mut session: PgSession,
) {
    loop {
        while let Some(note) = session.messages.recv().await {
            if filter.wakes(note.payload()) {
                wake.notify_one();
            }
        }
        session = relisten(&connector, &channel).await;
        // Writes committed meanwhile notified nobody.
        wake.notify_one();
    }
}

/// A new LISTEN session, however many tries it takes (the owning task may be aborted).
async fn relisten(connector: &Connector, channel: &str) -> PgSession {
    let mut backoff = Backoff::new(connector, "notification");
    loop {
        backoff.pause().await;
        match listen(connector, channel).await {
            Ok(session) => {
                backoff.done();
                return session;
            }
            Err(e) => backoff.failed(e),
        }
    }
}

// ---- the run lock --------------------------------------------------------------------------

/// A run's advisory lock, held by a session of its own for as long as this value lives, and
/// confirmed on that session every `dead_after / 6` (see [`Lease`]).
pub(crate) struct RunLock {
    lease: watch::Sender<Lease>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
    _task: AbortOnDrop,
}

impl RunLock {
    /// Takes the lock, or fails with [`StoreError::RunLocked`] if another session holds it.
    pub(super) async fn acquire(
        connector: Arc<Connector>,
        run_id: &str,
        key: RunLockKey,
    ) -> Result<RunLock, StoreError> {
        let session = PgSession::open(&connector)
            .await
            .map_err(|e| session_error(&connector, e))?;
        let taken = try_lock(&session.client, key)
            .await
            .map_err(|e| session_error(&connector, e))?;
        if !taken {
            return Err(StoreError::RunLocked {
                run_id: run_id.to_owned(),
            });
        }
        let lease = watch::Sender::new(Lease::Held);
        let (release, release_rx) = oneshot::channel();
        let keeper = Keeper {
            contact: Contact::new(connector.dead_after(), lease.clone()),
            connector,
            run_id: run_id.to_owned(),
            key,
        };
        let task = tokio::spawn(keeper.keep(session, release_rx));
        Ok(RunLock {
            lease,
            release: Some(release),
            _task: AbortOnDrop(task),
        })
    }

    /// The lease's state now and its changes.
    pub(crate) fn lease(&self) -> watch::Receiver<Lease> {
        self.lease.subscribe()
    }

    /// Returns if the lock was lost (see [`Lease::Lost`]).
    pub(crate) async fn lost(&mut self) {
        let mut lease = self.lease.subscribe();
        if lease.wait_for(|l| *l == Lease::Lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Unlocks and waits until the server has done so (dropping unlocks soon after).
    pub(crate) async fn release(mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        let (done, unlocked) = oneshot::channel();
        if release.send(done).is_ok() {
            let _ = unlocked.await;
        }
    }
}

async fn try_lock(client: &Client, key: RunLockKey) -> Result<bool, ConnectError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key.0])
        .await
        .map_err(query_error)?;
    row.try_get(0).map_err(query_error)
}

/// Whether this very session (its backend, so its session locks) holds the lock: one
/// answer proves the session is the one that took it.
async fn holds(client: &Client, key: RunLockKey) -> Result<bool, ConnectError> {
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND pid = pg_backend_pid() AND classid = $1::int8::oid \
               AND objid = $2::int8::oid AND objsubid = 1)";
    let (high, low) = key.in_pg_locks();
    let row = client
        .query_one(sql, &[&high, &low])
        .await
        .map_err(query_error)?;
    row.try_get(0).map_err(query_error)
}

/// When this process last knew it held the lock, and what it concludes from that.
struct Contact {
    /// The last answer of the lock's session (or the lock taken again).
    confirmed: tokio::time::Instant,
    dead_after: Duration,
    lease: watch::Sender<Lease>,
}

impl Contact {
    fn new(dead_after: Duration, lease: watch::Sender<Lease>) -> Contact {
        Contact {
            confirmed: tokio::time::Instant::now(),
            dead_after,
            lease,
        }
    }

    /// How often the session is asked: six times in `dead_after`, so a lost answer or two
    /// do not make the lease look lost.
    fn period(&self) -> Duration {
        self.dead_after / 6
    }

    /// Returns once the lease has gone unconfirmed for half of `dead_after` (never if it
    /// already counts as unconfirmed).
    async fn expired(&self) {
        if *self.lease.borrow() != Lease::Held {
            return std::future::pending().await;
        }
        tokio::time::sleep_until(self.confirmed + self.dead_after / 2).await;
    }

    fn confirm(&mut self) {
        self.confirmed = tokio::time::Instant::now();
        self.set(Lease::Held);
    }

    fn unconfirmed(&self) {
        tracing::warn!(
            "cannot confirm the run lock with the store for {:?}",
            self.confirmed.elapsed()
        );
        self.set(Lease::Unconfirmed);
    }

    fn is_unconfirmed(&self) -> bool {
        *self.lease.borrow() == Lease::Unconfirmed
    }

    fn set(&self, state: Lease) {
        self.lease.send_if_modified(|now| {
            let changed = *now != state && *now != Lease::Lost;
            if changed {
                *now = state;
            }
            changed
        });
    }
}

/// How the lock's session ended.
enum Ended {
    /// The connection closed (a restart, a network error, the server gave up on us).
    Closed,
    /// The session answered but does not hold the lock.
    NotHolding,
}

/// The task behind a [`RunLock`].
struct Keeper {
    connector: Arc<Connector>,
    run_id: String,
    key: RunLockKey,
    contact: Contact,
}

impl Keeper {
    /// Holds the lock until released (or the guard is dropped), confirming it on its session
    /// and taking it again after the session drops while in contact. A session that ends
    /// while the lease is unconfirmed was most likely ended by the server for our silence:
    /// the run was free meanwhile, another coordinator may have taken it (and even let it
    /// go again), so the lock is lost, not taken again.
    async fn keep(
        mut self,
        mut session: PgSession,
        mut release: oneshot::Receiver<oneshot::Sender<()>>,
    ) {
        loop {
            let ended = tokio::select! {
                request = &mut release => {
                    if let Ok(done) = request {
                        self.unlock(session).await;
                        let _ = done.send(());
                    }
                    return;
                }
                ended = self.hold(&mut session) => ended,
            };
            let why = match ended {
                Ended::NotHolding => "its session no longer holds it",
                Ended::Closed if self.contact.is_unconfirmed() => {
                    "its session ended while the store was unreachable"
                }
                Ended::Closed => match self.relock().await {
                    Some(again) => {
                        session = again;
                        continue;
                    }
                    None => "another coordinator took it while the store was unreachable",
                },
            };
            tracing::error!(run_id = %self.run_id, "lost the run lock: {why}");
            self.contact.lease.send_replace(Lease::Lost);
            return;
        }
    }

    /// Confirms the lock on `session` every [`Contact::period`] until the session ends.
    async fn hold(&mut self, session: &mut PgSession) -> Ended {
        let PgSession {
            client, messages, ..
        } = session;
        let closed = async { while messages.recv().await.is_some() {} };
        tokio::pin!(closed);
        loop {
            let probe = holds(client, self.key);
            tokio::pin!(probe);
            loop {
                tokio::select! {
                    () = &mut closed => return Ended::Closed,
                    () = self.contact.expired() => self.contact.unconfirmed(),
                    answer = &mut probe => match answer {
                        Ok(true) => break self.contact.confirm(),
                        Ok(false) => return Ended::NotHolding,
                        Err(_) => return Ended::Closed,
                    },
                }
            }
            tokio::select! {
                () = &mut closed => return Ended::Closed,
                () = tokio::time::sleep(self.contact.period()) => {}
            }
        }
    }

    /// A new session holding the lock, or `None` if another session holds it now; the
    /// lease goes unconfirmed if that takes long.
    async fn relock(&mut self) -> Option<PgSession> {
        let relock = relock(&self.connector, self.key);
        tokio::pin!(relock);
        loop {
            tokio::select! {
                session = &mut relock => {
                    if session.is_some() {
                        self.contact.confirm();
                    }
                    return session;
                }
                () = self.contact.expired() => self.contact.unconfirmed(),
            }
        }
    }

    async fn unlock(&self, session: PgSession) {
        let sql = "SELECT pg_advisory_unlock($1)";
        if let Err(e) = session.client.execute(sql, &[&self.key.0]).await {
            // Closing the session below releases it anyway.
            tracing::debug!(error = %e, "run unlock failed");
        }
    }
}

/// A new session holding the lock at `key`, or `None` if another session holds it now.
async fn relock(connector: &Connector, key: RunLockKey) -> Option<PgSession> {
    let mut backoff = Backoff::new(connector, "run lock");
    loop {
        backoff.pause().await;
        let session = match PgSession::open(connector).await {
            Ok(session) => session,
            Err(e) => {
                backoff.failed(e);
                continue;
            }
        };
        match try_lock(&session.client, key).await {
            Ok(taken) => {
                backoff.done();
                return taken.then_some(session);
            }
            Err(e) => backoff.failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_wakes_for_its_run_from_other_stores_only() {
        let run = RunKey {
            run_id: Arc::from("run with spaces"),
            recovery: 2,
        };
        let filter = Filter {
            origin: 7,
            run: run.clone(),
        };
        assert!(filter.wakes(&payload(8, &run)));
        assert!(!filter.wakes(&payload(7, &run)), "its own store's write");
        let other = RunKey {
            recovery: 3,
            ..run.clone()
        };
        assert!(!filter.wakes(&payload(8, &other)));
        assert!(!filter.wakes("garbage"));
        assert!(!filter.wakes(""));
    }
}
