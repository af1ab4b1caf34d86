//! A timing check of the SQLite backend, not a test: it prints how long the engine's two
//! typical loads take and asserts nothing about time. Run it in release:
//! `cargo test --release -p eventor-store --test timing -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use eventor_store::*;

async fn fresh_store(dir: &tempfile::TempDir) -> (Store, RunKey) {
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("timing.db")))
        .await
        .unwrap();
    let run = RunKey {
        run_id: Arc::from("timing"),
        recovery: 0,
    };
    let new_run = NewRun {
        key: run.clone(),
        name: "timing".into(),
        mode: RunMode::Restart,
        host: "here".into(),
        program: "{}".into(),
        started_at: now_micros(),
    };
    store.begin_run(new_run).await.unwrap();
    (store, run)
}

fn created(step: &Arc<str>, sequence: &Arc<str>) -> Change {
    Change::TaskCreated {
        step: step.clone(),
        sequence: sequence.clone(),
        status: TaskStatus::Ready,
        attempt: 1,
        host: None,
        at: 1,
    }
}

fn moved(step: &Arc<str>, sequence: &Arc<str>, from: TaskStatus, to: TaskStatus) -> Change {
    Change::TaskTransition {
        step: step.clone(),
        sequence: sequence.clone(),
        attempt: 1,
        from,
        to,
        result: None,
        error: None,
        at: 2,
    }
}

/// A chain of steps, one batch per scheduler turn: finish step i, fire its event, create
/// step i+1 already started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn chain_of_10_000_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = fresh_store(&dir).await;
    let steps: Vec<Arc<str>> = (0..=10_000).map(|i| Arc::from(format!("s{i}"))).collect();
    let seq: Arc<str> = Arc::from("1");
    let first = vec![
        created(&steps[0], &seq),
        moved(&steps[0], &seq, TaskStatus::Ready, TaskStatus::Active),
    ];
    store
        .commit(Batch {
            run: run.clone(),
            changes: first,
        })
        .await
        .unwrap();

    let started = Instant::now();
    for pair in steps.windows(2) {
        let changes = vec![
            moved(&pair[0], &seq, TaskStatus::Active, TaskStatus::Success),
            Change::Trigger {
                event: pair[0].clone(),
                sequence: seq.clone(),
                at: 3,
            },
            Change::TaskCreated {
                step: pair[1].clone(),
                sequence: seq.clone(),
                status: TaskStatus::Active,
                attempt: 1,
                host: None,
                at: 3,
            },
        ];
        store
            .commit(Batch {
                run: run.clone(),
                changes,
            })
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "chain: 10000 batches of 3 changes in {elapsed:?} = {:.1} us per step",
        elapsed.as_secs_f64() * 1e6 / 10_000.0
    );
}

/// One huge batch: 100,000 tasks created, each started and finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn batch_of_300_000_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = fresh_store(&dir).await;
    let step: Arc<str> = Arc::from("wide");
    let sequences: Vec<Arc<str>> = (0..100_000).map(|i| Arc::from(i.to_string())).collect();
    let mut changes = Vec::with_capacity(300_000);
    for sequence in &sequences {
        changes.push(created(&step, sequence));
        changes.push(moved(
            &step,
            sequence,
            TaskStatus::Ready,
            TaskStatus::Active,
        ));
        changes.push(moved(
            &step,
            sequence,
            TaskStatus::Active,
            TaskStatus::Success,
        ));
    }

    let started = Instant::now();
    store
        .commit(Batch {
            run: run.clone(),
            changes,
        })
        .await
        .unwrap();
    let committed = started.elapsed();
    let tasks = store.tasks(run).await.unwrap();
    let read = started.elapsed() - committed;
    assert_eq!(tasks.len(), 100_000);
    println!("wide: 300000 changes committed in {committed:?}; 100000 tasks read in {read:?}");
}
