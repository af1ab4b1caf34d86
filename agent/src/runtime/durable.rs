//! Recording a remote task's final status in the shared store, before the prime hears of it:
//! one fenced `active → success|failure` transition, so a result survives the prime dying,
//! with the host it ran on (the prime's name for it) just before, fenced the same way.
//!
//! Ends are group-committed: one recorder task commits every end that arrived while its last
//! commit was under way in one transaction, so a burst of short tasks costs a few fsyncs, not
//! one each. If a group is refused (one end was fenced by another writer), its ends are
//! committed one by one so each gets its own verdict.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use eventor_protocol::{EndStatus, TaskEnd, TaskKey};
use eventor_store::{Batch, Change, RunKey, Store, StoreError, TaskStatus, Writer};

use crate::util::error_chain;

/// What became of the record.
#[derive(Debug)]
pub(super) enum Recorded {
    /// The agent has no store: the prime records the result.
    NoStore,
    /// The store took it.
    Written,
    /// Another writer had already moved the task on (a cancel, a recovery): the store keeps
    /// that writer's decision.
    Fenced(String),
    /// The store failed: the prime must record the result itself.
    Failed(String),
}

/// Most ends committed together.
const MAX_GROUP: usize = 256;

/// The handle tasks record through; the recorder task stops when every handle is dropped.
#[derive(Clone)]
pub(super) struct Recorder {
    requests: mpsc::Sender<Request>,
    /// This host, as the prime names it.
    host: Arc<str>,
}

struct Request {
    batch: Batch,
    reply: oneshot::Sender<Recorded>,
}

impl Recorder {
    /// Starts the recorder task on the current runtime.
    pub(super) fn start(store: Store, host: &str) -> Recorder {
        let (requests, queue) = mpsc::channel(MAX_GROUP);
        tokio::spawn(run(store, queue));
        Recorder {
            requests,
            host: Arc::from(host),
        }
    }
}

/// Commits `end` as the task's final status, fenced by its attempt and `active`.
pub(super) async fn record(recorder: Option<&Recorder>, key: &TaskKey, end: &TaskEnd) -> Recorded {
    let Some(recorder) = recorder else {
        return Recorded::NoStore;
    };
    let (reply, answer) = oneshot::channel();
    let request = Request {
        batch: batch(key, end, &recorder.host),
        reply,
    };
    if recorder.requests.send(request).await.is_err() {
        return Recorded::Failed("the store recorder has stopped".to_string());
    }
    answer
        .await
        .unwrap_or_else(|_| Recorded::Failed("the store recorder has stopped".to_string()))
}

async fn run(store: Store, mut queue: mpsc::Receiver<Request>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        commit_group(&store, group).await;
    }
}

/// One transaction for the group when its ends share a run; else, or when the group is
/// refused, one per end.
async fn commit_group(store: &Store, group: Vec<Request>) {
    let run = group[0].batch.run.clone();
    if group.len() > 1 && group.iter().all(|r| r.batch.run == run) {
        let changes = group.iter().flat_map(|r| r.batch.changes.clone()).collect();
        if store
            .commit(Batch {
                run,
                changes,
                writer: Writer::Other,
            })
            .await
            .is_ok()
        {
            for request in group {
                let _ = request.reply.send(Recorded::Written);
            }
            return;
        }
    }
    for request in group {
        let verdict = commit_one(store, request.batch).await;
        let _ = request.reply.send(verdict);
    }
}

async fn commit_one(store: &Store, batch: Batch) -> Recorded {
    match store.commit(batch).await {
        Ok(()) => Recorded::Written,
        Err(error @ StoreError::Fenced { .. }) => Recorded::Fenced(error.to_string()),
        Err(error) => Recorded::Failed(error_chain(&error)),
    }
}

fn batch(key: &TaskKey, end: &TaskEnd, host: &Arc<str>) -> Batch {
    Batch {
        run: RunKey {
            run_id: Arc::from(key.run_id.as_str()),
            recovery: key.recovery,
        },
        changes: end_changes(host, key, end).into(),
        // The agent writes as its prime would have, but through a store handle of its own.
        writer: Writer::Other,
    }
}

/// The store changes that end the remote attempt `key` with `end`: where it ran, and its
/// transition from active, both fenced on its attempt. The one way a remote end is stored,
/// by its agent or (a lost host's task) by the prime.
pub fn end_changes(host: &str, key: &TaskKey, end: &TaskEnd) -> [Change; 2] {
    let to = match end.status {
        EndStatus::Success => TaskStatus::Success,
        // The store has no "cancelled": like a local cancel or timeout, it is a failure
        // whose error says why.
        EndStatus::Failure | EndStatus::Cancelled | EndStatus::TimedOut => TaskStatus::Failure,
    };
    let (step, sequence): (Arc<str>, Arc<str>) = (Arc::from(&*key.step), Arc::from(&*key.sequence));
    let ran_on = Change::TaskHost {
        step: step.clone(),
        sequence: sequence.clone(),
        attempt: key.attempt,
        host: Arc::from(host),
    };
    let ended = Change::TaskTransition {
        step,
        sequence,
        attempt: key.attempt,
        from: TaskStatus::Active,
        to,
        result: end.result.clone(),
        error: end.error.clone(),
        failure_class: end.failure_class().map(|c| c.to_string().into()),
        at: eventor_store::now_micros(),
    };
    [ran_on, ended]
}
