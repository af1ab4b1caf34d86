//! Tasks on cluster hosts: dispatch over each host's link, and the links' events back to the
//! driver as the same [`ExecEvent`]s local tasks produce. [`Remote`] is the engine's
//! [`PinnedTasks`].
//!
//! The prime commits a task as `active` before it dispatches it (commit before act, as for
//! local tasks). The agent records the task's end in the shared store itself and then
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventor_agent::{Outcome, TaskContext};
use eventor_protocol::{Dispatch, TaskKey, Work};
use eventor_store::{RunKey, Store, StoreLocation, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::agent_mode::{agent_store, program_as_agent};
use super::hosts::HostsFile;
use super::link::{connect_hosts, ConnectOptions, HostEvent, HostLink};
use super::reconnect::Reconnector;
use crate::engine::core::TaskId;
use crate::engine::events::{ExecEvent, PinnedTasks};
use crate::log::CentralOutput;

/// What a task on a host is, for the events that come back.
struct InFlight {
    task: TaskId,
    host: Arc<str>,
    /// Whether its end will be in the store when it is reported.
    recorded: bool,
}

/// Task attempts are keyed by (step, sequence, attempt): the run and recovery are the run's.
type Key = (String, String, i32);

fn key_of(key: &TaskKey) -> Key {
    (key.step.clone(), key.sequence.clone(), key.attempt)
}

/// A host's current link.
struct Live {
    link: Arc<HostLink>,
    /// Its agent records each task's end itself.
    records: bool,
}

impl Live {
    fn new(link: HostLink) -> Live {
        let records = link.records_results();
        Live {
            link: Arc::new(link),
            records,
        }
    }
}

#[derive(Default)]
struct Shared {
    in_flight: HashMap<Key, InFlight>,
    load: HashMap<Arc<str>, usize>,
    links: HashMap<Arc<str>, Live>,
    /// Hosts being brought back, with why they were lost.
    away: HashMap<Arc<str>, String>,
}

/// The run's links, and the task that turns their events into executor events.
pub struct Remote {
    shared: Arc<Mutex<Shared>>,
    reconnector: Arc<Reconnector>,
    events: mpsc::Sender<ExecEvent>,
    /// Dispatches and reports under way.
    tracker: TaskTracker,
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
        let results = connect_hosts(
            config.hosts,
            &config.names,
            &config.connect,
            host_tx.clone(),
            &shutdown,
        )
        .await;
        let mut links = HashMap::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(link) => {
                    links.insert(Arc::from(link.host()), Live::new(link));
                }
                Err(e) => failures.push(eventor_agent::util::error_chain(&e)),
            }
        }
        if !failures.is_empty() {
            shutdown.cancel();
            return Err(failures.join("; "));
        }
        let shared = Arc::new(Mutex::new(Shared {
            links,
            ..Shared::default()
        }));
        let reconnector = Arc::new(Reconnector::new(
            config.hosts.clone(),
            config.connect,
            host_tx,
            shutdown.clone(),
        ));
        let forwarder = Forwarder {
            shared: shared.clone(),
            reconnector: reconnector.clone(),
            events: events.clone(),
            central: config.central,
            store: config.store,
            run: config.run.clone(),
        };
        let forwarder = tokio::spawn(forwarder.run(host_rx, shutdown.clone()));
        Ok(Remote {
            shared,
            reconnector,
            events,
            tracker: TaskTracker::new(),
            forwarder,
            shutdown,
            run: config.run,
        })
    }

    /// The least busy of `hosts` whose link is up, or why none is.
    fn choose(&self, hosts: &[Arc<str>]) -> Result<(Arc<str>, Arc<HostLink>, bool), String> {
        let shared = self.shared.lock().expect("remote state lock");
        let up = hosts
            .iter()
            .filter_map(|h| shared.links.get(h).map(|live| (h, live)))
            .filter(|(_, live)| live.link.lost().is_none())
            .min_by_key(|(h, _)| shared.load.get(*h).copied().unwrap_or(0));
        if let Some((host, live)) = up {
            return Ok((host.clone(), live.link.clone(), live.records));
        }
        let away: Vec<String> = hosts
            .iter()
            .filter_map(|h| shared.away.get(h).map(|why| format!("{h} lost: {why}")))
            .collect();
        let mut error = format!("no link to any of {hosts:?}");
        if !away.is_empty() {
            error += &format!(" ({}; reconnecting)", away.join("; "));
        }
        Err(error)
    }

    fn report(&self, event: ExecEvent) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let _ = events.send(event).await;
        });
    }

    /// Tells every agent the run is over (running tasks finish first), waits for the links
    /// to end (at most `grace` each), then stops forwarding.
    pub async fn shutdown(self, grace: Duration) {
        self.reconnector.stop().await; // no link comes back from here on
        let links: Vec<Arc<HostLink>> = {
            let mut shared = self.shared.lock().expect("remote state lock");
            shared.links.drain().map(|(_, live)| live.link).collect()
        };
        for link in &links {
            let _ = link.shutdown("the run is over").await;
        }
        self.tracker.close();
        self.tracker.wait().await; // no dispatch holds a link any more
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
    /// Dispatches a task to the least busy of `hosts`.
    fn start(&self, task: TaskId, hosts: &[Arc<str>], work: Work, ctx: &TaskContext) {
        let key = TaskKey {
            run_id: ctx.run_id.to_string(),
            step: ctx.step.to_string(),
            sequence: ctx.sequence.to_string(),
            recovery: ctx.recovery,
            attempt: ctx.attempt,
        };
        let (host, link, recorded) = match self.choose(hosts) {
            Ok(chosen) => chosen,
            Err(error) => {
                let outcome = Outcome::failure(error);
                self.report(ExecEvent::Finished { task, outcome });
                return;
            }
        };
        {
            let mut shared = self.shared.lock().expect("remote state lock");
            *shared.load.entry(host.clone()).or_default() += 1;
            let flight = InFlight {
                task,
                host: host.clone(),
                recorded,
            };
            shared.in_flight.insert(key_of(&key), flight);
        }
        let dispatch = Dispatch {
            key: key.clone(),
            work,
        };
        let (shared, events) = (self.shared.clone(), self.events.clone());
        self.tracker.spawn(async move {
            if let Err(e) = link.dispatch(dispatch).await {
                if take(&shared, &key).is_some() {
                    let outcome = Outcome::failure(format!("cannot dispatch to {host}: {e}"));
                    let _ = events.send(ExecEvent::Finished { task, outcome }).await;
                }
            }
        });
    }

    /// Sends `Cancel` for every task in flight; each agent stops its command's group and
    /// answers with the task's end, which comes back as usual.
    fn cancel_all(&self) {
        let keys: Vec<(Key, Arc<HostLink>)> = {
            let shared = self.shared.lock().expect("remote state lock");
            let flights = shared.in_flight.iter();
            let linked = flights.filter_map(|(k, f)| Some((k, shared.links.get(&f.host)?)));
            linked
                .map(|(k, live)| (k.clone(), live.link.clone()))
                .collect()
        };
        for ((step, sequence, attempt), link) in keys {
            let key = TaskKey {
                run_id: self.run.run_id.to_string(),
                step,
                sequence,
                recovery: self.run.recovery,
                attempt,
            };
            self.tracker.spawn(async move {
                let _ = link.cancel(key).await;
            });
        }
    }
}

/// Removes a task from the in-flight table (and its host's load).
fn take(shared: &Mutex<Shared>, key: &TaskKey) -> Option<InFlight> {
    let mut shared = shared.lock().expect("remote state lock");
    let flight = shared.in_flight.remove(&key_of(key))?;
    if let Some(load) = shared.load.get_mut(&flight.host) {
        *load = load.saturating_sub(1);
    }
    Some(flight)
}

/// Turns host events into executor events.
struct Forwarder {
    shared: Arc<Mutex<Shared>>,
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
            HostEvent::Finished {
                key,
                status,
                result,
                error,
                ..
            } => {
                let Some(flight) = take(&self.shared, &key) else {
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
                    // The agent could not record this task's end: the prime will.
                    let mut shared = self.shared.lock().expect("remote state lock");
                    if let Some(flight) = shared.in_flight.get_mut(&key_of(&key)) {
                        flight.recorded = false;
                    }
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
        self.bring_back(host, reason);
        let flights: Vec<(Key, InFlight)> = {
            let mut shared = self.shared.lock().expect("remote state lock");
            let keys: Vec<Key> = shared
                .in_flight
                .iter()
                .filter(|(_, f)| &*f.host == host)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| shared.in_flight.remove(&k).map(|f| (k, f)))
                .collect()
        };
        if flights.is_empty() {
            return;
        }
        let stored = self.stored_tasks().await;
        for ((step, sequence, attempt), flight) in flights {
            let row = stored
                .iter()
                .find(|t| t.step == step && t.sequence == sequence && t.attempt == attempt);
            let outcome = match row.map(|t| t.status) {
                Some(status @ (TaskStatus::Success | TaskStatus::Failure)) => Outcome {
                    success: status == TaskStatus::Success,
                    result: row.and_then(|t| t.result.clone()),
                    error: row.and_then(|t| t.error.clone()),
                    recorded: true,
                },
                _ => Outcome::failure(format!("host {host} lost: {reason}")),
            };
            self.send(ExecEvent::Finished {
                task: flight.task,
                outcome,
            })
            .await;
        }
    }

    /// Starts reconnecting `host` (unless it is already under way); its new link replaces
    /// the lost one when it is up.
    fn bring_back(&self, host: &str, reason: &str) {
        let host: Arc<str> = Arc::from(host);
        {
            let mut shared = self.shared.lock().expect("remote state lock");
            if shared
                .away
                .insert(host.clone(), reason.to_string())
                .is_some()
            {
                return;
            }
        }
        let shared = self.shared.clone();
        self.reconnector.begin(host.to_string(), move |link| {
            let mut shared = shared.lock().expect("remote state lock");
            shared.away.remove(&host);
            shared.links.insert(host, Live::new(link));
        });
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
        connect.lost_after = run.cluster.lost_after;
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
