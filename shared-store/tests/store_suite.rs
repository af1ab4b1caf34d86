//! The store's test suite, written once against the backend-neutral [`Store`] and run for
//! every backend by `store_suite!`: SQLite always, Postgres when `EVENTOR_PG_URL` names a
//! server (each test in a fresh schema, dropped afterwards; see `common/mod.rs`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::PgSchema;
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

/// What to tidy once a test has passed.
enum Cleanup {
    Nothing,
    DropSchema(PgSchema),
}

impl Cleanup {
    async fn run(self) {
        if let Cleanup::DropSchema(schema) = self {
            schema.drop_now().await;
        }
    }
}

async fn sqlite_fixture() -> Option<(Fixture, Cleanup)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Sqlite(dir.path().join("store.db"));
    let store = Store::open(&location).await.expect("open sqlite store");
    let fixture = Fixture {
        store,
        location,
        _dir: Some(dir),
    };
    Some((fixture, Cleanup::Nothing))
}

/// A store in a fresh schema of the `EVENTOR_PG_URL` server; `None` skips the test.
async fn postgres_fixture() -> Option<(Fixture, Cleanup)> {
    let schema = PgSchema::fresh(&common::pg_url()?);
    let location = schema.location.clone();
    let store = Store::open(&location).await.expect("open postgres store");
    let fixture = Fixture {
        store,
        location,
        _dir: None,
    };
    Some((fixture, Cleanup::DropSchema(schema)))
}

/// Runs each named suite test against a fresh store of one backend.
macro_rules! store_suite {
    ($backend:ident, $fixture:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some((fixture, cleanup)) = super::$fixture().await else {
                        return;
                    };
                    super::$test(fixture).await;
                    cleanup.run().await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($backend:ident => $fixture:ident),* $(,)?) => {
        $(
            store_suite!(
                $backend,
                $fixture,
                [
                    begin_run_refuses_duplicate,
                    batch_round_trips,
                    duplicate_trigger_refused_and_batch_atomic,
                    duplicate_task_refused_and_batch_atomic,
                    transition_fenced_by_status,
                    transition_fenced_by_attempt,
                    task_pid_fenced_and_recorded,
                    task_host_fenced_and_kept,
                    task_retry_starts_a_new_attempt,
                    a_failed_end_records_its_class_until_the_next_end,
                    a_task_lives_its_whole_life_in_one_batch,
                    first_failure_in_batch_order_wins,
                    delays_armed_fired_and_refired,
                    duplicate_delay_refused,
                    retries_scheduled_taken_and_retaken,
                    duplicate_retry_refused,
                    rows_need_their_run,
                    latest_run_ordering,
                    runs_listed_newest_first_with_task_counts,
                    set_run_status_stamps_end,
                    two_opens_see_each_others_commits,
                    a_trigger_from_another_writer_is_above_every_row_the_run_has,
                    clones_share_and_commit_concurrently,
                    reopen_keeps_rows,
                    run_lock_refuses_a_second_holder,
                    empty_batch_is_a_no_op,
                    delete_run_removes_exactly_its_run,
                    prune_deletes_old_free_runs_of_the_flow,
                    shared_pool_grants_all_or_nothing_across_handles,
                    shared_pool_grant_goes_back_with_the_task_end,
                    shared_pool_declared_once,
                    requests_are_stored_in_order_and_wake_the_run,
                    run_params_round_trip_and_an_override_replaces_them,
                    host_health_is_replaced_per_host_needs_its_run_and_goes_with_it,
                ]
            );
        )*
    };
}

suite!(sqlite => sqlite_fixture, postgres => postgres_fixture);

store_suite!(
    sqlite_previous_schema,
    sqlite_previous_fixture,
    [
        a_store_of_the_previous_schema_keeps_its_retries,
        a_run_of_a_schema_before_params_reads_with_none_and_takes_them,
        a_task_of_the_previous_schema_gets_a_failure_class_after_the_migration,
        rows_of_the_previous_schema_keep_their_order_and_new_ones_follow
    ]
);
store_suite!(
    postgres_previous_schema,
    postgres_previous_fixture,
    [
        a_store_of_the_previous_schema_keeps_its_retries,
        a_run_of_a_schema_before_params_reads_with_none_and_takes_them,
        a_task_of_the_previous_schema_gets_a_failure_class_after_the_migration,
        rows_of_the_previous_schema_keep_their_order_and_new_ones_follow
    ]
);

/// The schema before retries had rows of their own: the store's first two migrations, as
/// diesel would have recorded them.
const PREVIOUS_SCHEMA: [(&str, &str, &str); 2] = [
    (
        "20250101000000",
        include_str!("../migrations/sqlite/2025-01-01-000000_create_store/up.sql"),
        include_str!("../migrations/postgres/2025-01-01-000000_create_store/up.sql"),
    ),
    (
        "20261201000000",
        include_str!("../migrations/sqlite/2026-12-01-000000_shared_pools/up.sql"),
        include_str!("../migrations/postgres/2026-12-01-000000_shared_pools/up.sql"),
    ),
];

/// What the previous schema held of run R: a task `ready` for its first retry, whose retry
/// was a delay row (association `-(step + 1)` = step 0, sequence `s` + U+001F + `1`, not
/// fired), the taken retry of step 1, and a true delay of association 0.
fn previous_rows() -> String {
    let mark = '\u{1f}';
    format!(
        "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (\
             version VARCHAR(50) PRIMARY KEY NOT NULL, \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);\n\
         INSERT INTO __diesel_schema_migrations (version) VALUES ('{}'), ('{}');\n\
         INSERT INTO runs (run_id, recovery, name, mode, status, host, program, started_at) \
             VALUES ('R', 0, 'flow', 'restart', 'running', 'h', '{{}}', 1);\n\
         INSERT INTO tasks (run_id, recovery, step, sequence, status, attempt, created_at, \
             updated_at) VALUES ('R', 0, 'flaky', 's', 'ready', 2, 1, 2);\n\
         INSERT INTO triggers (run_id, recovery, event, sequence, created_at) \
             VALUES ('R', 0, 'go', 's', 1);\n\
         INSERT INTO delays (run_id, recovery, assoc, sequence, due_at, fired, created_at) \
             VALUES ('R', 0, -2, 's{mark}1', 3, TRUE, 1), \
                    ('R', 0, -1, 's{mark}1', 5, FALSE, 2), \
                    ('R', 0, 0, 's', 7, FALSE, 2);\n",
        PREVIOUS_SCHEMA[0].0, PREVIOUS_SCHEMA[1].0
    )
}

/// An SQLite store written by the previous schema, then opened by this build.
async fn sqlite_previous_fixture() -> Option<(Fixture, Cleanup)> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).expect("sqlite");
    for (_, sqlite, _) in PREVIOUS_SCHEMA {
        conn.batch_execute(sqlite).expect("previous schema");
    }
    conn.batch_execute(&previous_rows()).expect("previous rows");
    drop(conn);
    let location = StoreLocation::Sqlite(path);
    let store = Store::open(&location)
        .await
        .expect("open the previous store");
    let fixture = Fixture {
        store,
        location,
        _dir: Some(dir),
    };
    Some((fixture, Cleanup::Nothing))
}

/// A Postgres schema written by the previous schema, then opened by this build.
async fn postgres_previous_fixture() -> Option<(Fixture, Cleanup)> {
    let url = common::pg_url()?;
    let schema = PgSchema::fresh(&url);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);
    let name = &schema.name;
    let enter = format!("CREATE SCHEMA \"{name}\"; SET search_path TO \"{name}\";");
    client.batch_execute(&enter).await.expect("schema");
    for (_, _, postgres) in PREVIOUS_SCHEMA {
        client
            .batch_execute(postgres)
            .await
            .expect("previous schema");
    }
    client
        .batch_execute(&previous_rows())
        .await
        .expect("previous rows");
    drop(client);
    let _ = driver.await;
    let location = schema.location.clone();
    let store = Store::open(&location)
        .await
        .expect("open the previous store");
    let fixture = Fixture {
        store,
        location,
        _dir: None,
    };
    Some((fixture, Cleanup::DropSchema(schema)))
}

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
        params: Default::default(),
        env_from_prime: Vec::new(),
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
        writer: Writer::Coordinator,
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
        failure_class: None,
        at: 20,
    }
}

fn pid(step: &str, attempt: i32, pid: i64) -> Change {
    Change::TaskPid {
        step: step.into(),
        sequence: "1".into(),
        attempt,
        pid,
    }
}

fn retry(step: &str, attempt: i32, new_attempt: i32) -> Change {
    Change::TaskRetry {
        step: step.into(),
        sequence: "1".into(),
        from: TaskStatus::Active,
        attempt,
        new_attempt,
        at: 25,
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
        failure_class: None,
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
    let after = |id| store.triggers_after(run.clone(), id);
    let newer = after(triggers[0].id).await.unwrap();
    assert_eq!(
        newer.iter().map(|t| t.id).collect::<Vec<_>>(),
        [triggers[1].id]
    );
    assert!(after(triggers[1].id).await.unwrap().is_empty());

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

/// The host an agent writes with a task's end: fenced like a pid, kept through the end that
/// follows it in the same batch (Postgres folds both into one row update), and not cleared
/// by a retry (a retried task shows where it last ran).
async fn task_host_fenced_and_kept(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let task = created("s1", "1", TaskStatus::Ready, 1);
    store.commit(batch(&run, vec![task])).await.unwrap();
    let host = |attempt, host: &str| Change::TaskHost {
        step: "s1".into(),
        sequence: "1".into(),
        attempt,
        host: host.into(),
    };
    let err = store
        .commit(batch(&run, vec![host(1, "node1")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { .. }),
        "not active: {err:?}"
    );

    let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
    store.commit(batch(&run, vec![start])).await.unwrap();
    let end = moved("s1", 1, TaskStatus::Active, TaskStatus::Failure);
    store
        .commit(batch(&run, vec![host(1, "node2"), end.clone()]))
        .await
        .unwrap();
    let err = store
        .commit(batch(&run, vec![host(1, "node3"), end]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "ended: {err:?}");
    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].host.as_deref()),
        (TaskStatus::Failure, Some("node2"))
    );

    let again = Change::TaskRetry {
        step: "s1".into(),
        sequence: "1".into(),
        from: TaskStatus::Failure,
        attempt: 1,
        new_attempt: 2,
        at: 30,
    };
    store.commit(batch(&run, vec![again])).await.unwrap();
    let tasks = store.tasks(run).await.unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].attempt, tasks[0].host.as_deref()),
        (TaskStatus::Ready, 2, Some("node2"))
    );
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

fn schedule(step: i32, number: i32, due_at: Micros) -> Change {
    Change::RetryScheduled {
        step,
        sequence: "1".into(),
        number,
        due_at,
        at: 7,
    }
}

fn take(step: i32, sequence: &str, number: i32) -> Change {
    Change::RetryTaken {
        step,
        sequence: sequence.into(),
        number,
    }
}

/// `(step, sequence, number, due_at, taken)` of every retry row of `run`.
async fn retry_rows(store: &Store, run: &RunKey) -> Vec<(i32, String, i32, Micros, bool)> {
    let rows = store.retries(run.clone()).await.unwrap();
    let row = |r: RetryRecord| (r.step, r.sequence, r.number, r.due_at, r.taken);
    rows.into_iter().map(row).collect()
}

async fn retries_scheduled_taken_and_retaken(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let scheduled = vec![schedule(2, 1, 1_000), schedule(2, 2, 2_000)];
    store.commit(batch(&run, scheduled)).await.unwrap();
    store
        .commit(batch(&run, vec![take(2, "1", 1)]))
        .await
        .unwrap();
    // Scheduled and taken in one batch: the row is born taken.
    let at_once = vec![schedule(4, 1, 3_000), take(4, "1", 1)];
    store.commit(batch(&run, at_once)).await.unwrap();
    assert_eq!(
        retry_rows(store, &run).await,
        [
            (2, "1".into(), 1, 1_000, true),
            (2, "1".into(), 2, 2_000, false),
            (4, "1".into(), 1, 3_000, true),
        ]
    );
    assert!(store.delays(run.clone()).await.unwrap().is_empty());

    // Taking twice is refused, and takes the rest of its batch down with it.
    let twice = vec![take(2, "1", 2), take(2, "1", 1)];
    let err = store.commit(batch(&run, twice)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::RetryFenced { step: 2, number: 1, sequence } if sequence == "1"),
        "{err:?}"
    );
    let never = store.commit(batch(&run, vec![take(9, "1", 1)])).await;
    assert!(
        matches!(never, Err(StoreError::RetryFenced { step: 9, .. })),
        "{never:?}"
    );
    let taken: Vec<bool> = retry_rows(store, &run).await.iter().map(|r| r.4).collect();
    assert_eq!(taken, [true, false, true]);
}

async fn duplicate_retry_refused(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    store
        .commit(batch(&run, vec![schedule(3, 1, 1)]))
        .await
        .unwrap();
    let err = store
        .commit(batch(&run, vec![schedule(3, 2, 1), schedule(3, 1, 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "retry 1 of 3[1] of run R recovery 0"),
        "{err:?}"
    );
    assert_eq!(retry_rows(store, &run).await.len(), 1);
}

/// The previous schema's retry delay rows become retry rows (the delay of an association
/// stays a delay), and the pending one is taken like any retry.
async fn a_store_of_the_previous_schema_keeps_its_retries(fx: Fixture) {
    let store = &fx.store;
    let run = key("R", 0);
    assert_eq!(
        retry_rows(store, &run).await,
        [(1, "s".into(), 1, 3, true), (0, "s".into(), 1, 5, false)]
    );
    let delays = store.delays(run.clone()).await.unwrap();
    let delays: Vec<_> = delays
        .iter()
        .map(|d| (d.assoc, d.sequence.as_str()))
        .collect();
    assert_eq!(delays, [(0, "s")]);
    store
        .commit(batch(&run, vec![take(0, "s", 1)]))
        .await
        .unwrap();
    let again = store.commit(batch(&run, vec![take(0, "s", 1)])).await;
    assert!(
        matches!(again, Err(StoreError::RetryFenced { .. })),
        "{again:?}"
    );
    // Deleting the run takes its retry rows with it.
    assert_eq!(store.delete_run("R").await.unwrap(), 1);
    assert!(retry_rows(store, &run).await.is_empty());
}

/// A host's health row is replaced by the next one of that host (the others stay), is
/// refused for a run that is not there, and is deleted with its run.
async fn host_health_is_replaced_per_host_needs_its_run_and_goes_with_it(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let health = |host: &str, state, until, failures: &[(Micros, &str)]| HostHealthRecord {
        host: host.to_string(),
        state,
        until,
        reason: until.map(|_| "3 host failures within 10m".to_string()),
        failures: failures
            .iter()
            .map(|(at, why)| (*at, why.to_string()))
            .collect(),
        updated_at: 5,
    };
    let lost = [(1, "lost: link cut"), (2, "lost: link\ncut again")];
    store
        .set_host_health(run.clone(), health("b", HostState::Up, None, &[]))
        .await
        .unwrap();
    store
        .set_host_health(run.clone(), health("a", HostState::Away, None, &lost[..1]))
        .await
        .unwrap();
    let quarantined = health("a", HostState::Quarantined, Some(90), &lost);
    store
        .set_host_health(run.clone(), quarantined.clone())
        .await
        .unwrap();
    let rows = store.host_health(run.clone()).await.unwrap();
    let hosts: Vec<(&str, HostState)> = rows.iter().map(|h| (h.host.as_str(), h.state)).collect();
    assert_eq!(hosts, [("a", HostState::Quarantined), ("b", HostState::Up)]);
    assert_eq!(rows[0].until, Some(90));
    let reasons: Vec<&str> = rows[0].failures.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(reasons, ["lost: link cut", "lost: link cut again"]);
    let elsewhere = store.set_host_health(key("S", 0), quarantined).await;
    assert!(
        matches!(elsewhere, Err(StoreError::NoSuchRun(_))),
        "{elsewhere:?}"
    );
    assert_eq!(store.delete_run("R").await.unwrap(), 1);
    assert!(store.host_health(run).await.unwrap().is_empty());
}

/// A run stored before runs had parameters reads with none (not an empty set) and no
/// variables from the prime; a continue's override then records them on its row.
async fn a_run_of_a_schema_before_params_reads_with_none_and_takes_them(fx: Fixture) {
    let store = &fx.store;
    let run = store.run_history("R").await.unwrap().remove(0);
    assert_eq!(
        (run.params, run.env_from_prime),
        (None, Vec::<String>::new())
    );
    let params = [("RUN_DATE".to_string(), "2026-12-05".to_string())].into();
    store
        .set_run_params(run.key.clone(), &params)
        .await
        .unwrap();
    let run = store.run_history("R").await.unwrap().remove(0);
    assert_eq!(run.params, Some(params));
}

async fn run_params_round_trip_and_an_override_replaces_them(fx: Fixture) {
    let store = &fx.store;
    let run = key("P", 0);
    let mut row = new_run(&run, "flow", 1);
    row.params = [
        ("A".to_string(), "1".to_string()),
        ("B".to_string(), "x y".to_string()),
    ]
    .into();
    row.env_from_prime = vec!["DB_PASSWORD".to_string()];
    store.begin_run(row.clone()).await.unwrap();
    let stored = store.run_history("P").await.unwrap().remove(0);
    assert_eq!(stored.params.as_ref(), Some(&row.params));
    assert_eq!(stored.env_from_prime, ["DB_PASSWORD"]);
    let replaced = [("A".to_string(), "2".to_string())].into();
    store.set_run_params(run.clone(), &replaced).await.unwrap();
    let stored = store.run_history("P").await.unwrap().remove(0);
    assert_eq!(
        stored.params,
        Some(replaced),
        "the new values replace the stored ones"
    );
    let missing = store
        .set_run_params(key("nosuch", 0), &BTreeMap::new())
        .await;
    assert!(
        missing.is_err(),
        "a run that is not there is not updated: {missing:?}"
    );
}

/// A transition of `step`'s task to `to`, with a failure class.
fn ended(step: &str, attempt: i32, to: TaskStatus, class: Option<&str>) -> Change {
    classed(moved(step, attempt, TaskStatus::Active, to), "1", class)
}

/// `change`, a transition, in `sequence` with `class` as its failure class.
fn classed(mut change: Change, in_sequence: &str, class: Option<&str>) -> Change {
    if let Change::TaskTransition {
        sequence,
        failure_class,
        ..
    } = &mut change
    {
        *sequence = in_sequence.into();
        *failure_class = class.map(Arc::from);
    }
    change
}

/// The classes of the run's tasks, by step.
async fn classes(store: &Store, run: &RunKey) -> Vec<(String, i32, Option<String>)> {
    let tasks = store.tasks(run.clone()).await.unwrap();
    tasks
        .into_iter()
        .map(|t| (t.step, t.attempt, t.failure_class))
        .collect()
}

/// A failed end's class is stored with it, whether the task was created in the same batch
/// (folded into the insert on Postgres) or before (a fenced update); it stays while the
/// retry waits, and the next transition replaces it, as it does the error (a success has
/// none).
async fn a_failed_end_records_its_class_until_the_next_end(fx: Fixture) {
    use TaskStatus::*;
    let store = &fx.store;
    let run = started(store, "R").await;
    let whole_life = vec![
        created("a", "1", Ready, 1),
        moved("a", 1, Ready, Active),
        ended("a", 1, Failure, Some("exit:3")),
        created("b", "1", Active, 1),
    ];
    store.commit(batch(&run, whole_life)).await.unwrap();
    let b_fails = ended("b", 1, Failure, Some("signal:SIGKILL"));
    store.commit(batch(&run, vec![b_fails])).await.unwrap();
    assert_eq!(
        classes(store, &run).await,
        [
            ("a".into(), 1, Some("exit:3".into())),
            ("b".into(), 1, Some("signal:SIGKILL".into()))
        ]
    );
    let retried = Change::TaskRetry {
        step: "b".into(),
        sequence: "1".into(),
        from: Failure,
        attempt: 1,
        new_attempt: 2,
        at: 25,
    };
    store.commit(batch(&run, vec![retried])).await.unwrap();
    let b = || async { classes(store, &run).await.remove(1) };
    assert_eq!(b().await, ("b".into(), 2, Some("signal:SIGKILL".into())));
    let b_runs_and_succeeds = vec![moved("b", 2, Ready, Active), ended("b", 2, Success, None)];
    store
        .commit(batch(&run, b_runs_and_succeeds))
        .await
        .unwrap();
    assert_eq!(b().await, ("b".into(), 2, None));
}

/// A task stored before the column has no class, and its next end records one.
async fn a_task_of_the_previous_schema_gets_a_failure_class_after_the_migration(fx: Fixture) {
    use TaskStatus::*;
    let store = &fx.store;
    let run = key("R", 0);
    assert_eq!(classes(store, &run).await, [("flaky".into(), 2, None)]);
    let flaky = |from, to, class| classed(moved("flaky", 2, from, to), "s", class);
    let changes = vec![
        flaky(Ready, Active, None),
        flaky(Active, Failure, Some("timeout")),
    ];
    store.commit(batch(&run, changes)).await.unwrap();
    assert_eq!(
        classes(store, &run).await,
        [("flaky".into(), 2, Some("timeout".into()))]
    );
}

/// A task and a trigger stored before tasks and triggers were keyed by their names (SQLite's
/// row tables) keep their ids; rows written after the migration are numbered after them.
async fn rows_of_the_previous_schema_keep_their_order_and_new_ones_follow(fx: Fixture) {
    let store = &fx.store;
    let run = key("R", 0);
    let before = store.triggers(run.clone()).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(
        (before[0].event.as_str(), before[0].sequence.as_str()),
        ("go", "s")
    );
    let old_task = store.tasks(run.clone()).await.unwrap()[0].id;
    let new_task = Change::TaskCreated {
        step: "later".into(),
        sequence: "s".into(),
        status: TaskStatus::Ready,
        attempt: 1,
        host: None,
        at: 9,
    };
    let changes = vec![trigger("next", "s", 9), new_task];
    store.commit(batch(&run, changes)).await.unwrap();
    let triggers = store.triggers(run.clone()).await.unwrap();
    let events: Vec<_> = triggers.iter().map(|t| t.event.as_str()).collect();
    assert_eq!(events, ["go", "next"]);
    assert!(triggers[1].id > triggers[0].id.max(old_task));
    let tasks = store.tasks(run.clone()).await.unwrap();
    let steps: Vec<_> = tasks.iter().map(|t| t.step.as_str()).collect();
    assert_eq!(steps, ["flaky", "later"]);
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

async fn runs_listed_newest_first_with_task_counts(fx: Fixture) {
    let store = &fx.store;
    assert!(store.runs(None).await.unwrap().is_empty());
    for (run, name, started_at) in [
        (key("A", 0), "flow", 100),
        (key("B", 0), "flow", 300),
        (key("B", 1), "flow", 300),
        (key("D", 0), "other", 200),
    ] {
        store
            .begin_run(new_run(&run, name, started_at))
            .await
            .unwrap();
    }
    let ids = |runs: Vec<RunRecord>| -> Vec<RunKey> { runs.into_iter().map(|r| r.key).collect() };
    let all = ids(store.runs(None).await.unwrap());
    assert_eq!(all, [key("B", 1), key("B", 0), key("D", 0), key("A", 0)]);
    let flow = ids(store.runs(Some("flow")).await.unwrap());
    assert_eq!(flow, [key("B", 1), key("B", 0), key("A", 0)]);

    let a = key("A", 0);
    let changes = vec![
        created("s1", "1", TaskStatus::Ready, 1),
        created("s1", "2", TaskStatus::Ready, 1),
        created("s2", "1", TaskStatus::Active, 1),
    ];
    store.commit(batch(&a, changes)).await.unwrap();
    let mut counts: Vec<(RunKey, TaskStatus, i64)> = store
        .task_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.run, c.status, c.count))
        .collect();
    counts.sort_by_key(|(_, status, _)| *status);
    assert_eq!(
        counts,
        [
            (a.clone(), TaskStatus::Ready, 2),
            (a, TaskStatus::Active, 1)
        ]
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

async fn task_retry_starts_a_new_attempt(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let task = created("s1", "1", TaskStatus::Ready, 1);
    let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
    store
        .commit(batch(&run, vec![task, start, pid("s1", 1, 4242)]))
        .await
        .unwrap();
    store
        .commit(batch(&run, vec![retry("s1", 1, 2)]))
        .await
        .unwrap();
    let tasks = store.tasks(run.clone()).await.unwrap();
    let t = &tasks[0];
    assert_eq!((t.status, t.attempt, t.pid), (TaskStatus::Ready, 2, None));
    assert_eq!((t.created_at, t.updated_at), (10, 25));

    // The old attempt is gone: retrying or finishing it again is fenced.
    let err = store
        .commit(batch(&run, vec![retry("s1", 1, 3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                attempt: 1,
                expected: TaskStatus::Active,
                ..
            }
        ),
        "{err:?}"
    );
    // Retried and restarted in one batch.
    let restart = moved("s1", 2, TaskStatus::Ready, TaskStatus::Active);
    store
        .commit(batch(&run, vec![restart, retry("s1", 2, 3)]))
        .await
        .unwrap();
    let t = &store.tasks(run).await.unwrap()[0];
    assert_eq!((t.status, t.attempt), (TaskStatus::Ready, 3));
}

async fn a_task_lives_its_whole_life_in_one_batch(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let done = Change::TaskTransition {
        step: "s1".into(),
        sequence: "1".into(),
        attempt: 1,
        from: TaskStatus::Active,
        to: TaskStatus::Failure,
        result: Some("1".into()),
        error: Some("exit 1".into()),
        failure_class: None,
        at: 40,
    };
    let changes = vec![
        created("s1", "1", TaskStatus::Ready, 1),
        moved("s1", 1, TaskStatus::Ready, TaskStatus::Active),
        pid("s1", 1, 99),
        done,
        trigger("s1", "1", 41),
        created("s2", "1", TaskStatus::Active, 1),
    ];
    store.commit(batch(&run, changes)).await.unwrap();
    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(
        statuses(&tasks),
        [("s1", TaskStatus::Failure), ("s2", TaskStatus::Active)]
    );
    let s1 = &tasks[0];
    assert_eq!((s1.pid, s1.result.as_deref()), (Some(99), Some("1")));
    assert_eq!((s1.error.as_deref(), s1.updated_at), (Some("exit 1"), 40));

    // A move the batch's own history rules out is fenced, and nothing of the batch stays.
    let changes = vec![
        created("s3", "1", TaskStatus::Ready, 1),
        moved("s3", 1, TaskStatus::Active, TaskStatus::Success),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { step, expected: TaskStatus::Active, .. } if step == "s3"),
        "{err:?}"
    );
    assert_eq!(store.tasks(run).await.unwrap().len(), 2);
}

async fn first_failure_in_batch_order_wins(fx: Fixture) {
    let store = &fx.store;
    let run = started(store, "R").await;
    let setup = vec![
        created("s0", "1", TaskStatus::Ready, 1),
        trigger("e", "1", 1),
    ];
    store.commit(batch(&run, setup)).await.unwrap();

    // A fence the database checks (index 2) comes before a duplicate (index 3) and a fence
    // the batch itself decides (index 5).
    let changes = vec![
        created("s1", "1", TaskStatus::Ready, 1),
        moved("s1", 1, TaskStatus::Ready, TaskStatus::Active),
        moved("s0", 1, TaskStatus::Active, TaskStatus::Success),
        trigger("e", "1", 2),
        created("s2", "1", TaskStatus::Ready, 1),
        moved("s2", 1, TaskStatus::Active, TaskStatus::Success),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { step, .. } if step == "s0"),
        "{err:?}"
    );
    let changes = vec![
        trigger("f", "1", 2),
        trigger("e", "1", 2),
        moved("s0", 1, TaskStatus::Active, TaskStatus::Success),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what } if what == "trigger e[1] of run R recovery 0"),
        "{err:?}"
    );
    let changes = vec![
        moved("s0", 1, TaskStatus::Ready, TaskStatus::Active),
        created("s0", "1", TaskStatus::Ready, 1),
    ];
    let err = store.commit(batch(&run, changes)).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");

    let tasks = store.tasks(run.clone()).await.unwrap();
    assert_eq!(statuses(&tasks), [("s0", TaskStatus::Ready)]);
    assert_eq!(store.triggers(run).await.unwrap().len(), 1);
}

async fn run_lock_refuses_a_second_holder(fx: Fixture) {
    let first = &fx.store;
    let second = fx.open_again().await;
    let guard = first.lock_run("R").await.unwrap();
    assert_eq!(guard.run_id(), "R");
    let err = second.lock_run("R").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::RunLocked { run_id } if run_id == "R"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "run R is already being run by another coordinator"
    );
    let err = first.lock_run("R").await.unwrap_err();
    assert!(
        matches!(err, StoreError::RunLocked { .. }),
        "not even twice by one store"
    );
    let other = second.lock_run("other run").await.unwrap();
    // Any store handle sees who holds what, its own runs included.
    for store in [first, &second] {
        assert!(store.run_held("R").await.unwrap());
        assert!(!store.run_held("nobody's").await.unwrap());
    }

    // Dropping the guard frees the run (on Postgres once the server notices, soon after).
    drop(guard);
    let taken = eventually(|| second.lock_run("R")).await;
    taken.release().await;
    assert!(!first.run_held("R").await.unwrap(), "released: nobody");
    let again = first
        .lock_run("R")
        .await
        .expect("release frees the run at once");
    drop((again, other));
}

/// Retries `attempt` for up to five seconds until it succeeds.
async fn eventually<T, F>(attempt: impl Fn() -> F) -> T
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if std::time::Instant::now() > deadline => panic!("still failing: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn empty_batch_is_a_no_op(fx: Fixture) {
    let store = &fx.store;
    store.commit(batch(&key("ghost", 0), vec![])).await.unwrap();
    let run = started(store, "R").await;
    store.commit(batch(&run, vec![])).await.unwrap();
    assert!(store.tasks(run).await.unwrap().is_empty());
}

/// The run's coordinator numbers its rows in commit order from a counter of its own; a
/// trigger written meanwhile through another handle (`trigger`, `serve`) gets an id above
/// every row the run has, so a watcher that saw up to the coordinator's last row still finds
/// it; a stale counter never numbers the coordinator's own rows backwards, and no two
/// triggers of the run share an id.
async fn a_trigger_from_another_writer_is_above_every_row_the_run_has(fx: Fixture) {
    let coordinator = &fx.store;
    let other = fx.open_again().await;
    let run = started(coordinator, "R").await;
    let outside = |event| Batch {
        run: run.clone(),
        changes: vec![trigger(event, "1", 2)],
        writer: Writer::Other,
    };
    // The other handle has written to the run before: what it knew then is stale later.
    other.commit(outside("x")).await.unwrap();
    let own = |changes| Batch {
        run: run.clone(),
        changes,
        writer: Writer::Coordinator,
    };
    let task = |step: &str| Change::TaskCreated {
        step: step.into(),
        sequence: "1".into(),
        status: TaskStatus::Active,
        attempt: 1,
        host: None,
        at: 1,
    };
    coordinator
        .commit(own(vec![trigger("a", "1", 1), task("s1")]))
        .await
        .unwrap();
    let seen = coordinator.triggers(run.clone()).await.unwrap();
    let watched = seen.iter().map(|t| t.id).max().unwrap();

    other.commit(outside("b")).await.unwrap();
    coordinator
        .commit(own(vec![trigger("c", "1", 3), task("s2")]))
        .await
        .unwrap();

    let newer = coordinator
        .triggers_after(run.clone(), watched)
        .await
        .unwrap();
    let events: Vec<_> = newer.iter().map(|t| t.event.as_str()).collect();
    assert!(events.contains(&"b"), "the watcher misses b: {newer:?}");
    let all = coordinator.triggers(run.clone()).await.unwrap();
    let id_of = |event: &str| all.iter().find(|t| t.event == event).unwrap().id;
    let tasks = coordinator.tasks(run.clone()).await.unwrap();
    let largest_task = tasks.iter().map(|t| t.id).max().unwrap();
    assert!(id_of("b") > id_of("a") && id_of("b") > watched);
    assert!(id_of("c") > id_of("a"), "{all:?}");
    assert_eq!(
        statuses(&tasks),
        [("s1", TaskStatus::Active), ("s2", TaskStatus::Active)]
    );
    assert!(tasks[0].id < largest_task, "{tasks:?}");
    // One order for the run's triggers: no two share an id, whoever wrote them.
    let mut ids: Vec<_> = all.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "{all:?}");
}

/// A cancel request from another handle wakes the run's subscriber and is read back once,
/// in order; a request to a run that is not there is refused; deleting the run takes its
/// requests along.
async fn requests_are_stored_in_order_and_wake_the_run(fx: Fixture) {
    let mine = &fx.store;
    let theirs = fx.open_again().await;
    let run = started(mine, "R").await;
    let mut wakes = mine.subscribe(run.clone()).await.unwrap();
    let cancel = |run: &RunKey, by: &str| RunRequest {
        run: run.clone(),
        kind: RequestKind::Cancel,
        by: by.to_string(),
        at: 7,
    };
    theirs.request(cancel(&run, "first")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), wakes.next())
        .await
        .expect("a request from another handle wakes the run");
    theirs.request(cancel(&run, "second")).await.unwrap();
    let all = mine.requests_after(run.clone(), 0).await.unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|r| (r.kind, r.by.as_str(), r.created_at))
        .collect();
    let cancel_kind = Some(RequestKind::Cancel);
    assert_eq!(
        seen,
        [(cancel_kind, "first", 7), (cancel_kind, "second", 7)]
    );
    let newer = mine.requests_after(run.clone(), all[0].id).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].by, "second");

    let ghost = theirs.request(cancel(&key("ghost", 0), "x")).await;
    assert!(matches!(ghost, Err(StoreError::NoSuchRun(_))), "{ghost:?}");
    assert_eq!(mine.delete_run("R").await.unwrap(), 1);
    assert!(mine.requests_after(run, 0).await.unwrap().is_empty());
}

async fn run_with_rows(store: &Store, run: &RunKey, name: &str, started_at: Micros) {
    store
        .begin_run(new_run(run, name, started_at))
        .await
        .unwrap();
    let delay = Change::DelayArmed {
        assoc: 1,
        sequence: "1".into(),
        due_at: 99,
        at: 5,
    };
    let changes = vec![
        trigger("e", "1", 5),
        created("s1", "1", TaskStatus::Ready, 1),
        delay,
    ];
    store.commit(batch(run, changes)).await.unwrap();
}

/// How many (runs, triggers, tasks, delays) rows `run_id` has in recoveries 0 and 1.
async fn row_counts(store: &Store, run_id: &str) -> [usize; 4] {
    let mut counts = [store.run_history(run_id).await.unwrap().len(), 0, 0, 0];
    for recovery in 0..2 {
        let run = key(run_id, recovery);
        counts[1] += store.triggers(run.clone()).await.unwrap().len();
        counts[2] += store.tasks(run.clone()).await.unwrap().len();
        counts[3] += store.delays(run).await.unwrap().len();
    }
    counts
}

async fn delete_run_removes_exactly_its_run(fx: Fixture) {
    let store = &fx.store;
    for run in [key("R", 0), key("R", 1), key("S", 0)] {
        run_with_rows(store, &run, "flow", 10).await;
    }
    assert_eq!(row_counts(store, "R").await, [2, 2, 2, 2]);

    assert_eq!(store.delete_run("R").await.unwrap(), 2, "both recoveries");
    assert_eq!(row_counts(store, "R").await, [0; 4], "every row of R went");
    assert_eq!(
        row_counts(store, "S").await,
        [1; 4],
        "another run's rows stay"
    );
    assert_eq!(
        store.delete_run("R").await.unwrap(),
        0,
        "nothing left to delete"
    );
    assert_eq!(store.delete_run("ghost").await.unwrap(), 0);

    // The run id is free again, and its new recovery 0 starts empty.
    let again = started(store, "R").await;
    assert!(store.tasks(again).await.unwrap().is_empty());
}

async fn prune_deletes_old_free_runs_of_the_flow(fx: Fixture) {
    let store = &fx.store;
    let runs = [
        (key("old", 0), "flow", 100),
        (key("old", 1), "flow", 200),
        (key("recovered", 0), "flow", 100),
        (key("recovered", 1), "flow", 500),
        (key("edge", 0), "flow", 300),
        (key("new", 0), "flow", 600),
        (key("locked", 0), "flow", 100),
        (key("other", 0), "other", 100),
    ];
    for (run, name, started_at) in &runs {
        run_with_rows(store, run, name, *started_at).await;
    }
    // Another coordinator is running "locked".
    let holder = fx.open_again().await;
    let guard = holder.lock_run("locked").await.unwrap();

    let pruned = store.prune(Some("flow"), 300).await.unwrap();
    assert_eq!(pruned, ["old"], "only old, free runs of the flow");
    assert_eq!(row_counts(store, "old").await, [0; 4]);
    for (run_id, recoveries) in [("recovered", 2), ("edge", 1), ("new", 1), ("locked", 1)] {
        let left = store.run_history(run_id).await.unwrap().len();
        assert_eq!(left, recoveries, "{run_id} is kept");
    }
    assert_eq!(
        row_counts(store, "other").await,
        [1; 4],
        "another flow's run stays"
    );
    // The pruner released the locks it took.
    store.lock_run("old").await.unwrap().release().await;

    guard.release().await;
    let pruned = store.prune(None, 300).await.unwrap();
    assert_eq!(pruned, ["locked", "other"], "any flow, once free");
    assert_eq!(row_counts(store, "locked").await, [0; 4]);
    assert_eq!(row_counts(store, "other").await, [0; 4]);
    assert_eq!(row_counts(store, "recovered").await, [2; 4]);
    assert_eq!(store.prune(None, 300).await.unwrap(), Vec::<String>::new());
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

    /// 600 one-trigger commits are far fewer WAL pages than the writer's own automatic
    /// checkpoint waits for, so only the store's checkpoint thread can copy them into the
    /// database file while the store is open: the file grows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_in_the_background_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let store = Store::open(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap();
        let run = started(&store, "R").await;
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        for i in 0..600 {
            let event = format!("e{i}");
            store
                .commit(batch(&run, vec![trigger(&event, "1", i)]))
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while size() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {before} bytes: nothing was checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.triggers(run).await.unwrap().len(), 600);
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

    /// Opens a store at `path` with `synchronous`, then begins `runs` runs (one commit each)
    /// with strace attached to this process: how many of those commits synced the WAL
    /// (`fsync`/`fdatasync` on `path`-wal). `None`, after saying so, without strace.
    /// `PRAGMA synchronous` is a setting of the store's own connection, which no other
    /// connection can read, so its effect is what is checked.
    async fn wal_syncs(path: &Path, synchronous: Synchronous, runs: u32) -> Option<usize> {
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(path, options).await.unwrap();
        let dir = path.parent().unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let out = dir.join(format!("{name}.strace"));
        let mut strace = match std::process::Command::new("strace")
            .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&out)
            .args(["-p", &std::process::id().to_string()])
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                // The test command installs strace; only a hand run may go without it.
                if std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1") {
                    panic!("cannot run strace for the synchronous check: {e}");
                }
                eprintln!("skipped the synchronous check: cannot run strace: {e}");
                return None;
            }
        };
        // Attached once a sync of a marker file shows up in its output.
        let marker = dir.join(format!("{name}.marker"));
        let file = std::fs::File::create(&marker).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            file.sync_all().unwrap();
            let seen = std::fs::read_to_string(&out).unwrap_or_default();
            if seen.contains(&format!("{name}.marker")) {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = strace.kill();
                panic!("strace never attached: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..runs {
            store
                .begin_run(new_run(&key(&format!("R{i}"), 0), "flow", 1))
                .await
                .unwrap();
        }
        // SIGINT makes strace detach and flush its output.
        let pid = strace.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        strace.wait().unwrap();
        let wal = format!("{name}-wal>");
        let trace = std::fs::read_to_string(&out).unwrap();
        let syncs = trace.lines().filter(|l| l.contains(&wal)).count();
        drop(store);
        Some(syncs)
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
        drop(store);

        // synchronous = FULL (2) syncs the WAL at every commit; NORMAL (1), the default,
        // only at checkpoints. The NORMAL store shows the count tells the two apart.
        let runs = 10;
        let full = wal_syncs(&dir.path().join("sync-full.db"), Synchronous::Full, runs).await;
        let normal = wal_syncs(
            &dir.path().join("sync-normal.db"),
            Synchronous::Normal,
            runs,
        )
        .await;
        if let (Some(full), Some(normal)) = (full, normal) {
            eprintln!("WAL syncs for {runs} commits: FULL {full}, NORMAL {normal}");
            assert!(
                full >= runs as usize,
                "synchronous is not FULL: {full} WAL syncs for {runs} commits"
            );
            assert!(
                normal < runs as usize / 2,
                "NORMAL synced the WAL {normal} times"
            );
        }
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

// ---- Postgres only -------------------------------------------------------------------------

mod postgres_only {
    use super::*;

    /// A fresh schema and two independent stores on it (as two processes would have).
    async fn two_stores() -> Option<(Store, Store, PgSchema)> {
        let schema = PgSchema::fresh(&common::pg_url()?);
        let first = Store::open(&schema.location).await.expect("open");
        let second = Store::open(&schema.location).await.expect("open again");
        Some((first, second, schema))
    }

    /// The full text of an error and its causes.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = format!("{err} / {err:?}");
        let mut cause = err.source();
        while let Some(e) = cause {
            text.push_str(&format!(" / {e} / {e:?}"));
            cause = e.source();
        }
        text
    }

    /// An agent opens a store its prime prepared without queueing on the schema's
    /// migration lock (sixteen agents used to wait for each other there); a plain open
    /// still takes the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepared_store_opens_without_the_migration_lock() {
        let Some((_, _, schema)) = two_stores().await else {
            return;
        };
        let url = common::pg_url().unwrap();
        let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let (class, key) = eventor_store::PgStore::migration_lock_keys(&schema.name);
        holder
            .execute("SELECT pg_advisory_lock($1, $2)", &[&class, &key])
            .await
            .expect("take the lock");
        let wait = Duration::from_secs(2);
        let prepared = tokio::time::timeout(wait, Store::open_prepared(&schema.location)).await;
        assert!(
            matches!(prepared, Ok(Ok(_))),
            "open_prepared waited or failed"
        );
        let plain = tokio::time::timeout(wait, Store::open(&schema.location)).await;
        assert!(plain.is_err(), "a plain open waits for the lock");
        holder
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &key])
            .await
            .expect("release the lock");
        schema.drop_now().await;
    }

    /// On a schema not prepared yet, `open_prepared` prepares it as `open` does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_prepared_prepares_a_new_schema() {
        let Some(url) = common::pg_url() else { return };
        let schema = PgSchema::fresh(&url);
        let store = Store::open_prepared(&schema.location).await.expect("open");
        started(&store, "P").await;
        schema.drop_now().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_stores_start_each_task_once() {
        let Some((first, second, schema)) = two_stores().await else {
            return;
        };
        let run = started(&first, "R").await;
        let steps: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let create = steps
            .iter()
            .map(|s| created(s, "1", TaskStatus::Ready, 1))
            .collect();
        first.commit(batch(&run, create)).await.unwrap();

        let racers: Vec<_> = steps
            .iter()
            .flat_map(|step| [first.clone(), second.clone()].map(|store| (store, step.clone())))
            .map(|(store, step)| {
                let start = batch(
                    &run,
                    vec![moved(&step, 1, TaskStatus::Ready, TaskStatus::Active)],
                );
                tokio::spawn(async move { (step, store.commit(start).await) })
            })
            .collect();
        let mut wins = std::collections::HashMap::<String, u32>::new();
        for racer in racers {
            let (step, outcome) = racer.await.unwrap();
            match outcome {
                Ok(()) => *wins.entry(step).or_default() += 1,
                Err(StoreError::Fenced { .. }) => {}
                Err(e) => panic!("{step}: {e:?}"),
            }
        }
        assert_eq!(wins.len(), steps.len(), "every task started");
        assert!(wins.values().all(|&n| n == 1), "{wins:?}");
        let tasks = second.tasks(run).await.unwrap();
        assert!(tasks.iter().all(|t| t.status == TaskStatus::Active));
        schema.drop_now().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_stores_writes_wake_a_subscriber() {
        let Some((mine, theirs, schema)) = two_stores().await else {
            return;
        };
        let quiet = Duration::from_millis(300);
        let run = started(&mine, "R").await;
        let mut wakes = mine.subscribe(run.clone()).await.unwrap();

        let task = created("s1", "1", TaskStatus::Ready, 1);
        mine.commit(batch(&run, vec![task])).await.unwrap();
        let own = tokio::time::timeout(quiet, wakes.next()).await;
        assert!(own.is_err(), "its own store's writes do not wake it");

        let start = moved("s1", 1, TaskStatus::Ready, TaskStatus::Active);
        theirs.commit(batch(&run, vec![start])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), wakes.next())
            .await
            .expect("another store's commit wakes it");

        // A burst while nobody waits is one wake-up; a refused batch sends nothing.
        for n in 2..5 {
            let task = created(&format!("s{n}"), "1", TaskStatus::Ready, 1);
            theirs.commit(batch(&run, vec![task])).await.unwrap();
        }
        tokio::time::sleep(quiet).await;
        tokio::time::timeout(Duration::from_secs(5), wakes.next())
            .await
            .expect("the burst wakes it");
        let refused = batch(&run, vec![created("s2", "1", TaskStatus::Ready, 1)]);
        assert!(theirs.commit(refused).await.is_err());
        let other = started(&theirs, "S").await;
        theirs
            .set_run_status(other, RunStatus::Success, 5)
            .await
            .unwrap();
        let after = tokio::time::timeout(quiet, wakes.next()).await;
        assert!(after.is_err(), "nothing for R since the burst");

        theirs
            .set_run_status(run, RunStatus::Success, 9)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), wakes.next())
            .await
            .expect("a run status change wakes it");
        schema.drop_now().await;
    }

    /// SQLite's subscription watches the file's `data_version`: another connection's commit
    /// wakes it within a look or two (250 ms each), its own store's commits never do.
    #[tokio::test]
    async fn sqlite_subscriptions_wake_on_another_connections_commit_only() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        let (mine, theirs) = (
            Store::open(&location).await.unwrap(),
            Store::open(&location).await.unwrap(),
        );
        let run = started(&mine, "R").await;
        let mut wakes = mine.subscribe(run.clone()).await.unwrap();
        mine.commit(batch(&run, vec![trigger("own", "1", 1)]))
            .await
            .unwrap();
        let own = tokio::time::timeout(SQLITE_WATCH_EVERY * 3, wakes.next()).await;
        assert!(own.is_err(), "its own store's writes do not wake it");
        theirs
            .commit(batch(&run, vec![trigger("e", "1", 1)]))
            .await
            .unwrap();
        tokio::time::timeout(SQLITE_WATCH_EVERY * 8, wakes.next())
            .await
            .expect("another connection's commit wakes it");
    }

    /// A subscription made under one runtime waits under the next (the API runs each `run`
    /// call on a fresh runtime, and a run's watch lives across them).
    #[test]
    fn an_sqlite_subscription_outlives_the_runtime_it_was_made_under() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("store.db"));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (mine, theirs, run, mut wakes) = runtime().block_on(async {
            let mine = Store::open(&location).await.unwrap();
            let theirs = Store::open(&location).await.unwrap();
            let run = started(&mine, "R").await;
            let wakes = mine.subscribe(run.clone()).await.unwrap();
            (mine, theirs, run, wakes)
        });
        runtime().block_on(async {
            theirs
                .commit(batch(&run, vec![trigger("e", "1", 1)]))
                .await
                .unwrap();
            tokio::time::timeout(SQLITE_WATCH_EVERY * 8, wakes.next())
                .await
                .expect("another connection's commit wakes it under the new runtime");
        });
        drop(mine);
    }

    #[tokio::test]
    async fn passwords_never_show() {
        let secret = "s3cret-pw";
        let unreachable = format!("postgres://eventor:{secret}@127.0.0.1:1/db?schema=x");
        let location = StoreLocation::parse(&unreachable).unwrap();
        let shown = format!("{location} {location:?}");
        assert!(!shown.contains(secret) && shown.contains("****"), "{shown}");
        let err = Store::open(&location)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let text = chain(&err);
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("****"), "the error names the store: {text}");

        // A server that trusts everyone accepts the password; the store still never shows it.
        let Some(url) = common::pg_url() else {
            return;
        };
        let schema = PgSchema::fresh(&url);
        let StoreLocation::Postgres(pg) = schema.location.clone() else {
            panic!("not postgres");
        };
        let with_password = StoreLocation::Postgres(pg.with_password(secret));
        let store = Store::open(&with_password).await.unwrap();
        let described = store.describe();
        assert!(
            !described.contains(secret) && described.contains("****"),
            "{described}"
        );
        drop(store);
        schema.drop_now().await;
    }

    #[tokio::test]
    async fn open_creates_the_schema_once_for_racing_opens() {
        let Some(url) = common::pg_url() else {
            return;
        };
        let schema = PgSchema::fresh(&url);
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let location = schema.location.clone();
                tokio::spawn(async move { Store::open(&location).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().expect("every racing open succeeds"));
        }
        started(&stores[0], "R").await;
        assert_eq!(stores[3].run_history("R").await.unwrap().len(), 1);
        drop(stores);
        schema.drop_now().await;
    }

    #[tokio::test]
    async fn opens_over_a_unix_socket() {
        let (Ok(dir), Ok(port)) = (
            std::env::var("EVENTOR_PG_SOCKET_DIR"),
            std::env::var("EVENTOR_PG_PORT"),
        ) else {
            if std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1") {
                panic!(
                    "EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_SOCKET_DIR or EVENTOR_PG_PORT is not set"
                );
            }
            eprintln!("skipped: EVENTOR_PG_SOCKET_DIR or EVENTOR_PG_PORT is not set");
            return;
        };
        let Some(url) = common::pg_url() else {
            return;
        };
        let schema = PgSchema::fresh(&url);
        let dir = dir.replace('/', "%2F");
        let text = format!(
            "postgres://postgres@{dir}:{port}/eventor?schema={}",
            schema.name
        );
        let location = StoreLocation::parse(&text).unwrap();
        let store = Store::open(&location).await.expect("open over the socket");
        started(&store, "R").await;
        assert_eq!(store.run_history("R").await.unwrap().len(), 1);
        drop(store);
        schema.drop_now().await;
    }

    #[tokio::test]
    async fn schemas_keep_runs_apart() {
        let Some(url) = common::pg_url() else {
            return;
        };
        let (a, b) = (PgSchema::fresh(&url), PgSchema::fresh(&url));
        let store_a = Store::open(&a.location).await.unwrap();
        let store_b = Store::open(&b.location).await.unwrap();
        started(&store_a, "R").await;
        started(&store_b, "R").await;
        let guard_a = store_a.lock_run("R").await.unwrap();
        let guard_b = store_b
            .lock_run("R")
            .await
            .expect("same run id, other schema");
        assert_eq!(store_b.run_history("R").await.unwrap().len(), 1);
        drop((guard_a, guard_b, store_a, store_b));
        a.drop_now().await;
        b.drop_now().await;
    }
}

// ---- shared pools --------------------------------------------------------------------------

fn grant(run: &RunKey, step: &str, attempt: i32, units: &[(&str, u32)]) -> GrantRequest {
    GrantRequest {
        run: run.clone(),
        step: step.into(),
        sequence: "1".into(),
        attempt,
        units: units.iter().map(|(p, n)| (Arc::from(*p), *n)).collect(),
    }
}

async fn shared_pool_grants_all_or_nothing_across_handles(fx: Fixture) {
    let store = &fx.store;
    let other = fx.open_again().await;
    store
        .declare_pools(vec![("lic".into(), 2), ("gpu".into(), 1)])
        .await
        .unwrap();
    let (a, b) = (started(store, "A").await, started(&other, "B").await);
    assert!(store
        .try_grant(grant(&a, "s", 1, &[("lic", 1), ("gpu", 1)]))
        .await
        .unwrap());
    assert!(
        store
            .try_grant(grant(&a, "s", 1, &[("lic", 1), ("gpu", 1)]))
            .await
            .unwrap(),
        "the same attempt again: granted, nothing more taken"
    );
    // gpu is used up: the lic unit is not taken either (all or nothing).
    assert!(!other
        .try_grant(grant(&b, "t", 1, &[("lic", 1), ("gpu", 1)]))
        .await
        .unwrap());
    assert!(other
        .try_grant(grant(&b, "u", 1, &[("lic", 1)]))
        .await
        .unwrap());
    assert!(
        !other
            .try_grant(grant(&b, "v", 1, &[("lic", 1)]))
            .await
            .unwrap(),
        "lic is full"
    );
    assert_eq!(store.release_run_grants("A").await.unwrap(), 2);
    assert!(other
        .try_grant(grant(&b, "t", 1, &[("lic", 1), ("gpu", 1)]))
        .await
        .unwrap());
    let unknown = store.try_grant(grant(&a, "s", 2, &[("nope", 1)])).await;
    assert!(matches!(unknown, Err(StoreError::NoSuchPool(p)) if p == "nope"));
}

async fn shared_pool_grant_goes_back_with_the_task_end(fx: Fixture) {
    let store = &fx.store;
    store.declare_pools(vec![("lic".into(), 1)]).await.unwrap();
    let run = started(store, "R").await;
    store
        .commit(batch(&run, vec![created("s", "1", TaskStatus::Active, 1)]))
        .await
        .unwrap();
    assert!(store
        .try_grant(grant(&run, "s", 1, &[("lic", 1)]))
        .await
        .unwrap());
    assert!(!store
        .try_grant(grant(&run, "t", 1, &[("lic", 1)]))
        .await
        .unwrap());
    let release = Change::GrantReleased {
        step: "s".into(),
        sequence: "1".into(),
        attempt: 1,
    };
    // A batch that fails keeps the grant: the release is part of it.
    let fenced = moved("s", 9, TaskStatus::Active, TaskStatus::Success);
    let failed = store
        .commit(batch(&run, vec![release.clone(), fenced]))
        .await;
    assert!(
        matches!(failed, Err(StoreError::Fenced { .. })),
        "{failed:?}"
    );
    assert!(!store
        .try_grant(grant(&run, "t", 1, &[("lic", 1)]))
        .await
        .unwrap());
    let ended = moved("s", 1, TaskStatus::Active, TaskStatus::Success);
    store
        .commit(batch(&run, vec![ended, release]))
        .await
        .unwrap();
    assert!(store
        .try_grant(grant(&run, "t", 1, &[("lic", 1)]))
        .await
        .unwrap());
}

async fn shared_pool_declared_once(fx: Fixture) {
    let store = &fx.store;
    store.declare_pools(vec![("lic".into(), 2)]).await.unwrap();
    store.declare_pools(vec![("lic".into(), 2)]).await.unwrap();
    let other = fx.open_again().await;
    let refused = other.declare_pools(vec![("lic".into(), 3)]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::PoolMismatch {
                declared: 3,
                stored: 2,
                ..
            })
        ),
        "{refused:?}"
    );
}
