//! The IO around the cluster's core: host events in, the core's actions carried out.
//!
//! [`Forwarder`] owns the [`ClusterCore`] (behind one lock, taken only to hand it an input)
//! and the hosts' links. It turns each [`HostEvent`] into a core input, or passes it on
//! (output and log records to the console and the central log), and performs the actions
//! the core answers: a dispatch or a cancel on a link, a task's end to the engine's driver,
//! a host brought back, a lost host's tasks settled against the store. It wakes at the
//! core's next deadline, so a task in limbo is settled when its lease runs out even while
//! no host says anything (and a quarantine ends on time). Each change of a host's health
//! goes to the store's `host_health` table, the latest per host, one write at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventor_agent::trigger_socket::Fire;
use eventor_agent::{end_changes, TaskEnd, TriggerError};
use eventor_protocol::{Dispatch, EndStatus, TaskKey, Work};
use eventor_store::{
    Batch, HostHealthRecord, HostState, Micros, RunKey, Store, StoreError, TaskRecord, TaskStatus,
    Writer,
};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::{Action, ClusterCore, HealthState, HostHealth, Input, LeaseRule};
use super::link::{HostEvent, HostLink};
use super::quarantine::{human, QuarantineRules};
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
    /// The same moment on the wall clock, in microseconds: the core's times as stored.
    wall_epoch: Micros,
    /// Each host's health not yet written to the store (only the latest counts).
    unwritten_health: Mutex<HashMap<Arc<str>, HostHealthRecord>>,
    /// Held while a health row is written, so that the rows go one at a time.
    health_writer: tokio::sync::Mutex<()>,
    /// Rung when the core's next deadline may have moved earlier.
    deadline_moved: Notify,
    events: mpsc::Sender<ExecEvent>,
    central: Option<CentralOutput>,
    store: Store,
    run: RunKey,
    reconnector: Arc<Reconnector>,
    /// Where the hosts' commands' events and status requests go: the run's side of its
    /// trigger socket.
    run_socket: Option<Arc<dyn Fire>>,
    /// Deliveries, cancels, settlements and reports under way.
    tracker: TaskTracker,
}

/// What the forwarder needs besides the core.
pub(super) struct ForwarderParts {
    pub rule: LeaseRule,
    pub quarantine: QuarantineRules,
    pub events: mpsc::Sender<ExecEvent>,
    pub central: Option<CentralOutput>,
    pub store: Store,
    pub run: RunKey,
    pub reconnector: Arc<Reconnector>,
    pub run_socket: Option<Arc<dyn Fire>>,
}

impl Forwarder {
    pub(super) fn new(parts: ForwarderParts) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            core: Mutex::new(ClusterCore::new(parts.rule, parts.quarantine)),
            links: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            wall_epoch: eventor_store::now_micros(),
            unwritten_health: Mutex::new(HashMap::new()),
            health_writer: tokio::sync::Mutex::new(()),
            deadline_moved: Notify::new(),
            events: parts.events,
            central: parts.central,
            store: parts.store,
            run: parts.run,
            reconnector: parts.reconnector,
            run_socket: parts.run_socket,
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
        let adopted = link.adopted().to_vec();
        if !adopted.is_empty() {
            tracing::info!(host = %host, tasks = adopted.len(), "re-adopted the agent that outlived its prime, with its tasks");
        }
        self.links().insert(host.clone(), Arc::new(link));
        let cap = super::placement::capacity(limit.get());
        self.handle(Input::HostUp {
            host,
            cap,
            records,
            lease,
            adopted,
        });
    }

    /// `host` could not be reached at the start: away, as if lost, and brought back in
    /// the background.
    pub(super) fn host_away(self: &Arc<Self>, host: String, reason: String) {
        let host = Arc::from(host);
        self.handle(Input::HostLost { host, reason });
    }

    /// A pinned task is to run on one of `hosts` (`may_wait`: for a quarantine to end).
    pub(super) fn submit(
        self: &Arc<Self>,
        task: TaskId,
        hosts: &[Arc<str>],
        key: TaskKey,
        work: Work,
        may_wait: bool,
    ) {
        let hosts = hosts.to_vec();
        let payload = work;
        self.handle(Input::Submit {
            task,
            hosts,
            key,
            payload,
            may_wait,
        });
    }

    /// `host`'s agent could not be started while it was being brought back.
    pub(super) fn agent_failed(self: &Arc<Self>, host: &str, reason: String) {
        let host = Arc::from(host);
        self.handle(Input::AgentFailed { host, reason });
    }

    pub(super) fn cancel_all(self: &Arc<Self>) {
        self.handle(Input::CancelAll);
    }

    /// Cuts every link without a word (the prime lost contact with the store): each agent
    /// sees its prime gone and its lease starts; no host is brought back until
    /// [`Self::bring_back`].
    pub(super) fn let_go(self: &Arc<Self>, reason: &str) {
        let reason = reason.to_string();
        self.handle(Input::LetGo { reason });
        self.reconnector.cancel_attempts();
        // Dropped here or when the last delivery holding one ends: either cuts the link.
        self.links().clear();
    }

    /// The prime has its store again: the hosts it let go are brought back (re-adopting an
    /// agent still within its lease).
    pub(super) fn bring_back_let_go(self: &Arc<Self>) {
        self.handle(Input::BringBack);
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
            HostEvent::Finished { key, end, .. } => self.handle(Input::Finished { key, end }),
            HostEvent::Log { host, record } => self.log(&host, record).await,
            HostEvent::Output { host, batch } => self.output(host, batch).await,
            HostEvent::Trigger {
                host,
                id,
                event,
                sequence,
            } => self.trigger(&host, id, event, sequence).await,
            HostEvent::StatusAsk { host, id } => self.status(&host, id).await,
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
        let echoed = self.central.as_ref().is_some_and(|c| c.sink.echoes());
        match &record.task {
            // The log's writer echoes it, with the task's output.
            Some(_) if echoed => {}
            Some(task) => tracing::info!(
                target: "eventor::output",
                host = %host,
                step = %task.step,
                sequence = %task.sequence,
                stream = ?record.stream,
                "{}", record.text
            ),
            None => agent_said(host, &record),
        }
        if let Some(central) = &self.central {
            // Waiting here holds the link's reader back, and so the agent: backpressure.
            match record.task {
                Some(_) => central.sink.task_record(record).await,
                None => central.sink.record(record).await,
            };
        }
    }

    /// A host's command fires an event in the run: handed to the driver, then answered.
    async fn trigger(&self, host: &str, id: u64, event: String, sequence: String) {
        let taken = match &self.run_socket {
            Some(run) => run.fire(event, sequence).await,
            None => Err(TriggerError::RunOver.to_string()),
        };
        let link = self.links().get(host).cloned();
        if let Some(link) = link {
            let _ = link.answer_trigger(id, taken.err()).await;
        }
    }

    /// A host's command asks the run's status.
    async fn status(&self, host: &str, id: u64) {
        let status = match &self.run_socket {
            Some(run) => run.status().await,
            None => Err(TriggerError::RunOver.to_string()),
        };
        let link = self.links().get(host).cloned();
        if let Some(link) = link {
            let _ = link.answer_status(id, status).await;
        }
    }

    /// Lines of a task's output: to the console (when it shows output) and the central log.
    async fn output(&self, host: String, batch: eventor_protocol::OutputBatch) {
        crate::log::console_output(self.central.as_ref(), &host, &batch);
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
            Action::End {
                task,
                end,
                recorded,
            } => {
                // Most ends find room at once; only a full channel costs a task that waits.
                let end = ExecEvent::Finished {
                    task,
                    end,
                    recorded,
                };
                if let Err(mpsc::error::TrySendError::Full(end)) = self.events.try_send(end) {
                    let events = self.events.clone();
                    self.tracker.spawn(async move {
                        let _ = events.send(end).await;
                    });
                }
            }
            Action::Reconnect { host } => self.bring_back(host),
            Action::Health { host, health } => self.health(host, health),
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

    /// Starts reconnecting `host`; its new link takes tasks once it is up, and each attempt
    /// whose agent would not start counts against the host.
    fn bring_back(self: &Arc<Self>, host: Arc<str>) {
        let (this, failed) = (self.clone(), self.clone());
        let on_failed = move |host: &str, reason: String| failed.agent_failed(host, reason);
        self.reconnector
            .begin(host.to_string(), move |link| this.host_up(link), on_failed);
    }

    /// A host's health changed: said in the log, and written to the store (the latest
    /// state of each host, in order, so a slow write never leaves an older state last).
    fn health(self: &Arc<Self>, host: Arc<str>, health: HostHealth) {
        if let HealthState::Quarantined { until, reason } = &health.state {
            let left = until.saturating_sub(self.epoch.elapsed());
            tracing::warn!(host = %host, ends_in = %human(left), "host quarantined: {reason}");
        }
        let record = self.health_record(&host, health);
        self.unwritten_health
            .lock()
            .expect("health lock")
            .insert(host.clone(), record);
        let this = self.clone();
        self.tracker.spawn(async move {
            let _one_at_a_time = this.health_writer.lock().await;
            let record = this
                .unwritten_health
                .lock()
                .expect("health lock")
                .remove(&host);
            let Some(record) = record else {
                return; // an earlier write took the latest already
            };
            if let Err(e) = this.store.set_host_health(this.run.clone(), record).await {
                tracing::warn!(host = %host, error = %e, "recording the host's health");
            }
        });
    }

    /// The core's time `at` on the wall clock.
    fn wall(&self, at: Duration) -> Micros {
        self.wall_epoch + at.as_micros() as Micros
    }

    fn health_record(&self, host: &str, health: HostHealth) -> HostHealthRecord {
        let (state, until, reason) = match health.state {
            HealthState::Up => (HostState::Up, None, None),
            HealthState::Away { reason } => (HostState::Away, None, Some(reason)),
            HealthState::Quarantined { until, reason } => {
                (HostState::Quarantined, Some(self.wall(until)), Some(reason))
            }
        };
        let failures = health.failures.into_iter();
        HostHealthRecord {
            host: host.to_string(),
            state,
            until,
            reason,
            failures: failures.map(|f| (self.wall(f.at), f.reason)).collect(),
            updated_at: eventor_store::now_micros(),
        }
    }

    /// Ends the tasks of a lost host that are known dead: what its agent recorded stands,
    /// the rest fail.
    async fn settle(&self, host: &str, reason: &str, tasks: Vec<(TaskId, TaskKey)>) {
        let stored = self.stored_tasks().await;
        for (task, key) in tasks {
            let (end, recorded) = match stored_end(&stored, &key) {
                Some(end) => (end, true),
                None => {
                    let error = format!("host {host} lost: {reason}");
                    self.fail_lost(host, &key, error).await
                }
            };
            let end = ExecEvent::Finished {
                task,
                end,
                recorded,
            };
            let _ = self.events.send(end).await;
        }
    }

    /// Records a lost host's task failed, fenced on its being still active: its agent may
    /// still record an end (it may be alive, only cut off from us), and if it did so first,
    /// that end stands instead of aborting the run on a fenced write.
    /// The end, and whether it is in the store.
    async fn fail_lost(&self, host: &str, key: &TaskKey, error: String) -> (TaskEnd, bool) {
        let failed = TaskEnd::host_lost(error);
        let batch = Batch {
            run: self.run.clone(),
            changes: end_changes(host, key, &failed).into(),
            writer: Writer::Coordinator,
        };
        // A test holds the prime here while a cut-off agent records its end first.
        fail::fail_point!("lost-before-record");
        match self.store.commit(batch).await {
            Ok(()) => (failed, true),
            Err(StoreError::Fenced { .. }) => {
                let stored = self.stored_tasks().await;
                match stored_end(&stored, key) {
                    Some(end) => (end, true),
                    None => (failed, false),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording a lost host's task; the run will try again");
                (failed, false)
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
fn stored_end(stored: &[TaskRecord], key: &TaskKey) -> Option<TaskEnd> {
    let row = stored.iter().find(|t| {
        *t.step == *key.step && *t.sequence == *key.sequence && t.attempt == key.attempt
    })?;
    let ended = matches!(row.status, TaskStatus::Success | TaskStatus::Failure);
    let status = match row.status {
        TaskStatus::Success => EndStatus::Success,
        _ => EndStatus::Failure,
    };
    ended.then(|| TaskEnd {
        status,
        exit_code: None,
        result: row.result.clone(),
        error: row.error.clone(),
        class: row.failure_class.as_deref().and_then(|c| c.parse().ok()),
    })
}

/// An agent's own line on the prime's console, at its level, once (its host as a field).
fn agent_said(host: &str, record: &eventor_protocol::LogRecord) {
    use eventor_protocol::LogLevel;
    let text = &record.text;
    match record.level {
        LogLevel::Error => tracing::error!(host = %host, "agent: {text}"),
        LogLevel::Warn => tracing::warn!(host = %host, "agent: {text}"),
        LogLevel::Info => tracing::info!(host = %host, "agent: {text}"),
        LogLevel::Debug => tracing::debug!(host = %host, "agent: {text}"),
        LogLevel::Trace => tracing::trace!(host = %host, "agent: {text}"),
    }
}
