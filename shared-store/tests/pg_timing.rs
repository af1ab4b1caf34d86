//! A timing check of the Postgres backend, not a test: it prints commits/s and rows/s for the
//! engine's typical loads and asserts nothing about time. With the testbed up and its env
//! sourced, run it in release:
//! `cargo test --release -p eventor-store --test pg_timing -- --ignored --nocapture --test-threads 1`.
//! Compare with `pgbench -N` on the same server (README of the figures: the Postgres issue).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::PgSchema;
use eventor_store::*;

async fn fresh_store() -> Option<(Store, RunKey, PgSchema)> {
    let schema = PgSchema::fresh(&common::pg_url()?);
    let store = Store::open(&schema.location).await.unwrap();
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
    Some((store, run, schema))
}

fn created(step: &Arc<str>, sequence: &Arc<str>, status: TaskStatus) -> Change {
    Change::TaskCreated {
        step: step.clone(),
        sequence: sequence.clone(),
        status,
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

fn report(what: &str, commits: usize, rows: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what}: {commits} commits, {rows} changes in {elapsed:.2?} = {:.0} commits/s, {:.0} changes/s",
        commits as f64 / secs,
        rows as f64 / secs
    );
}

fn sequences(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| Arc::from(i.to_string())).collect()
}

/// One batch: 20,000 tasks created, started and finished (60,000 changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn one_batch_of_20_000_tasks_x_3_changes() {
    let Some((store, run, schema)) = fresh_store().await else {
        return;
    };
    let step: Arc<str> = Arc::from("wide");
    let mut changes = Vec::with_capacity(60_000);
    for sequence in &sequences(20_000) {
        changes.push(created(&step, sequence, TaskStatus::Ready));
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
    report("one batch, 20000 tasks x 3", 1, 60_000, started.elapsed());
    let read = Instant::now();
    assert_eq!(store.tasks(run).await.unwrap().len(), 20_000);
    println!("  20000 tasks read back in {:.2?}", read.elapsed());
    schema.drop_now().await;
}

/// A fan-out of 20,000 steps at 64 running: each turn finishes 64 steps and starts 64 more
/// (created already active), as the engine batches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn fan_out_of_20_000_steps_in_turns_of_64() {
    let Some((store, run, schema)) = fresh_store().await else {
        return;
    };
    let step: Arc<str> = Arc::from("fan");
    let sequences = sequences(20_000);
    let turns: Vec<Vec<Change>> = sequences
        .chunks(64)
        .enumerate()
        .map(|(turn, starting)| {
            let finishing = turn
                .checked_sub(1)
                .map(|previous| &sequences[previous * 64..turn * 64])
                .unwrap_or_default();
            let done = finishing
                .iter()
                .map(|s| moved(&step, s, TaskStatus::Active, TaskStatus::Success));
            let start = starting
                .iter()
                .map(|s| created(&step, s, TaskStatus::Active));
            done.chain(start).collect()
        })
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    let commits = turns.len();
    for changes in turns {
        rows += changes.len();
        store
            .commit(Batch {
                run: run.clone(),
                changes,
            })
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    report(
        "fan-out, 20000 steps in turns of 64",
        commits,
        rows,
        elapsed,
    );
    println!("  = {:.0} steps/s", 20_000.0 / elapsed.as_secs_f64());
    schema.drop_now().await;
}

/// Single-change commits (a trigger each): the per-commit cost, fsync included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn single_change_commits() {
    let Some((store, run, schema)) = fresh_store().await else {
        return;
    };
    let event: Arc<str> = Arc::from("tick");
    let started = Instant::now();
    let commits = 2_000;
    for sequence in sequences(commits) {
        let change = Change::Trigger {
            event: event.clone(),
            sequence,
            at: 1,
        };
        store
            .commit(Batch {
                run: run.clone(),
                changes: vec![change],
            })
            .await
            .unwrap();
    }
    report("single-change commits", commits, commits, started.elapsed());
    schema.drop_now().await;
}

/// Single-change commits from 8 concurrent writers on one store (its pool has 4 connections),
/// each on a run of its own, like several runs sharing a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn single_change_commits_8_writers() {
    let Some((store, _, schema)) = fresh_store().await else {
        return;
    };
    let per_writer = 500;
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let run = RunKey {
                    run_id: Arc::from(format!("w{w}")),
                    recovery: 0,
                };
                let new_run = NewRun {
                    key: run.clone(),
                    name: "timing".into(),
                    mode: RunMode::Restart,
                    host: "here".into(),
                    program: "{}".into(),
                    started_at: 1,
                };
                store.begin_run(new_run).await.unwrap();
                for sequence in sequences(per_writer) {
                    let change = Change::Trigger {
                        event: Arc::from("tick"),
                        sequence,
                        at: 1,
                    };
                    let batch = Batch {
                        run: run.clone(),
                        changes: vec![change],
                    };
                    store.commit(batch).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let commits = 8 * per_writer;
    report(
        "single-change commits, 8 writers",
        commits,
        commits,
        started.elapsed(),
    );
    schema.drop_now().await;
}

/// A chain: one turn per commit (finish a step, fire its event, start the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing check, run by hand"]
async fn chain_of_2_000_turns() {
    let Some((store, run, schema)) = fresh_store().await else {
        return;
    };
    let seq: Arc<str> = Arc::from("1");
    let steps: Vec<Arc<str>> = (0..=2_000).map(|i| Arc::from(format!("s{i}"))).collect();
    let first = vec![created(&steps[0], &seq, TaskStatus::Active)];
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
            created(&pair[1], &seq, TaskStatus::Active),
        ];
        store
            .commit(Batch {
                run: run.clone(),
                changes,
            })
            .await
            .unwrap();
    }
    report(
        "chain, 3 changes per commit",
        2_000,
        6_000,
        started.elapsed(),
    );
    schema.drop_now().await;
}
