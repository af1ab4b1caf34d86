//! Tasks on cluster hosts: dispatch over each host's link, and the links' events back to the
//! driver as the same [`ExecEvent`]s local tasks produce. [`Remote`] is the engine's
//! [`PinnedTasks`].
//!
//! The prime commits a task as `active` before it dispatches it (commit before act, as for
//! local tasks); the [`Dispatcher`] sends it to the least busy allowed host with room, or
//! keeps it until one has (`placement.rs`), so `active` on a cluster means "running, or
//! next in line for a host". The agent records the task's end in the shared store itself and then
//! reports it; those ends reach the core as `recorded` outcomes, so the prime does not write
//! them again. When a link is lost, each of its running tasks is looked up in the store first:
//! an end the agent recorded before the link went stands; the others fail with
//! "host NAME lost: REASON", which the prime records. A dispatch that cannot be delivered
//! fails its task at once. Nothing here waits on the network without a bound: the links own
//! their heartbeats and loss detection.
//!
//! A lost host is brought back in the background ([`Reconnector`]); until it is, a task
//! that may run only there fails at once, naming the loss, so a run never waits for a host
//! that stays away. Once back, its new link takes tasks like the first one did.

use std::sync::Arc;
use std::time::Duration;

use eventor_agent::{Outcome, TaskContext};
use eventor_protocol::{TaskKey, Work};
use eventor_store::{Batch, Change, RunKey, Store, StoreError, StoreLocation, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent_mode::{agent_store, program_as_agent};
use super::connect::{open_links, ConnectOptions};
use super::dispatch::Dispatcher;
use super::hosts::HostsFile;
use super::link::HostEvent;
use super::reconnect::Reconnector;
use crate::engine::core::TaskId;
use crate::engine::events::{ExecEvent, PinnedTasks};
use crate::log::CentralOutput;

/// The run's links, and the task that turns their events into executor events.
pub struct Remote {
    dispatcher: Arc<Dispatcher>,
    reconnector: Arc<Reconnector>,
    forwarder: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    run: RunKey,
}

/// How to reach the hosts of a run.
pub struct RemoteConfig<'a> {
    pub hosts: &'a HostsFile,
    /// The hosts the flow's steps name.
    pub names: Vec<String>,
    pub connect: ConnectOptions,
    pub central: Option<CentralOutput>,
    pub store: Store,
    pub run: RunKey,
}

impl Remote {
    /// Connects to every host at once and starts forwarding their events. Any host that
    /// cannot be reached fails the whole start, naming each host and why.
    pub async fn connect(
        config: RemoteConfig<'_>,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<Remote, String> {
        let shutdown = CancellationToken::new();
        let (host_tx, host_rx) = mpsc::channel(1024);
        let results = open_links(
            config.hosts,
            &config.names,
            &config.connect,
            host_tx.clone(),
            &shutdown,
        )
        .await;
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(link) => links.push(link),
                Err(e) => failures.push(eventor_agent::util::error_chain(&e)),
            }
        }
        if !failures.is_empty() {
            shutdown.cancel();
            return Err(failures.join("; "));
        }
        let dispatcher = Arc::new(Dispatcher::new(events.clone()));
        for link in links {
            dispatcher.host_up(Arc::from(link.host()), link);
        }
        let reconnector = Arc::new(Reconnector::new(
            config.hosts.clone(),
            config.connect,
            host_tx,
            shutdown.clone(),
        ));
        let forwarder = Forwarder {
            dispatcher: dispatcher.clone(),
            reconnector: reconnector.clone(),
            events,
            central: config.central,
            store: config.store,
            run: config.run.clone(),
        };
        let forwarder = tokio::spawn(forwarder.run(host_rx, shutdown.clone()));
        Ok(Remote {
            dispatcher,
            reconnector,
            forwarder,
            shutdown,
            run: config.run,
        })
    }

    /// Tells every agent the run is over (running tasks finish first), waits for the links
    /// to end (at most `grace` each), then stops forwarding.
    pub async fn shutdown(self, grace: Duration) {
        self.reconnector.stop().await; // no link comes back from here on
        for link in self.dispatcher.links() {
            let _ = link.shutdown("the run is over").await;
        }
        let links = self.dispatcher.close().await; // no delivery holds a link any more
        for link in links {
            if let Ok(link) = Arc::try_unwrap(link) {
                let _ = link.join(grace).await;
            }
        }
        self.shutdown.cancel();
        let _ = self.forwarder.await;
    }
}

impl PinnedTasks for Remote {
    /// Sends a task to the least busy of `hosts` with room, or keeps it until one has.
    fn start(&self, task: TaskId, hosts: &[Arc<str>], work: Work, ctx: &TaskContext) {
        let key = TaskKey {
            run_id: ctx.run_id.to_string(),
            step: ctx.step.to_string(),
            sequence: ctx.sequence.to_string(),
            recovery: ctx.recovery,
            attempt: ctx.attempt,
        };
        self.dispatcher.submit(hosts, task, key, work);
    }

    fn cancel_all(&self) {
        self.dispatcher.cancel_all(&self.run);
    }
}

/// Turns host events into executor events.
struct Forwarder {
    dispatcher: Arc<Dispatcher>,
    reconnector: Arc<Reconnector>,
    events: mpsc::Sender<ExecEvent>,
    central: Option<CentralOutput>,
    store: Store,
    run: RunKey,
}

impl Forwarder {
    async fn run(self, mut host_events: mpsc::Receiver<HostEvent>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                event = host_events.recv() => event,
                _ = shutdown.cancelled() => None,
            };
            let Some(event) = event else { break };
            self.handle(event).await;
        }
    }

    async fn handle(&self, event: HostEvent) {
        match event {
            HostEvent::Started { host, key, pid } => {
                // Not stored: the agent may record the task's end before the prime could
                // commit the pid, and a pid is not worth a race with the task's real end.
                tracing::debug!(host = %host, step = %key.step, sequence = %key.sequence, pid, "started");
            }
            HostEvent::Ran { key, .. } => self.dispatcher.ran(&key),
            HostEvent::Finished {
                key,
                status,
                result,
                error,
                ..
            } => {
                let Some(flight) = self.dispatcher.finished(&key) else {
                    return;
                };
                let success = status == eventor_protocol::Outcome::Success;
                let outcome = Outcome {
                    success,
                    result,
                    error,
                    recorded: flight.recorded,
                };
                self.send(ExecEvent::Finished {
                    task: flight.task,
                    outcome,
                })
                .await;
            }
            HostEvent::Log { host, record } => self.log(&host, record).await,
            HostEvent::Output { host, batch } => self.output(host, batch).await,
            HostEvent::AgentError { host, key, message } => {
                tracing::warn!(host = %host, "agent: {message}");
                if let Some(key) = key {
                    self.dispatcher.unrecorded(&key);
                }
            }
            HostEvent::Lost { host, reason } => self.lost(&host, &reason).await,
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

    /// Ends every task of a lost host: what its agent recorded stands, the rest fail.
    async fn lost(&self, host: &str, reason: &str) {
        tracing::error!(host = %host, %reason, "host lost");
        let (first, flights) = self.dispatcher.host_lost(host, reason);
        if first {
            self.bring_back(host);
        }
        if flights.is_empty() {
            return;
        }
        let stored = self.stored_tasks().await;
        for ((step, sequence, attempt), flight) in flights {
            let outcome = match stored_end(&stored, &step, &sequence, attempt) {
                Some(outcome) => outcome,
                None => {
                    let error = format!("host {host} lost: {reason}");
                    self.fail_lost(host, (&step, &sequence, attempt), error)
                        .await
                }
            };
            self.send(ExecEvent::Finished {
                task: flight.task,
                outcome,
            })
            .await;
        }
    }

    /// Records a lost host's task failed, fenced on its being still active: its agent may
    /// still record an end (it may be alive, only cut off from us), and if it did so first,
    /// that end stands instead of aborting the run on a fenced write.
    async fn fail_lost(
        &self,
        host: &str,
        (step, sequence, attempt): (&str, &str, i32),
        error: String,
    ) -> Outcome {
        let (step, sequence): (Arc<str>, Arc<str>) = (Arc::from(step), Arc::from(sequence));
        let ran_on = Change::TaskHost {
            step: step.clone(),
            sequence: sequence.clone(),
            attempt,
            host: Arc::from(host),
        };
        let failed = Change::TaskTransition {
            step: step.clone(),
            sequence: sequence.clone(),
            attempt,
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
                stored_end(&stored, &step, &sequence, attempt)
                    .unwrap_or_else(|| Outcome::failure(error))
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording a lost host's task; the run will try again");
                Outcome::failure(error)
            }
        }
    }

    /// Starts reconnecting `host`; its new link takes tasks once it is up.
    fn bring_back(&self, host: &str) {
        let dispatcher = self.dispatcher.clone();
        let name: Arc<str> = Arc::from(host);
        self.reconnector
            .begin(host.to_string(), move |link| dispatcher.host_up(name, link));
    }

    /// The run's stored tasks, read again (with a growing pause) while the store fails: an
    /// end the agent recorded must be found, never overwritten by a guess.
    async fn stored_tasks(&self) -> Vec<eventor_store::TaskRecord> {
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

    async fn send(&self, event: ExecEvent) {
        let _ = self.events.send(event).await;
    }
}

/// The end of task attempt (`step`, `sequence`, `attempt`) as stored, if it has one.
fn stored_end(
    stored: &[eventor_store::TaskRecord],
    step: &str,
    sequence: &str,
    attempt: i32,
) -> Option<Outcome> {
    let row = stored
        .iter()
        .find(|t| &*t.step == step && &*t.sequence == sequence && t.attempt == attempt)?;
    let ended = matches!(row.status, TaskStatus::Success | TaskStatus::Failure);
    ended.then(|| Outcome {
        success: row.status == TaskStatus::Success,
        result: row.result.clone(),
        error: row.error.clone(),
        recorded: true,
    })
}

/// Where pinned steps run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: HostsFile,
    /// A host silent for this long is lost (its running tasks fail); at most 10 s.
    pub lost_after: Duration,
}

/// What a run needs of the cluster: its hosts, the store its agents record in, and where
/// their events go.
pub struct RunCluster<'a> {
    pub cluster: &'a ClusterOptions,
    /// The hosts the flow's steps are pinned to (sorted, no repeats); empty: no cluster.
    pub names: Vec<String>,
    /// Whether closure steps run remotely (then the program itself is every host's agent).
    pub remote_closures: bool,
    pub location: &'a StoreLocation,
    pub store: Store,
    pub run: RunKey,
    pub central: Option<CentralOutput>,
}

impl Remote {
    /// Connects to the run's hosts, all at once, with the right agent on each.
    pub async fn for_run(
        run: RunCluster<'_>,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<Remote, String> {
        // The store goes to each agent in the handshake, never on its command line.
        let (hosts, install) = if run.remote_closures {
            let (hosts, program) = program_as_agent(&run.cluster.hosts)?;
            (hosts, Some(program))
        } else {
            (run.cluster.hosts.clone(), None)
        };
        let mut connect = ConnectOptions::new(run.run.run_id.to_string(), Vec::new());
        connect.settings.lost_after = run.cluster.lost_after;
        connect.store = Some(agent_store(run.location));
        connect.install = install;
        let config = RemoteConfig {
            hosts: &hosts,
            names: run.names,
            connect,
            central: run.central,
            store: run.store,
            run: run.run,
        };
        Remote::connect(config, events).await
    }
}
