//! The run guard: proof that this process is the one coordinator of a run. Postgres holds an
//! advisory lock on a session of its own (`postgres/listen.rs`); SQLite holds an exclusive
//! `flock` on a lock file next to the database, `<db>.<run id>.lock`.
//!
//! On Postgres the lock can be lost (its session ended by the server while this process was
//! cut off from it), so a guard tells how sure it is that it still holds the run: its
//! [`Lease`]. A lock file cannot be lost while its process lives: its lease stays held.
//!
//! The lock file is removed by its holder, while still locked, when the guard goes. A process
//! that opened the file before the removal and locks it after finds, by comparing the locked
//! file with what the path names now, that it holds a deleted file, and starts over.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::lease::Lease;
use crate::postgres::RunLock;
use crate::types::StoreError;

/// Held while this process coordinates a run; a second holder of the same run id on the same
/// store gets [`StoreError::RunLocked`]. Dropping it releases the lock.
pub struct RunGuard {
    run_id: String,
    held: Held,
}

enum Held {
    File(FileLock),
    Postgres(RunLock),
}

impl RunGuard {
    pub(crate) fn file(run_id: &str, lock: FileLock) -> RunGuard {
        RunGuard {
            run_id: run_id.to_owned(),
            held: Held::File(lock),
        }
    }

    pub(crate) fn postgres(run_id: &str, lock: RunLock) -> RunGuard {
        RunGuard {
            run_id: run_id.to_owned(),
            held: Held::Postgres(lock),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The guard's [`Lease`] now and as it changes. A lock file's stays [`Lease::Held`] (its
    /// sender is gone: it never changes).
    pub fn lease(&self) -> watch::Receiver<Lease> {
        match &self.held {
            Held::File(_) => watch::channel(Lease::Held).1,
            Held::Postgres(lock) => lock.lease(),
        }
    }

    /// Returns if the lock was lost ([`Lease::Lost`]). Never returns on SQLite.
    pub async fn lost(&mut self) {
        match &mut self.held {
            Held::File(_) => std::future::pending().await,
            Held::Postgres(lock) => lock.lost().await,
        }
    }

    /// Releases the lock and returns once another process can take it (dropping the guard
    /// releases it too, a moment later on Postgres).
    pub async fn release(self) {
        match self.held {
            Held::File(lock) => drop(lock),
            Held::Postgres(lock) => lock.release().await,
        }
    }
}

impl std::fmt::Debug for RunGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunGuard")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

/// An exclusive lock on `<db>.<run id>.lock`.
pub(crate) struct FileLock {
    path: PathBuf,
    _file: File,
}

impl FileLock {
    /// [`acquire`](Self::acquire), tried again for up to [`REFUSAL_RETRY`] while someone
    /// else holds the lock: a reader's look ([`held`](Self::held)) holds it for a moment; a
    /// coordinator holds it for good.
    pub(crate) async fn acquire_patiently(db: &Path, run_id: &str) -> Result<FileLock, StoreError> {
        let give_up = tokio::time::Instant::now() + REFUSAL_RETRY;
        loop {
            match Self::acquire(db, run_id) {
                Err(StoreError::RunLocked { .. }) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(REFUSAL_RETRY / 20).await;
                }
                result => return result,
            }
        }
    }

    /// Locks the lock file of `run_id` next to the database at `db`, without waiting.
    pub(crate) fn acquire(db: &Path, run_id: &str) -> Result<FileLock, StoreError> {
        let path = lock_path(&canonical(db), run_id);
        loop {
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::RunLocked {
                        run_id: run_id.to_owned(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(lock_error(&path, e)),
            }
            if names_same_file(&path, &file) {
                return Ok(FileLock { path, _file: file });
            }
            // The previous holder removed the file between our open and our lock.
        }
    }

    /// Whether a coordinator holds `run_id` of the database at `db`: its lock file exists
    /// and its shared lock cannot be taken (it is taken, and let go, if it can).
    pub(crate) fn held(db: &Path, run_id: &str) -> Result<bool, StoreError> {
        let path = lock_path(&canonical(db), run_id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(lock_error(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(lock_error(&path, e)),
        }
    }
}

/// How long [`FileLock::acquire_patiently`] tries again a lock someone else holds.
const REFUSAL_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The same database reached through a symlink or another path is one lock.
fn canonical(db: &Path) -> PathBuf {
    std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf())
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this): see the module docs.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot remove run lock file");
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| lock_error(path, e))
}

fn lock_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::LockFile {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(unix)]
fn names_same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(named), Ok(held)) => (named.dev(), named.ino()) == (held.dev(), held.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn names_same_file(path: &Path, _file: &File) -> bool {
    path.exists()
}

/// `<db>.<run id>.lock`, the run id with anything but `[A-Za-z0-9._-]` written `%XX`.
fn lock_path(db: &Path, run_id: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    for byte in run_id.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-".contains(&byte) {
            name.push((byte as char).to_string());
        } else {
            name.push(format!("%{byte:02X}"));
        }
    }
    name.push(".lock");
    db.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_escapes_the_run_id() {
        let path = lock_path(Path::new("/d/store.db"), "a/b c.1");
        assert_eq!(path, Path::new("/d/store.db.a%2Fb%20c.1.lock"));
    }

    #[test]
    fn second_holder_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let first = FileLock::acquire(&db, "R").unwrap();
        let err = FileLock::acquire(&db, "R").err().unwrap();
        assert!(
            matches!(&err, StoreError::RunLocked { run_id } if run_id == "R"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "run R is already being run by another coordinator"
        );
        let other = FileLock::acquire(&db, "S").unwrap();
        assert!(FileLock::held(&db, "R").unwrap());
        assert!(!FileLock::held(&db, "T").unwrap(), "no lock file: nobody");
        drop(first);
        assert!(!FileLock::held(&db, "R").unwrap());
        assert!(!lock_path(&db, "R").exists(), "the holder removes its file");
        let again = FileLock::acquire(&db, "R").unwrap();
        drop((again, other));
    }

    /// A look at the lock in the very moment a coordinator takes it does not refuse it.
    #[tokio::test]
    async fn a_look_does_not_stand_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let leftover = open_lock_file(&lock_path(&canonical(&db), "R")).unwrap();
        leftover.lock_shared().unwrap(); // a reader's look, held for 30 ms
        let looker = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            drop(leftover);
        });
        let taken = FileLock::acquire_patiently(&db, "R").await;
        looker.join().unwrap();
        assert!(taken.is_ok(), "{:?}", taken.err());
        assert!(FileLock::held(&db, "R").unwrap());
    }

    #[test]
    fn a_file_removed_after_opening_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let stale = open_lock_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!names_same_file(&path, &stale));
        let fresh = open_lock_file(&path).unwrap();
        assert!(names_same_file(&path, &fresh));
    }
}
