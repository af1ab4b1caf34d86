//! A thin SQLite VFS that writes each commit's WAL frames with one `pwrite`, not two per page.
//!
//! SQLite appends a transaction to the WAL one frame at a time, and each frame with two
//! writes: its 24-byte header, then its page. A chain step's commit touches three pages, so
//! it costs six `pwrite` calls, each paying the kernel's whole write path (inode lock, page
//! cache lookup, timestamps) for a few kilobytes; they were nearly a third of a chain step's time.
//! This VFS wraps the default one and, for the WAL file only, gathers contiguous appends in a
//! buffer that goes to the file in one write.
//!
//! # When the buffer reaches the file
//!
//! What makes this safe is *when* a buffered frame must be in the file: before anyone can be
//! told it exists. Readers, checkpointers and recovery in this or another process find frames
//! only through the WAL index header, and the writer publishes that header after writing the
//! transaction's last frame (the one whose header carries the database size, its *commit
//! mark*), with no VFS call in between that could report an error. So:
//!
//! - the page that completes a commit-marked frame flushes the buffer, and that write returns
//!   the flush's error, so a failed write fails the commit exactly as SQLite's own would;
//! - after that, the WAL is *sealed*: writes go straight to the file until the next
//!   transaction begins, which always takes a lock on the shared-memory index first. That
//!   covers what SQLite writes after the commit frame (rewritten checksums, `FULL`'s padding);
//! - a write that does not continue the buffer, any read, sync, size, truncate or file control
//!   of the WAL, its close, and every shared-memory call of its database (locks, maps,
//!   barriers) flush first. A rolled-back transaction's frames are thus written before its
//!   write lock is let go, never later over another writer's frames. An unlock or unmap goes
//!   ahead even when that flush fails: SQLite does not look at its answer, and a lock it
//!   believes let go must not stay held.
//! - a flush in the one call that cannot report an error (the memory barrier) leaves the
//!   error on the file, and its next call returns it. In practice that buffer is always empty.
//!
//! A crash loses what is buffered, which is a transaction not yet committed: the same as a
//! crash before SQLite's own writes. The bytes and their order in the file are SQLite's.

use std::ffi::{c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The VFS's name, for the `vfs=` parameter of the store's URI.
pub(super) const NAME: &CStr = c"eventor-wal";

/// The most a buffer holds before it is written: a transaction larger than this is written
/// in pieces of about this size. The unix VFS writes at most 128 KiB - 1 bytes in one call
/// (it masks the length with `0x1ffff`), and a frame of the largest page (64 KiB) must fit.
const CAPACITY: usize = 96 * 1024;

/// A frame header's length. Its bytes 4..8 hold the database's size in pages after a commit,
/// 0 in any other frame.
const FRAME_HEADER: usize = 24;

/// Registers the VFS once per process; `Err` carries SQLite's code if it could not be.
pub(super) fn register() -> Result<(), c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns a VFS that lives as long
        // as the process; ours copies it and is leaked, so it too outlives every connection.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(ptr::null());
            if inner.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs = *inner;
            vfs.pNext = ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.szOsFile = (size_of::<Shim>() as c_int) + (*inner).szOsFile;
            vfs.xOpen = Some(open);
            match ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) {
                ffi::SQLITE_OK => Ok(()),
                code => Err(code),
            }
        }
    })
}

/// What SQLite allocates for a main database or WAL file of this VFS; the wrapped VFS's own
/// file follows it in the same allocation (`size_of::<Shim>()` is a multiple of 8).
#[repr(C)]
struct Shim {
    base: ffi::sqlite3_file,
    /// On a database: its WAL file while the WAL is open. On a WAL: its database file.
    peer: *mut ffi::sqlite3_file,
    /// WAL only: appends not yet written, starting at file offset `at`.
    pending: Vec<u8>,
    at: i64,
    /// WAL only: set when a commit's last frame was written; cleared by the next lock.
    sealed: bool,
    /// WAL only: the last write was the header of a commit's last frame, so the next one,
    /// its page, completes the commit.
    commit_header_last: bool,
    /// An error a flush could not report; returned by the file's next call.
    failed: c_int,
}

// The wrapped VFS's file starts right after the shim, at SQLite's 8-byte alignment.
const _: () = assert!(size_of::<Shim>().is_multiple_of(8));

/// The shim part of one of this VFS's files. The wrapped file after it is reached through
/// [`inner`], from the same raw pointer, never through this reference.
unsafe fn shim<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Shim {
    &mut *file.cast::<Shim>()
}

unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(size_of::<Shim>()).cast()
}

unsafe fn methods<'a>(file: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    &*(*inner(file)).pMethods
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let wrapped: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
    let Some(open_inner) = (*wrapped).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    let kind = if flags & ffi::SQLITE_OPEN_WAL != 0 {
        &WAL
    } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        &MAIN
    } else {
        // Journals and temporary files are the wrapped VFS's alone, in the whole allocation.
        return open_inner(wrapped, name, file, flags, out_flags);
    };
    ptr::write(
        file.cast::<Shim>(),
        Shim {
            base: ffi::sqlite3_file {
                pMethods: ptr::null(),
            },
            peer: ptr::null_mut(),
            pending: Vec::new(),
            at: 0,
            sealed: false,
            commit_header_last: false,
            failed: ffi::SQLITE_OK,
        },
    );
    let code = open_inner(wrapped, name, inner(file), flags, out_flags);
    if code != ffi::SQLITE_OK {
        ptr::drop_in_place(file.cast::<Shim>());
        return code;
    }
    if ptr::eq(kind, &WAL) {
        link_to_database(file, name);
    }
    (*file).pMethods = kind as *const ffi::sqlite3_io_methods;
    ffi::SQLITE_OK
}

/// Lets the WAL's database find it, so the database's shared-memory calls flush it.
unsafe fn link_to_database(wal: *mut ffi::sqlite3_file, name: ffi::sqlite3_filename) {
    let database = ffi::sqlite3_database_file_object(name);
    if !database.is_null() && ptr::eq((*database).pMethods, &MAIN) {
        shim(database).peer = wal;
        shim(wal).peer = database;
    }
}

/// Writes the buffer of `shim`, the shim of `file`, if any, and returns the write's code.
unsafe fn flush(shim: &mut Shim, file: *mut ffi::sqlite3_file) -> c_int {
    if shim.pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    #[cfg(test)]
    if tests::FAIL_FLUSHES.get() {
        shim.pending.clear();
        return ffi::SQLITE_IOERR_WRITE;
    }
    let code = write_through(
        file,
        shim.pending.as_ptr().cast(),
        shim.pending.len(),
        shim.at,
    );
    shim.pending.clear();
    code
}

/// Writes `len` bytes at `data` to the wrapped file, at `offset`.
unsafe fn write_through(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    len: usize,
    offset: i64,
) -> c_int {
    #[cfg(test)]
    tests::WAL_WRITES.with(|n| n.set(n.get() + 1));
    let write = methods(file).xWrite.expect("every VFS writes");
    write(inner(file), data, len as c_int, offset)
}

/// Flushes, or returns an error left by an earlier flush that could not report it.
unsafe fn settle(shim: &mut Shim, file: *mut ffi::sqlite3_file) -> c_int {
    match flush(shim, file) {
        ffi::SQLITE_OK => std::mem::replace(&mut shim.failed, ffi::SQLITE_OK),
        code => code,
    }
}

/// Settles the WAL of a database before one of its shared-memory calls.
unsafe fn settle_wal_of(database: *mut ffi::sqlite3_file) -> c_int {
    let wal = shim(database).peer;
    if wal.is_null() {
        return ffi::SQLITE_OK;
    }
    settle(shim(wal), wal)
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize);
    let s = shim(file);
    let completes_commit = s.commit_header_last && bytes.len() != FRAME_HEADER;
    s.commit_header_last = bytes.len() == FRAME_HEADER && commit_mark(bytes);
    let continues = !s.pending.is_empty() && offset == s.at + s.pending.len() as i64;
    if !(continues && s.pending.len() + bytes.len() <= CAPACITY) {
        let code = settle(s, file);
        if code != ffi::SQLITE_OK {
            return code;
        }
        if s.sealed || bytes.len() > CAPACITY {
            s.sealed |= completes_commit;
            return write_through(file, data, bytes.len(), offset);
        }
        s.at = offset;
    }
    s.pending.extend_from_slice(bytes);
    if completes_commit {
        s.sealed = true;
        return flush(s, file);
    }
    ffi::SQLITE_OK
}

/// Whether a frame header marks the last frame of a transaction.
fn commit_mark(header: &[u8]) -> bool {
    header[4..8] != [0, 0, 0, 0]
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let s = shim(file);
    let code = flush(s, file);
    if !s.peer.is_null() {
        shim(s.peer).peer = ptr::null_mut();
    }
    let close = methods(file).xClose.expect("every VFS closes");
    let closed = close(inner(file));
    ptr::drop_in_place(file.cast::<Shim>());
    if code != ffi::SQLITE_OK {
        return code;
    }
    closed
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    match settle(shim(file), file) {
        ffi::SQLITE_OK => {
            methods(file).xRead.expect("every VFS reads")(inner(file), data, amount, offset)
        }
        code => code,
    }
}

unsafe extern "C" fn main_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    methods(file).xWrite.expect("every VFS writes")(inner(file), data, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    match settle(shim(file), file) {
        ffi::SQLITE_OK => methods(file).xTruncate.expect("every VFS truncates")(inner(file), size),
        code => code,
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    match settle(shim(file), file) {
        ffi::SQLITE_OK => methods(file).xSync.expect("every VFS syncs")(inner(file), flags),
        code => code,
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    match settle(shim(file), file) {
        ffi::SQLITE_OK => methods(file).xFileSize.expect("every VFS sizes")(inner(file), size),
        code => code,
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    methods(file).xLock.expect("every VFS locks")(inner(file), level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    methods(file).xUnlock.expect("every VFS unlocks")(inner(file), level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    methods(file)
        .xCheckReservedLock
        .expect("every VFS checks locks")(inner(file), out)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    match settle(shim(file), file) {
        ffi::SQLITE_OK => methods(file)
            .xFileControl
            .expect("every VFS has file controls")(inner(file), op, arg),
        code => code,
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    methods(file).xSectorSize.map_or(4096, |f| f(inner(file)))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    methods(file)
        .xDeviceCharacteristics
        .map_or(0, |f| f(inner(file)))
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let Some(map) = methods(file).xShmMap else {
        return ffi::SQLITE_IOERR;
    };
    match settle_wal_of(file) {
        ffi::SQLITE_OK => map(inner(file), region, size, extend, out.cast()),
        code => code,
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let Some(lock) = methods(file).xShmLock else {
        return ffi::SQLITE_IOERR;
    };
    let wal = shim(file).peer;
    if !wal.is_null() {
        let w = shim(wal);
        // A lock begins or ends a transaction: its frames are gathered again.
        w.sealed = false;
        w.commit_header_last = false;
        if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
            // An unlock must happen whatever the flush answers: SQLite does not look at the
            // answer, and a lock it believes let go would stay held. What is still buffered
            // here belongs to a transaction rolled back, which no one will read.
            let _ = flush(w, wal);
        } else {
            let code = settle(w, wal);
            if code != ffi::SQLITE_OK {
                return code;
            }
        }
    }
    lock(inner(file), offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let wal = shim(file).peer;
    if !wal.is_null() {
        let w = shim(wal);
        let code = flush(w, wal);
        if code != ffi::SQLITE_OK {
            w.failed = code;
        }
    }
    if let Some(barrier) = methods(file).xShmBarrier {
        barrier(inner(file));
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let wal = shim(file).peer;
    if !wal.is_null() {
        // As for an unlock: the shared memory is let go whatever the flush answers.
        let _ = flush(shim(wal), wal);
    }
    match methods(file).xShmUnmap {
        Some(unmap) => unmap(inner(file), delete),
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    match methods(file).xFetch {
        Some(fetch) => fetch(inner(file), offset, amount, out),
        None => {
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    match methods(file).xUnfetch {
        Some(unfetch) => unfetch(inner(file), offset, page),
        None => ffi::SQLITE_OK,
    }
}

/// The database file's methods: the wrapped VFS's, with the WAL flushed before each
/// shared-memory call.
static MAIN: ffi::sqlite3_io_methods = methods_with(main_write);

/// The WAL's methods: writes are gathered, everything else flushes first.
static WAL: ffi::sqlite3_io_methods = methods_with(wal_write);

const fn methods_with(
    write: unsafe extern "C" fn(*mut ffi::sqlite3_file, *const c_void, c_int, i64) -> c_int,
) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: 3,
        xClose: Some(close),
        xRead: Some(read),
        xWrite: Some(write),
        xTruncate: Some(truncate),
        xSync: Some(sync),
        xFileSize: Some(file_size),
        xLock: Some(lock),
        xUnlock: Some(unlock),
        xCheckReservedLock: Some(check_reserved_lock),
        xFileControl: Some(file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: Some(shm_map),
        xShmLock: Some(shm_lock),
        xShmBarrier: Some(shm_barrier),
        xShmUnmap: Some(shm_unmap),
        xFetch: Some(fetch),
        xUnfetch: Some(unfetch),
    }
}

/// The URI that opens `path` through this VFS (the connection takes URIs).
pub(super) fn uri(path: &str) -> String {
    let mut uri = String::from(if path.starts_with('/') {
        "file://"
    } else {
        "file:"
    });
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?vfs=");
    uri.push_str(NAME.to_str().expect("the name is ASCII"));
    uri
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::PathBuf;

    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use super::*;

    thread_local! {
        /// Writes to WAL files made on this thread.
        pub(super) static WAL_WRITES: Cell<u64> = const { Cell::new(0) };
        /// Makes every flush on this thread fail as a full disk would, writing nothing.
        pub(super) static FAIL_FLUSHES: Cell<bool> = const { Cell::new(false) };
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// A connection through the VFS (`shimmed`) or SQLite's own, in the store's mode.
    fn open(path: &std::path::Path, shimmed: bool) -> SqliteConnection {
        register().expect("the VFS registers");
        let text = path.to_str().unwrap();
        let url = if shimmed { uri(text) } else { text.to_owned() };
        let mut conn = SqliteConnection::establish(&url).unwrap();
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .unwrap();
        conn
    }

    /// A new file `name` in `dir` with a table `t`, and a connection to it through the VFS
    /// on which `pragmas` ran first.
    fn new_table(
        dir: &tempfile::TempDir,
        name: &str,
        pragmas: &str,
    ) -> (PathBuf, SqliteConnection) {
        let path = dir.path().join(name);
        let mut conn = open(&path, true);
        conn.batch_execute(&format!(
            "{pragmas} CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"
        ))
        .unwrap();
        (path, conn)
    }

    fn rows(conn: &mut SqliteConnection) -> i64 {
        diesel::sql_query("SELECT count(*) AS n FROM t")
            .get_result::<Count>(conn)
            .unwrap()
            .n
    }

    fn insert(conn: &mut SqliteConnection, rows: usize) -> QueryResult<()> {
        let row = "(randomblob(300))";
        let values = vec![row; rows].join(", ");
        conn.batch_execute(&format!(
            "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES {values}; COMMIT;"
        ))
    }

    #[test]
    fn each_commit_reaches_the_wal_in_one_write_and_is_read_at_once_by_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = new_table(&dir, "one.db", "");
        let mut reader = open(&path, false);
        for committed in 1..=200 {
            let before = WAL_WRITES.get();
            // Three rows of 300 bytes: more than one page now and then, so several frames.
            insert(&mut writer, 3).unwrap();
            assert_eq!(WAL_WRITES.get() - before, 1, "commit {committed}");
            assert_eq!(rows(&mut reader), committed * 3);
        }
    }

    #[test]
    fn a_transaction_larger_than_the_buffer_and_a_rolled_back_one_leave_the_database_whole() {
        let dir = tempfile::tempdir().unwrap();
        // A small cache makes SQLite spill the big transactions' pages into the WAL before
        // their commit, as frames without a commit mark.
        let (path, mut writer) = new_table(&dir, "big.db", "PRAGMA cache_size = 10;");
        let mut other = open(&path, false);
        insert(&mut writer, 2_000).unwrap();
        assert_eq!(rows(&mut other), 2_000);
        let big = vec!["(randomblob(300))"; 2_000].join(", ");
        writer
            .batch_execute(&format!(
                "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES {big}; ROLLBACK;"
            ))
            .unwrap();
        // Another writer takes the WAL's next frames, as many as were rolled back; the
        // rolled-back ones must not come back over them.
        insert(&mut other, 2_000).unwrap();
        insert(&mut writer, 5).unwrap();
        assert_eq!(rows(&mut other), 4_005);
        drop(writer);
        let integrity = diesel::sql_query("PRAGMA integrity_check")
            .load::<Integrity>(&mut other)
            .unwrap();
        assert_eq!(
            integrity
                .iter()
                .map(|r| r.integrity_check.as_str())
                .collect::<Vec<_>>(),
            ["ok"]
        );
    }

    #[derive(QueryableByName)]
    struct Integrity {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }

    #[test]
    fn a_path_with_uri_characters_opens_the_file_of_that_name() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut conn) = new_table(&dir, "odd ?name#with%25 signs.db", "");
        insert(&mut conn, 1).unwrap();
        drop(conn);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [path.file_name().unwrap()]);
        assert_eq!(rows(&mut open(&path, false)), 1);
    }

    #[test]
    fn a_rollback_whose_buffered_frames_cannot_be_written_still_lets_the_write_lock_go() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = new_table(&dir, "stuck.db", "PRAGMA cache_size = 10;");
        insert(&mut writer, 2_000).unwrap();
        // With every page back in the database file, rewriting the rows in place reads from
        // that file only and spills frames into the WAL; page 1 stays clean, so the rollback
        // reads nothing back from the WAL (a read would flush first): its unlock meets the
        // buffer, and the flush there fails.
        writer
            .batch_execute("PRAGMA wal_checkpoint(TRUNCATE); BEGIN IMMEDIATE; UPDATE t SET v = randomblob(300);")
            .unwrap();
        FAIL_FLUSHES.set(true);
        let _ = writer.batch_execute("ROLLBACK");
        FAIL_FLUSHES.set(false);
        let mut other = open(&path, false);
        other.batch_execute("PRAGMA busy_timeout = 100;").unwrap();
        insert(&mut other, 1).unwrap();
        insert(&mut writer, 1).unwrap();
        assert_eq!(rows(&mut other), 2_002);
    }

    #[test]
    fn a_failed_wal_write_fails_its_commit_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut writer) = new_table(&dir, "full.db", "");
        insert(&mut writer, 3).unwrap();
        let mut reader = open(&path, false);
        FAIL_FLUSHES.set(true);
        let failed = insert(&mut writer, 3);
        FAIL_FLUSHES.set(false);
        assert!(
            failed.is_err(),
            "the commit whose frames were not written succeeded"
        );
        let _ = writer.batch_execute("ROLLBACK");
        assert_eq!(rows(&mut reader), 3);
        insert(&mut writer, 3).unwrap();
        assert_eq!(rows(&mut reader), 6);
    }
}
