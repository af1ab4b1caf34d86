//! A recovery's or continue's first act on a cluster: the agents its dead predecessor left
//! running on hosts, re-adopted and followed until the tasks they still answer for end.
//!
//! A prime killed with `kill -9` leaves its agents running their tasks for their lease,
//! each waiting on a private socket for the next prime (see `eventor_agent::adopt`). The
//! recovery reaches those hosts first, before it decides anything: each one's survivor
//! hands over the attempts it still answers for, their output held so far (into the
//! central log, in order) and then their ends, which its agent recorded in the store (or,
//! for an agent that cannot reach the store, which are recorded here, fenced). Only then
//! does the recovery read the tasks and decide, so it reruns nothing still running and
//! sees every end. A host where no survivor answers is returned: its old agent may still
//! run cut off, so the caller waits its lease out as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::end_changes;
use eventor_agent::util::error_chain;
use eventor_protocol::{TaskEnd, TaskKey};
use eventor_store::{Batch, RunKey, Store, StoreError, Writer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connect::{open_links, ClusterSettings};
use super::link::{HostEvent, HostLink};
use crate::log::CentralOutput;

/// How long a re-adopted agent gets to end its link once its tasks are over.
const LINK_END_GRACE: Duration = Duration::from_secs(5);

/// What [`drain_survivors`] found.
#[derive(Debug, Default)]
pub struct Drained {
    /// Hosts where no agent of the run answered: their leases still stand.
    pub not_found: Vec<String>,
    /// The attempts re-adopted, whose ends were then seen.
    pub adopted: usize,
}

/// Re-adopts the agents of `settings.run_id` on `hosts` and follows them until every
/// attempt they answered for has ended (or their link was lost, or `stop` fired). The links
/// live under `root`, the run's cancellation root.
pub async fn drain_survivors(
    settings: &ClusterSettings,
    hosts: &[String],
    central: Option<&CentralOutput>,
    store: &Store,
    stop: &CancellationToken,
    root: &CancellationToken,
) -> Drained {
    let settings = ClusterSettings {
        adopt: true,
        ..settings.clone()
    };
    let (events, mut received) = mpsc::channel(1024);
    let links_token = root.child_token();
    let results = open_links(&settings, hosts, events, &links_token).await;
    let mut drained = Drained::default();
    let mut follow = Following::default();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(link) if !link.adopted().is_empty() => follow.add(link),
            Ok(link) => {
                let _ = link
                    .shutdown("no task of the run's last coordinator here")
                    .await;
                drained.not_found.push(host.clone());
            }
            Err(error) => {
                tracing::warn!(host = %host, error = %error_chain(&error), "cannot reach the host to re-adopt its agent");
                drained.not_found.push(host.clone());
            }
        }
    }
    drained.adopted = follow.waiting.len();
    if drained.adopted > 0 {
        tracing::info!(tasks = drained.adopted, "re-adopted tasks of the run's last coordinator: following them to their end before deciding");
    }
    while !follow.waiting.is_empty() {
        let event = tokio::select! {
            event = received.recv() => event,
            _ = stop.cancelled() => break,
        };
        let Some(event) = event else { break };
        if let Some(lost) = follow
            .on_event(event, central, store, &settings.run_id)
            .await
        {
            drained.not_found.push(lost);
        }
    }
    follow.end().await;
    links_token.cancel();
    drained
}

/// The re-adopted links and the attempts still awaited.
#[derive(Default)]
struct Following {
    links: Vec<HostLink>,
    /// Attempt → its host.
    waiting: HashMap<TaskKey, String>,
    /// Hosts whose agent records its tasks' ends itself.
    records: HashSet<String>,
}

impl Following {
    fn add(&mut self, link: HostLink) {
        let host = link.host().to_string();
        for key in link.adopted() {
            self.waiting.insert(key.clone(), host.clone());
        }
        if link.records_results() {
            self.records.insert(host);
        }
        self.links.push(link);
    }

    /// Passes output on and notes ends; answers a host whose link was lost (its attempts
    /// are no longer followed: their lease stands).
    async fn on_event(
        &mut self,
        event: HostEvent,
        central: Option<&CentralOutput>,
        store: &Store,
        run_id: &str,
    ) -> Option<String> {
        match event {
            HostEvent::Output { host, batch } => {
                crate::log::console_output(central, &host, &batch);
                if let Some(central) = central {
                    central.sink.output(Arc::from(host), batch).await;
                }
            }
            HostEvent::Log { record, .. } => {
                if let Some(central) = central {
                    central.sink.record(record).await;
                }
            }
            HostEvent::Finished { host, key, end } => {
                if self.waiting.remove(&key).is_some() && !self.records.contains(&host) {
                    record_end(store, run_id, &host, &key, &end).await;
                }
            }
            HostEvent::Lost { host, reason } => {
                tracing::warn!(host = %host, %reason, "lost the re-adopted agent");
                self.waiting.retain(|_, h| *h != host);
                return Some(host);
            }
            HostEvent::AgentError { host, message, .. } => {
                tracing::warn!(host = %host, "agent: {message}");
            }
            HostEvent::Trigger { host, id, .. } => {
                // No driver runs yet: the recovery decides once these tasks are over.
                let why = "the run is being recovered: no event can be fired until it is";
                if let Some(link) = self.links.iter().find(|l| l.host() == host) {
                    let _ = link.answer_trigger(id, Some(why.to_string())).await;
                }
            }
            HostEvent::StatusAsk { host, id } => {
                let why = "the run is being recovered: its status is not settled yet";
                if let Some(link) = self.links.iter().find(|l| l.host() == host) {
                    let _ = link.answer_status(id, Err(why.to_string())).await;
                }
            }
            HostEvent::Started { .. } | HostEvent::Ran { .. } => {}
        }
        None
    }

    /// Tells every re-adopted agent the run's last coordinator is done with it.
    async fn end(self) {
        for link in &self.links {
            let _ = link.shutdown("its tasks were followed to their end").await;
        }
        for link in self.links {
            let _ = link.join(LINK_END_GRACE).await;
        }
    }
}

/// Records the end an agent that cannot reach the store reported, fenced on the attempt
/// being still active (a recovery of the run is the only other writer, and it waits).
async fn record_end(store: &Store, run_id: &str, host: &str, key: &TaskKey, end: &TaskEnd) {
    let batch = Batch {
        run: RunKey {
            run_id: run_id.into(),
            recovery: key.recovery,
        },
        changes: end_changes(host, key, end).into(),
        // An earlier recovery's row, written by the one that adopted its agent.
        writer: Writer::Other,
    };
    match store.commit(batch).await {
        Ok(()) | Err(StoreError::Fenced { .. }) => {}
        Err(e) => {
            tracing::warn!(task = %key, error = %error_chain(&e), "cannot record a re-adopted task's end")
        }
    }
}
