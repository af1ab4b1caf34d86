//! Tasks on cluster hosts: dispatch over each host's link, and the links' events back to the
//! driver as the same [`ExecEvent`]s local tasks produce. [`Remote`] is the engine's
//! [`PinnedTasks`].
//!
//! The prime commits a task as `active` before it dispatches it (commit before act, as for
//! local tasks); the cluster's core (`core.rs`) sends it to the least busy allowed host
//! with room, or keeps it until one has (`placement.rs`), so `active` on a cluster means "running, or
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

use eventor_agent::TaskContext;
use eventor_protocol::{TaskKey, Work};
use eventor_store::{RunKey, Store, StoreLocation};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent_mode::{agent_store, program_as_agent, ScriptAgent};
use super::connect::{open_links, ClusterSettings};
use super::core::LeaseRule;
use super::error::ClusterError;
use super::forwarder::{Forwarder, ForwarderParts};
use super::hosts::HostsFile;
use super::link::{HostLink, LinkError};
use super::quarantine::QuarantineRules;
use super::reconnect::Reconnector;
use crate::engine::core::TaskId;
use crate::engine::events::{ExecEvent, PinnedTasks};
use crate::log::CentralOutput;

/// The run's links, and the task that turns their events into executor events.
pub struct Remote {
    forwarder: Arc<Forwarder>,
    reconnector: Arc<Reconnector>,
    forwarding: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

/// What a run needs of the cluster: its settings, its hosts, the store its agents record in,
/// and where their output goes.
pub struct RunCluster {
    pub settings: ClusterSettings,
    /// The hosts the flow's steps are pinned to (sorted, no repeats).
    pub names: Vec<String>,
    pub central: Option<CentralOutput>,
    pub store: Store,
    pub run: RunKey,
    /// Where the hosts' commands' events and status requests go (`eventor-coord trigger`
    /// and `status` in a task): the run's side of its trigger socket.
    pub run_socket: Option<Arc<dyn eventor_agent::trigger_socket::Fire>>,
    /// The run's cancellation root: the cluster's own token is its child, so a run that
    /// ends (or whose future is dropped) stops every link and attempt below it.
    pub root: CancellationToken,
}

impl Remote {
    /// Connects to every host at once and starts forwarding their events. A host that
    /// cannot be reached for a network reason is away from the start (as if lost: its
    /// tasks go elsewhere or fail naming it, and it is brought back in the background);
    /// any other failure (a refused login, a changed host key, …) fails the whole start,
    /// naming each host and why.
    pub async fn connect(
        run: RunCluster,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<Remote, ClusterError> {
        let shutdown = run.root.child_token();
        let (host_tx, host_rx) = mpsc::channel(1024);
        let settings = Arc::new(run.settings);
        let results = open_links(&settings, &run.names, host_tx.clone(), &shutdown).await;
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(link) => links.push(link),
                Err(e) => failures.push(e),
            }
        }
        // A host down for a network reason is away, as one lost mid-run would be; any
        // other failure is a mistake that stops the run before it starts.
        let away = away_hosts(&failures);
        if away.len() < failures.len() {
            shutdown.cancel();
            return Err(ClusterError::Unreachable(failures));
        }
        let rule = lease_rule(settings.link.heartbeat);
        let reconnector = Arc::new(Reconnector::new(
            settings.clone(),
            host_tx,
            shutdown.clone(),
        ));
        let forwarder = Forwarder::new(ForwarderParts {
            rule,
            quarantine: quarantine_rules(&settings.hosts),
            events,
            central: run.central,
            store: run.store,
            run: run.run,
            reconnector: reconnector.clone(),
            run_socket: run.run_socket,
        });
        for link in links {
            forwarder.host_up(link);
        }
        for (host, reason) in away {
            tracing::warn!(host = %host, %reason, "host down at the start: the run goes on without it, and it is tried again in the background");
            forwarder.host_away(host, reason);
        }
        let forwarding = tokio::spawn(forwarder.clone().run(host_rx, shutdown.clone()));
        Ok(Remote {
            forwarder,
            reconnector,
            forwarding,
            shutdown,
        })
    }

    /// Tells every agent the run is over (running tasks finish first), waits for the links
    /// to end (at most `grace` each), then stops forwarding.
    pub async fn shutdown(self, grace: Duration) {
        self.reconnector.stop().await; // no link comes back from here on
        for link in self.forwarder.all_links() {
            let _ = link.shutdown("the run is over").await;
        }
        let links = self.forwarder.close().await; // no delivery holds a link any more
        for link in links {
            match alone(link, grace).await {
                Ok(link) => {
                    let _ = link.join(grace).await;
                }
                // Still held elsewhere: at least its agent's last lines are read.
                Err(shared) => {
                    tracing::warn!(host = %shared.host(), "a link is still held at the run's end");
                    shared.last_lines(grace).await;
                }
            }
        }
        self.shutdown.cancel();
        let _ = self.forwarding.await;
    }
}

/// The link once nothing else holds it (a report being answered may, for a moment), within
/// `grace`: joined, it reads the agent's last lines; dropped, it would cut them off.
async fn alone(mut link: Arc<HostLink>, grace: Duration) -> Result<HostLink, Arc<HostLink>> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match Arc::try_unwrap(link) {
            Ok(link) => return Ok(link),
            Err(shared) if tokio::time::Instant::now() >= deadline => return Err(shared),
            Err(shared) => link = shared,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The hosts whose start failed for a network reason, with the reason.
fn away_hosts(failures: &[LinkError]) -> Vec<(String, String)> {
    let network = failures.iter().filter(|e| e.is_network());
    network
        .filter_map(|e| Some((e.host()?.to_string(), eventor_agent::util::error_chain(e))))
        .collect()
}

/// The margin a lost host's lease gets: the agent's stop (at most the protocol's
/// `LEASE_STOP_GRACE`), two heartbeats for the frames in flight, and a second for the two
/// clocks' rates; its floor: how long an agent waits on a silent prime (the agent's rule in
/// `eventor_agent::runtime`, with its default wait).
fn lease_rule(heartbeat: Duration) -> LeaseRule {
    let margin = eventor_protocol::LEASE_STOP_GRACE + heartbeat * 2 + Duration::from_secs(1);
    let floor = (heartbeat * 3).max(eventor_protocol::MAX_LOST_AFTER + heartbeat);
    LeaseRule { margin, floor }
}

/// Each host's quarantine rule, as its hosts file says.
fn quarantine_rules(hosts: &HostsFile) -> QuarantineRules {
    let each = hosts.hosts.iter();
    QuarantineRules {
        default: Default::default(),
        hosts: each
            .map(|h| (Arc::from(h.name.as_str()), h.quarantine))
            .collect(),
    }
}

/// How long a task an earlier coordinator left running on any of `names` may still run
/// there: its agent's lease (at least the agent's wait for a silent prime) and the margin,
/// counted from when that coordinator was gone.
pub fn lease_wait(hosts: &HostsFile, names: &[String]) -> Duration {
    let rule = lease_rule(super::link::LinkSettings::default().heartbeat);
    let lease_of = |name: &String| hosts.host(name).map(|h| h.lease).unwrap_or_default();
    let longest = names.iter().map(lease_of).max().unwrap_or_default();
    rule.floor.max(longest) + rule.margin
}

impl PinnedTasks for Remote {
    /// Sends a task to the least busy of `hosts` with room, or keeps it until one has.
    fn start(
        &self,
        task: TaskId,
        hosts: &[Arc<str>],
        work: Work,
        ctx: &TaskContext,
        may_wait: bool,
    ) {
        let key = TaskKey {
            run_id: ctx.run_id.to_string(),
            step: ctx.step.to_string(),
            sequence: ctx.sequence.to_string(),
            recovery: ctx.recovery,
            attempt: ctx.attempt,
        };
        self.forwarder.submit(task, hosts, key, work, may_wait);
    }

    fn cancel_all(&self) {
        self.forwarder.cancel_all();
    }

    fn let_go(&self, reason: &str) {
        self.forwarder.let_go(reason);
    }

    fn bring_back(&self) {
        self.forwarder.bring_back_let_go();
    }
}

/// Where pinned steps run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: HostsFile,
    /// A host silent for this long is lost (its running tasks fail); at most 10 s.
    pub lost_after: Duration,
    /// With remote closure steps: the interpreter and script that are this program, when
    /// it is a script (a Python program), else `None` (this executable).
    pub script: Option<ScriptAgent>,
}

impl ClusterSettings {
    /// A run's settings from the cluster options: the run's store sent to every agent in
    /// its handshake (never on its command line), and with remote closure steps this
    /// program itself as every host's agent.
    pub fn for_run(
        cluster: &ClusterOptions,
        run_id: &str,
        location: &StoreLocation,
        remote_closures: bool,
    ) -> Result<ClusterSettings, ClusterError> {
        let (hosts, install) = if remote_closures {
            program_as_agent(&cluster.hosts, cluster.script.as_ref())?
        } else {
            (cluster.hosts.clone(), None)
        };
        let mut settings = ClusterSettings::new(hosts, run_id);
        settings.link.lost_after = cluster.lost_after;
        let (store, tls) = agent_store(location).map_err(ClusterError::StoreTls)?;
        settings.store = Some(store);
        settings.store_tls = tls;
        settings.install = install;
        Ok(settings)
    }
}
