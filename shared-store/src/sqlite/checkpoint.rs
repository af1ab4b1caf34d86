//! Checkpoints the WAL on a thread and connection of their own, off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
//! commit copies a thousand pages into the database file and syncs it twice, and a chain of
//! steps, which commits once per step, pays about a third of its time for it. Here the
//! writer's connection checkpoints automatically only past [`FALLBACK_PAGES`] (should this
//! thread fall behind), and every [`NUDGE_EVERY`] writes nudge this thread, which runs a
//! `PASSIVE` checkpoint: it never waits for a lock, never blocks the writer, and the next
//! write restarts the WAL from its start once every frame is back in the database.
//!
//! The thread starts with the first nudge, so a short-lived process (a `status`, a trigger)
//! never opens a second connection. It stops when its [`Checkpointer`] is dropped; the
//! store drops it before its own connection, whose close then checkpoints what is left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::{self, JoinHandle};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::Synchronous;

/// Writes between two nudges: a chain step's commit adds about five pages to the WAL, so a
/// nudge comes about every thousand pages, where SQLite's own checkpoint would run.
const NUDGE_EVERY: u32 = 200;

/// The writer's own automatic checkpoint, in pages (16 MB): only reached when this thread
/// cannot keep up or cannot start.
pub(super) const FALLBACK_PAGES: u32 = 4000;

/// The background checkpointer of one store; started on its first nudge.
pub(super) struct Checkpointer {
    path: PathBuf,
    synchronous: Synchronous,
    writes: AtomicU32,
    running: Mutex<Option<Running>>,
}

struct Running {
    nudge: mpsc::SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn new(path: &Path, synchronous: Synchronous) -> Checkpointer {
        Checkpointer {
            path: path.to_path_buf(),
            synchronous,
            writes: AtomicU32::new(0),
            running: Mutex::new(None),
        }
    }

    /// Counts one write; every [`NUDGE_EVERY`]th wakes the thread (starting it the first time).
    pub(super) fn wrote(&self) {
        let writes = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if !writes.is_multiple_of(NUDGE_EVERY) {
            return;
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_none() {
            *running = self.start();
        }
        if let Some(running) = running.as_ref() {
            // Full: a nudge is already waiting, which is all that is needed.
            let _ = running.nudge.try_send(());
        }
    }

    fn start(&self) -> Option<Running> {
        let (nudge, nudges) = mpsc::sync_channel(1);
        let (path, synchronous) = (self.path.clone(), self.synchronous);
        let spawned = thread::Builder::new()
            .name("eventor-checkpoint".into())
            .spawn(move || checkpoint_on_nudge(&path, synchronous, nudges));
        match spawned {
            Ok(thread) => Some(Running { nudge, thread }),
            Err(error) => {
                tracing::debug!(%error, "no checkpoint thread; the writer checkpoints");
                None
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(Running { nudge, thread }) = running.take() {
            drop(nudge);
            let _ = thread.join();
        }
    }
}

/// The thread: one connection of its own, a `PASSIVE` checkpoint per nudge, until the
/// sender is gone.
fn checkpoint_on_nudge(path: &Path, synchronous: Synchronous, nudges: mpsc::Receiver<()>) {
    let Some(mut conn) = open(path, synchronous) else {
        return; // the writer's fallback checkpoint still bounds the WAL
    };
    while nudges.recv().is_ok() {
        if let Err(error) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::debug!(%error, "background checkpoint failed; the next nudge tries again");
        }
    }
}

fn open(path: &Path, synchronous: Synchronous) -> Option<SqliteConnection> {
    let url = super::database_url(path)?;
    let opened = SqliteConnection::establish(&url).and_then(|mut conn| {
        // The checkpoint syncs as the writer's commits do (none with `NORMAL`'s commits, the
        // WAL and the database at each checkpoint).
        let sql = format!("PRAGMA synchronous = {};", synchronous.pragma_value());
        conn.batch_execute(&sql)
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    });
    match opened {
        Ok(conn) => Some(conn),
        Err(error) => {
            tracing::debug!(%error, "cannot open the checkpoint connection");
            None
        }
    }
}
