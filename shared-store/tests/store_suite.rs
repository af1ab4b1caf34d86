//! The store's test suite, written once against the backend-neutral [`Store`] and run for
//! every backend by `store_suite!` (SQLite now; Postgres adds one more invocation).

use std::sync::Arc;

use eventor_store::*;

/// A freshly created, empty store plus what a test needs to open more handles on it.
struct Fixture {
    store: Store,
    location: StoreLocation,
    /// Keeps a file-backed store's directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// Another, independent handle on the same store (a second `open`).
    async fn open_again(&self) -> Store {
        Store::open(&self.location).await.expect("second open")
    }
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Sqlite(dir.path().join("store.db"));
    let store = Store::open(&location).await.expect("open sqlite store");
    Fixture {
        store,
        location,
        _dir: Some(dir),
    }
}

/// Runs each named suite test against a fresh store of one backend.
macro_rules! store_suite {
    ($backend:ident, $fixture:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::$fixture().await).await;
                }
            )*
        }
    };
}

store_suite!(
    sqlite,
    sqlite_fixture,
    [
        begin_run_refuses_duplicate,
        batch_round_trips,
        duplicate_trigger_refused_and_batch_atomic,
        duplicate_task_refused_and_batch_atomic,
        transition_fenced_by_status,
        transition_fenced_by_attempt,
        task_pid_fenced_and_recorded,
        delays_armed_fired_and_refired,
        duplicate_delay_refused,
        rows_need_their_run,
        latest_run_ordering,
        set_run_status_stamps_end,
        two_opens_see_each_others_commits,
        clones_share_and_commit_concurrently,
        reopen_keeps_rows,
    ]
);

// ---- helpers -------------------------------------------------------------------------------

fn key(run_id: &str, recovery: i32) -> RunKey {
    RunKey {
        run_id: Arc::from(run_id),
        recovery,
    }
}

fn new_run(key: &RunKey, name: &str, started_at: Micros) -> NewRun {
    NewRun {
        key: key.clone(),
        name: name.into(),
        mode: RunMode::Restart,
        host: "host-a".into(),
        program: r#"{"steps":[]}"#.into(),
        started_at,
    }
}

async fn started(store: &Store, run_id: &str) -> RunKey {
    let run = key(run_id, 0);
    store.begin_run(new_run(&run, "flow", 1)).await.unwrap();
    run
}

fn batch(run: &RunKey, changes: Vec<Change>) -> Batch {
    Batch {
        run: run.clone(),
        changes,
    }
}

fn trigger(event: &str, sequence: &str, at: Micros) -> Change {
    Change::Trigger {
        event: event.into(),
        sequence: sequence.into(),
        at,
    }
}

fn created(step: &str, sequence: &str, status: TaskStatus, attempt: i32) -> Change {
    Change::TaskCreated {
        step: step.into(),
        sequence: sequence.into(),
        status,
        attempt,
        host: Some("host-a".into()),
        at: 10,
    }
}

fn moved(step: &str, attempt: i32, from: TaskStatus, to: TaskStatus) -> Change {
    Change::TaskTransition {
        step: step.into(),
        sequence: "1".into(),
        attempt,
        from,
        to,
        result: None,
        error: None,
        at: 20,
    }
}

fn statuses(tasks: &[TaskRecord]) -> Vec<(&str, TaskStatus)> {
    tasks.iter().map(|t| (t.step.as_str(), t.status)).collect()
}

// ---- the suite -----------------------------------------------------------------------------

async fn begin_run_refuses_duplicate(fx: Fixture) {
    let store = &fx.store;
    let run = key("R", 0);
    store.begin_run(new_run(&run, "flow", 100)).await.unwrap();
    let err = store
        .begin_run(new_run(&run, "flow", 200))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "run R recovery 0"),
        "{err:?}"
    );
    store
        .begin_run(new_run(&key("R", 1), "flow", 300))
        .await
        .unwrap();

    let history = store.run_history("R").await.unwrap();
    let recoveries: Vec<i32> = history.iter().map(|r| r.key.recovery).collect();
    assert_eq!(recoveries, [0, 1]);
    let first = &history[0];
    assert_eq!(
        first.started_at, 100,
        "the refused duplicate changed nothing"
    );
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(first.ended_at, None);
    assert_eq!(
        (first.name.as_str(), first.mode),
        ("flow", RunMode::Restart)
    );
    assert_eq!(first.program, r#"{"steps":[]}"#);
}

async fn batch_round_trips(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let mut task = created("s2", "1", TaskStatus::Ready, 1);
    if let Change::TaskCreated { host, .. } = &mut task {
        *host = None;
    }
    let changes = vec![
        trigger("start", "1", 5),
        created("s1", "1", TaskStatus::Ready, 1),
        task,
        trigger("s1", "1", 6),
    ];
    store.commit(batch(&run, changes)).await.unwrap();
    let done = Change::TaskTransition {
        step: "s1".into(),
        sequence: "1".into(),
        attempt: 1,
        from: TaskStatus::Ready,
        to: TaskStatus::Success,
        result: Some("42".into()),
        error: Some("warning".into()),
        at: 30,
    };
    store.commit(batch(&run, vec![done])).await.unwrap();

    let triggers = store.triggers(run.clone()).await.unwrap();
    let fired: Vec<_> = triggers
        .iter()
        .map(|t| (t.event.as_str(), t.sequence.as_str(), t.created_at))
        .collect();
    assert_eq!(fired, [("start", "1", 5), ("s1", "1", 6)]);
    assert!(triggers[0].id < triggers[1].id);

    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(
        statuses(&tasks),
        [("s1", TaskStatus::Success), ("s2", TaskStatus::Ready)]
    );
    let s1 = &tasks[0];
    assert_eq!((s1.sequence.as_str(), s1.attempt), ("1", 1));
    assert_eq!(s1.host.as_deref(), Some("host-a"));
    assert_eq!(s1.result.as_deref(), Some("42"));
    assert_eq!(s1.error.as_deref(), Some("warning"));
    assert_eq!((s1.created_at, s1.updated_at, s1.pid), (10, 30, None));
    assert_eq!(tasks[1].host, None);
    assert!(tasks[0].id < tasks[1].id);

    // Another recovery of the same run is a separate set of rows.
    assert!(store.tasks(key("R", 1)).await.unwrap().is_empty());
}

async fn duplicate_trigger_refused_and_batch_atomic(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    store
        .commit(batch(&run, vec![trigger("e", "1", 1)]))
        .await
        .unwrap();
    let both = vec![trigger("e", "2", 2), trigger("e", "1", 3)];
    let err = store.commit(batch(&run, both)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "trigger e[1] of run R recovery 0"),
        "{err:?}"
    );
    let triggers = store.triggers(run).await.unwrap();
    let kept: Vec<_> = triggers
        .iter()
        .map(|t| (t.sequence.as_str(), t.created_at))
        .collect();
    assert_eq!(kept, [("1", 1)], "nothing of the refused batch remains");
}

async fn duplicate_task_refused_and_batch_atomic(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let first = created("s1", "3", TaskStatus::Ready, 1);
    store.commit(batch(&run, vec![first])).await.unwrap();
    let changes = vec![
        trigger("go", "1", 1),
        created("s2", "3", TaskStatus::Ready, 1),
        created("s1", "3", TaskStatus::Active, 2),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "task s1[3] of run R recovery 0"),
        "{err:?}"
    );
    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(statuses(&tasks), [("s1", TaskStatus::Ready)]);
    assert_eq!(tasks[0].attempt, 1);
    assert!(store.triggers(run).await.unwrap().is_empty());
}

async fn transition_fenced_by_status(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let task = created("s1", "1", TaskStatus::Ready, 1);
    store.commit(batch(&run, vec![task])).await.unwrap();
    let changes = vec![
        trigger("x", "1", 1),
        moved("s1", 1, TaskStatus::Active, TaskStatus::Success),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Fenced { step, sequence, attempt: 1, expected: TaskStatus::Active }
                if step == "s1" && sequence == "1"
        ),
        "{err:?}"
    );
    assert!(store.triggers(run.clone()).await.unwrap().is_empty());
    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(statuses(&tasks), [("s1", TaskStatus::Ready)]);

    // The right `from` goes through, and then the same move is fenced: it already happened.
    let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
    store
        .commit(batch(&run, vec![start.clone()]))
        .await
        .unwrap();
    let again = store.commit(batch(&run, vec![start])).await.unwrap_err();
    assert!(matches!(again, StoreError::Fenced { .. }), "{again:?}");
}

async fn transition_fenced_by_attempt(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let changes = vec![
        created("s1", "1", TaskStatus::Ready, 2),
        created("s2", "1", TaskStatus::Ready, 1),
    ];
    store.commit(batch(&run, changes)).await.unwrap();
    let changes = vec![
        moved("s2", 1, TaskStatus::Ready, TaskStatus::Active),
        moved("s1", 1, TaskStatus::Ready, TaskStatus::Active),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { step, attempt: 1, .. } if step == "s1"),
        "{err:?}"
    );
    let tasks = store.tasks(run).await.unwrap();
    assert_eq!(
        statuses(&tasks),
        [("s1", TaskStatus::Ready), ("s2", TaskStatus::Ready)],
        "the good transition of the batch was rolled back too"
    );
}

async fn task_pid_fenced_and_recorded(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let task = created("s1", "1", TaskStatus::Ready, 1);
    store.commit(batch(&run, vec![task])).await.unwrap();
    let pid = |attempt, pid| Change::TaskPid {
        step: "s1".into(),
        sequence: "1".into(),
        attempt,
        pid,
    };

    let err = store
        .commit(batch(&run, vec![pid(1, 77)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                expected: TaskStatus::Active,
                ..
            }
        ),
        "a ready task has no process: {err:?}"
    );
    let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
    store
        .commit(batch(&run, vec![start, pid(1, 4242)]))
        .await
        .unwrap();
    let err = store
        .commit(batch(&run, vec![pid(2, 99)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { attempt: 2, .. }),
        "{err:?}"
    );

    let tasks = store.tasks(run).await.unwrap();
    assert_eq!(tasks[0].status, TaskStatus::Active);
    assert_eq!(tasks[0].pid, Some(4242));
}

async fn delays_armed_fired_and_refired(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let arm = |assoc, sequence: &str, due_at| Change::DelayArmed {
        assoc,
        sequence: sequence.into(),
        due_at,
        at: 7,
    };
    let fire = |assoc, sequence: &str| Change::DelayFired {
        assoc,
        sequence: sequence.into(),
    };
    let armed = vec![arm(2, "1", 1_000), arm(5, "1", 2_000)];
    store.commit(batch(&run, armed)).await.unwrap();
    store.commit(batch(&run, vec![fire(2, "1")])).await.unwrap();

    let delays = store.delays(run.clone()).await.unwrap();
    let seen: Vec<_> = delays
        .iter()
        .map(|d| {
            (
                d.assoc,
                d.sequence.as_str(),
                d.due_at,
                d.fired,
                d.created_at,
            )
        })
        .collect();
    assert_eq!(seen, [(2, "1", 1_000, true, 7), (5, "1", 2_000, false, 7)]);

    // Firing twice is refused, and takes the rest of its batch down with it.
    let twice = vec![fire(5, "1"), fire(2, "1")];
    let err = store.commit(batch(&run, twice)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::DelayFenced { assoc: 2, sequence } if sequence == "1"),
        "{err:?}"
    );
    let err = store
        .commit(batch(&run, vec![fire(9, "1")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DelayFenced { assoc: 9, .. }),
        "{err:?}"
    );
    let fired: Vec<bool> = store
        .delays(run)
        .await
        .unwrap()
        .iter()
        .map(|d| d.fired)
        .collect();
    assert_eq!(fired, [true, false]);
}

async fn duplicate_delay_refused(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let arm = Change::DelayArmed {
        assoc: 3,
        sequence: "4".into(),
        due_at: 1,
        at: 1,
    };
    store.commit(batch(&run, vec![arm.clone()])).await.unwrap();
    let err = store.commit(batch(&run, vec![arm])).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "delay 3[4] of run R recovery 0"),
        "{err:?}"
    );
    assert_eq!(store.delays(run).await.unwrap().len(), 1);
}

async fn rows_need_their_run(fx: Fixture) {
    let store = &fx.store;
    let ghost = key("ghost", 0);
    let err = store
        .commit(batch(&ghost, vec![trigger("e", "1", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun(_)), "{err:?}");
    let err = store
        .set_run_status(ghost, RunStatus::Success, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NoSuchRun(which) if which == "ghost recovery 0"),
        "{err:?}"
    );
}

async fn latest_run_ordering(fx: Fixture) {
    let store = &fx.store;
    assert_eq!(store.latest_run("flow").await.unwrap(), None);
    let runs = [
        (key("A", 0), "flow", 100),
        (key("B", 0), "flow", 300),
        (key("B", 1), "flow", 300),
        (key("C", 0), "flow", 200),
        (key("D", 0), "other", 900),
    ];
    for (run, name, started_at) in &runs {
        store
            .begin_run(new_run(run, name, *started_at))
            .await
            .unwrap();
    }
    let latest = store.latest_run("flow").await.unwrap().unwrap();
    assert_eq!(latest.key, key("B", 1), "same start: higher recovery wins");
    let other = store.latest_run("other").await.unwrap().unwrap();
    assert_eq!(other.key, key("D", 0));

    store
        .begin_run(new_run(&key("E", 0), "flow", 400))
        .await
        .unwrap();
    let latest = store.latest_run("flow").await.unwrap().unwrap();
    assert_eq!(
        latest.key,
        key("E", 0),
        "a later start wins over a recovery"
    );
}

async fn set_run_status_stamps_end(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    store
        .set_run_status(run.clone(), RunStatus::Incomplete, 50)
        .await
        .unwrap();
    let record = &store.run_history("R").await.unwrap()[0];
    assert_eq!(
        (record.status, record.ended_at),
        (RunStatus::Incomplete, Some(50))
    );

    store
        .set_run_status(run.clone(), RunStatus::Running, 60)
        .await
        .unwrap();
    let record = &store.run_history("R").await.unwrap()[0];
    assert_eq!(
        (record.status, record.ended_at),
        (RunStatus::Running, None),
        "a running run has not ended"
    );

    store
        .set_run_status(run, RunStatus::Success, 70)
        .await
        .unwrap();
    let record = &store.run_history("R").await.unwrap()[0];
    assert_eq!(
        (record.status, record.ended_at),
        (RunStatus::Success, Some(70))
    );
}

async fn two_opens_see_each_others_commits(fx: Fixture) {
    let first = &fx.store;
    let second = fx.open_again().await;
    let run = started(first, "R").await;
    let task = created("s1", "1", TaskStatus::Ready, 1);
    first.commit(batch(&run, vec![task])).await.unwrap();
    assert_eq!(second.tasks(run.clone()).await.unwrap().len(), 1);

    let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
    second
        .commit(batch(&run, vec![start.clone()]))
        .await
        .unwrap();
    let tasks = first.tasks(run.clone()).await.unwrap();
    assert_eq!(statuses(&tasks), [("s1", TaskStatus::Active)]);

    // The fence holds across handles: the second writer of the same move loses.
    let err = first.commit(batch(&run, vec![start])).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
}

async fn clones_share_and_commit_concurrently(fx: Fixture) {
    let run = started(&fx.store, "R").await;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = fx.store.clone();
            let run = run.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let step = format!("w{i}");
                    let task = created(&step, &n.to_string(), TaskStatus::Ready, 1);
                    store.commit(batch(&run, vec![task])).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let Fixture { store, .. } = fx;
    let survivor = store.clone();
    drop(store);
    assert_eq!(survivor.tasks(run).await.unwrap().len(), 200);
}

async fn reopen_keeps_rows(fx: Fixture) {
    let Fixture {
        store,
        location,
        _dir,
        ..
    } = fx;
    let run = started(&store, "R").await;
    let changes = vec![
        trigger("e", "1", 1),
        created("s1", "1", TaskStatus::Ready, 1),
    ];
    store.commit(batch(&run, changes)).await.unwrap();
    drop(store);

    for _ in 0..2 {
        let store = Store::open(&location).await.expect("reopen");
        assert_eq!(store.run_history("R").await.unwrap().len(), 1);
        assert_eq!(store.tasks(run.clone()).await.unwrap().len(), 1);
        assert_eq!(store.triggers(run.clone()).await.unwrap().len(), 1);
    }
}

// ---- SQLite only ---------------------------------------------------------------------------

mod sqlite_only {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use std::path::Path;

    fn raw(path: &Path) -> SqliteConnection {
        SqliteConnection::establish(path.to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn open_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&StoreLocation::Sqlite(path)).await.err();
        assert!(matches!(err, Some(StoreError::Open { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn open_does_not_create_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("store.db");
        let err = Store::open(&StoreLocation::Sqlite(path)).await.err();
        assert!(matches!(err, Some(StoreError::Open { .. })), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("race.db"));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let location = location.clone();
                tokio::spawn(async move { Store::open(&location).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().expect("every racing open succeeds"));
        }
        started(&stores[0], "R").await;
        assert_eq!(stores[3].run_history("R").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn full_synchronous_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.db");
        let options = SqliteOptions {
            synchronous: Synchronous::Full,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).await.unwrap();
        store
            .begin_run(new_run(&key("R", 0), "flow", 1))
            .await
            .unwrap();

        #[derive(QueryableByName)]
        struct Mode {
            #[diesel(sql_type = diesel::sql_types::Text)]
            journal_mode: String,
        }
        let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(&mut raw(&path))
            .unwrap();
        assert_eq!(mode.journal_mode, "wal");
    }

    #[tokio::test]
    async fn last_handle_dropped_closes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap();
        let clone = store.clone();
        started(&store, "R").await;
        drop(store);
        let wal = dir.path().join("store.db-wal");
        assert!(wal.exists(), "a live handle keeps the connection open");
        drop(clone);
        // SQLite checkpoints and removes the WAL when its last connection closes.
        assert!(!wal.exists(), "the owner thread closed the connection");
    }

    #[tokio::test]
    async fn unknown_text_in_the_file_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap();
        let run = started(&store, "R").await;
        let task = created("s1", "1", TaskStatus::Ready, 1);
        store.commit(batch(&run, vec![task])).await.unwrap();
        let mut raw = raw(&path);
        let mut tamper_then_read_tasks = |sql: &str| {
            raw.batch_execute(sql).unwrap();
            let store = store.clone();
            let run = run.clone();
            async move { store.tasks(run).await }
        };

        let err = tamper_then_read_tasks("UPDATE tasks SET status = 'exploded'")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let sql = "UPDATE tasks SET status = 'ready', step = X'FF00'";
        let err = tamper_then_read_tasks(sql).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(_)),
            "a blob is not text: {err:?}"
        );
        // SQLite converts a text where a number belongs; reading it must merely not panic.
        let sql = "UPDATE tasks SET step = 's1', attempt = 'x', pid = 99999999999999999999";
        tamper_then_read_tasks(sql).await.unwrap();

        raw.batch_execute("UPDATE runs SET mode = 'sideways'")
            .unwrap();
        let err = store.latest_run("flow").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
}
