//! The IO around the cluster's core: host events in, the core's actions carried out.
//!
//! [`Forwarder`] owns the [`ClusterCore`] (behind one lock, taken only to hand it an input)
//! and the hosts' links. It turns each [`HostEvent`] into a core input, or passes it on
//! (output and log records to the console and the central log), and performs the actions
//! the core answers: a dispatch or a cancel on a link, a task's end to the engine's driver,
//! a host brought back, a lost host's tasks settled against the store. It wakes at the
//! core's next deadline, so a task in limbo is settled when its lease runs out even while
//! no host says anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventor_agent::Outcome;
use eventor_protocol::{Dispatch, TaskKey, Work};
use eventor_store::{Batch, Change, RunKey, Store, StoreError, TaskRecord, TaskStatus};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::{Action, ClusterCore, Input, LeaseRule};
use super::link::{HostEvent, HostLink};
use super::reconnect::Reconnector;
use crate::engine::core::TaskId;
use crate::engine::events::ExecEvent;
use crate::log::CentralOutput;

/// The core, the links, and where the core's answers go.
pub(super) struct Forwarder {
    core: Mutex<ClusterCore<Work>>,
    links: Mutex<HashMap<Arc<str>, Arc<HostLink>>>,
    /// The core's clock starts here (monotonic).
    epoch: Instant,
    /// Rung when the core's next deadline may have moved earlier.
    deadline_moved: Notify,
    events: mpsc::Sender<ExecEvent>,
    central: Option<CentralOutput>,
    store: Store,
    run: RunKey,
    reconnector: Arc<Reconnector>,
    /// Deliveries, cancels, settlements and reports under way.
    tracker: TaskTracker,
}

/// What the forwarder needs besides the core.
pub(super) struct ForwarderParts {
    pub rule: LeaseRule,
    pub events: mpsc::Sender<ExecEvent>,
    pub central: Option<CentralOutput>,
    pub store: Store,
    pub run: RunKey,
    pub reconnector: Arc<Reconnector>,
}

impl Forwarder {
    pub(super) fn new(parts: ForwarderParts) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            core: Mutex::new(ClusterCore::new(parts.rule)),
            links: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            deadline_moved: Notify::new(),
            events: parts.events,
            central: parts.central,
            store: parts.store,
            run: parts.run,
            reconnector: parts.reconnector,
            tracker: TaskTracker::new(),
        })
    }

    fn core(&self) -> MutexGuard<'_, ClusterCore<Work>> {
        self.core.lock().expect("cluster core lock")
    }

    fn links(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<HostLink>>> {
        self.links.lock().expect("cluster links lock")
    }

    /// Hands `input` to the core and carries out its answer.
    fn handle(self: &Arc<Self>, input: Input<Work>) {
        let now = self.epoch.elapsed();
        let (actions, moved) = {
            let mut core = self.core();
            let before = core.next_deadline();
            let actions = core.handle(now, input);
            (actions, core.next_deadline() != before)
        };
        for action in actions {
            self.act(action);
        }
        // The run loop sleeps until the deadline it saw: wake it only when that changed.
        if moved {
            self.deadline_moved.notify_one();
        }
    }

    /// `link`'s host is up (at the start, or back after a loss).
    pub(super) fn host_up(self: &Arc<Self>, link: HostLink) {
        let limit =
            eventor_agent::MaxConcurrent::from_wire(link.accepted().limits.max_concurrent_tasks);
        let host: Arc<str> = Arc::from(link.host());
        let records = link.records_results();
        let lease = link.lease();
        self.links().insert(host.clone(), Arc::new(link));
        let cap = super::placement::capacity(limit.get());
        let adopted = Vec::new();
        self.handle(Input::HostUp {
            host,
            cap,
            records,
            lease,
            adopted,
        });
    }

    /// A pinned task is to run on one of `hosts`.
    pub(super) fn submit(
        self: &Arc<Self>,
        task: TaskId,
        hosts: &[Arc<str>],
        key: TaskKey,
        work: Work,
    ) {
        let hosts = hosts.to_vec();
        let payload = work;
        self.handle(Input::Submit {
            task,
            hosts,
            key,
            payload,
        });
    }

    pub(super) fn cancel_all(self: &Arc<Self>) {
        self.handle(Input::CancelAll);
    }

    /// Cuts every link without a word (the prime lost contact with the store): each agent
    /// sees its prime gone and its lease starts; no host is brought back.
    pub(super) fn let_go(self: &Arc<Self>, reason: &str) {
        let reason = reason.to_string();
        self.handle(Input::LetGo { reason });
        let reconnector = self.reconnector.clone();
        self.tracker.spawn(async move { reconnector.stop().await });
        // Dropped here or when the last delivery holding one ends: either cuts the link.
        self.links().clear();
    }

    /// The links there are now.
    pub(super) fn all_links(&self) -> Vec<Arc<HostLink>> {
        self.links().values().cloned().collect()
    }

    /// Takes every link (the run is over), and waits for the work under way.
    pub(super) async fn close(&self) -> Vec<Arc<HostLink>> {
        let links = self.links().drain().map(|(_, link)| link).collect();
        self.tracker.close();
        self.tracker.wait().await;
        links
    }

    /// Turns host events into core inputs until `shutdown`, waking at the core's deadlines.
    pub(super) async fn run(
        self: Arc<Self>,
        mut host_events: mpsc::Receiver<HostEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self.core().next_deadline();
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until((self.epoch + at).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = host_events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                _ = wake => self.handle(Input::Tick),
                _ = self.deadline_moved.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    async fn on_event(self: &Arc<Self>, event: HostEvent) {
        match event {
            HostEvent::Started { host, key, pid } => {
                // Not stored: the agent may record the task's end before the prime could
                // commit the pid, and a pid is not worth a race with the task's real end.
                tracing::debug!(host = %host, step = %key.step, sequence = %key.sequence, pid, "started");
            }
            HostEvent::Ran { key, .. } => self.handle(Input::Ran { key }),
            HostEvent::Finished {
                key,
                status,
                result,
                error,
                ..
            } => {
                let success = status == eventor_protocol::Outcome::Success;
                let outcome = Outcome {
                    success,
                    result,
                    error,
                    recorded: false,
                };
                self.handle(Input::Finished { key, outcome });
            }
            HostEvent::Log { host, record } => self.log(&host, record).await,
            HostEvent::Output { host, batch } => self.output(host, batch).await,
            HostEvent::AgentError { host, key, message } => {
                tracing::warn!(host = %host, "agent: {message}");
                if let Some(key) = key {
                    self.handle(Input::Unrecorded { key });
                }
            }
            HostEvent::Lost { host, reason } => {
                tracing::error!(host = %host, %reason, "host lost");
                let host = Arc::from(host);
                self.handle(Input::HostLost { host, reason });
            }
        }
    }

    async fn log(&self, host: &str, record: eventor_protocol::LogRecord) {
        match &record.task {
            Some(task) => tracing::info!(
                target: "eventor::output",
                host = %host,
                step = %task.step,
                sequence = %task.sequence,
                stream = ?record.stream,
                "{}", record.text
            ),
            None => tracing::info!(host = %host, "agent: {}", record.text),
        }
        if let Some(central) = &self.central {
            // Waiting here holds the link's reader back, and so the agent: backpressure.
            central.sink.record(record).await;
        }
    }

    /// Lines of a task's output: to the console (when it shows output) and the central log.
    async fn output(&self, host: String, batch: eventor_protocol::OutputBatch) {
        crate::log::trace_output(&host, &batch);
        if let Some(central) = &self.central {
            // Waiting here holds the link's reader back, and so the agent: backpressure.
            central.sink.output(Arc::from(host), batch).await;
        }
    }

    /// Carries out one action of the core (never waits: anything slow is spawned).
    fn act(self: &Arc<Self>, action: Action<Work>) {
        match action {
            Action::Send { host, key, payload } => self.send(host, key, payload),
            Action::Cancel { host, key } => {
                if let Some(link) = self.links().get(&host).cloned() {
                    self.tracker.spawn(async move {
                        let _ = link.cancel(key).await;
                    });
                }
            }
            Action::End { task, outcome } => {
                // Most ends find room at once; only a full channel costs a task that waits.
                let end = ExecEvent::Finished { task, outcome };
                if let Err(mpsc::error::TrySendError::Full(end)) = self.events.try_send(end) {
                    let events = self.events.clone();
                    self.tracker.spawn(async move {
                        let _ = events.send(end).await;
                    });
                }
            }
            Action::Reconnect { host } => self.bring_back(host),
            Action::Settle {
                host,
                reason,
                tasks,
            } => {
                let this = self.clone();
                self.tracker
                    .spawn(async move { this.settle(&host, &reason, tasks).await });
            }
        }
    }

    fn send(self: &Arc<Self>, host: Arc<str>, key: TaskKey, work: Work) {
        let link = self.links().get(&host).cloned();
        let this = self.clone();
        self.tracker.spawn(async move {
            let error = match link {
                Some(link) => {
                    let dispatch = Dispatch {
                        key: key.clone(),
                        work,
                    };
                    match link.dispatch(dispatch).await {
                        Ok(()) => return,
                        Err(e) => e.to_string(),
                    }
                }
                None => "no link".to_string(),
            };
            this.handle(Input::Undelivered { key, error });
        });
    }

    /// Starts reconnecting `host`; its new link takes tasks once it is up.
    fn bring_back(self: &Arc<Self>, host: Arc<str>) {
        let this = self.clone();
        self.reconnector
            .begin(host.to_string(), move |link| this.host_up(link));
    }

    /// Ends the tasks of a lost host that are known dead: what its agent recorded stands,
    /// the rest fail.
    async fn settle(&self, host: &str, reason: &str, tasks: Vec<(TaskId, TaskKey)>) {
        let stored = self.stored_tasks().await;
        for (task, key) in tasks {
            let outcome = match stored_end(&stored, &key) {
                Some(outcome) => outcome,
                None => {
                    let error = format!("host {host} lost: {reason}");
                    self.fail_lost(host, &key, error).await
                }
            };
            let _ = self
                .events
                .send(ExecEvent::Finished { task, outcome })
                .await;
        }
    }

    /// Records a lost host's task failed, fenced on its being still active: its agent may
    /// still record an end (it may be alive, only cut off from us), and if it did so first,
    /// that end stands instead of aborting the run on a fenced write.
    async fn fail_lost(&self, host: &str, key: &TaskKey, error: String) -> Outcome {
        let (step, sequence): (Arc<str>, Arc<str>) =
            (Arc::from(&*key.step), Arc::from(&*key.sequence));
        let ran_on = Change::TaskHost {
            step: step.clone(),
            sequence: sequence.clone(),
            attempt: key.attempt,
            host: Arc::from(host),
        };
        let failed = Change::TaskTransition {
            step,
            sequence,
            attempt: key.attempt,
            from: TaskStatus::Active,
            to: TaskStatus::Failure,
            result: None,
            error: Some(error.clone()),
            at: eventor_store::now_micros(),
        };
        let batch = Batch {
            run: self.run.clone(),
            changes: vec![ran_on, failed],
        };
        // A test holds the prime here while a cut-off agent records its end first.
        fail::fail_point!("lost-before-record");
        match self.store.commit(batch).await {
            Ok(()) => Outcome {
                recorded: true,
                ..Outcome::failure(error)
            },
            Err(StoreError::Fenced { .. }) => {
                let stored = self.stored_tasks().await;
                stored_end(&stored, key).unwrap_or_else(|| Outcome::failure(error))
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording a lost host's task; the run will try again");
                Outcome::failure(error)
            }
        }
    }

    /// The run's stored tasks, read again (with a growing pause) while the store fails: an
    /// end the agent recorded must be found, never overwritten by a guess.
    async fn stored_tasks(&self) -> Vec<TaskRecord> {
        let mut pause = Duration::from_millis(200);
        for _ in 0..6 {
            match self.store.tasks(self.run.clone()).await {
                Ok(tasks) => return tasks,
                Err(e) => tracing::warn!(error = %e, "reading the lost host's tasks; trying again"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        tracing::error!("the store stays unreadable: the lost host's tasks fail unread");
        Vec::new()
    }
}

/// The end of the task attempt `key` as stored, if it has one.
fn stored_end(stored: &[TaskRecord], key: &TaskKey) -> Option<Outcome> {
    let row = stored.iter().find(|t| {
        *t.step == *key.step && *t.sequence == *key.sequence && t.attempt == key.attempt
    })?;
    let ended = matches!(row.status, TaskStatus::Success | TaskStatus::Failure);
    ended.then(|| Outcome {
        success: row.status == TaskStatus::Success,
        result: row.result.clone(),
        error: row.error.clone(),
        recorded: true,
    })
}
