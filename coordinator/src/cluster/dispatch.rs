//! Sending pinned tasks to hosts: the run's table of links, of tasks in flight and of tasks
//! waiting for room ([`Placement`]), and the one place that hands a task to a link.
//!
//! Every change of the table goes through [`Dispatcher`] under one lock, and each change
//! that may free room (an end, a host back, a host lost) sends whatever waited for it before
//! the lock is let go, so no waiting task is forgotten. A task that cannot go anywhere (no
//! allowed host is up) fails at once, naming why; so does one whose delivery fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use eventor_agent::{MaxConcurrent, Outcome};
use eventor_protocol::{Dispatch, TaskKey, Work};
use eventor_store::RunKey;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::link::HostLink;
use super::placement::{capacity, Place, Placement};
use crate::engine::core::TaskId;
use crate::engine::events::ExecEvent;

/// What a task on a host is, for the events that come back.
pub(super) struct InFlight {
    pub task: TaskId,
    pub host: Arc<str>,
    /// Whether its end will be in the store when it is reported.
    pub recorded: bool,
    /// Its work is over on the host (`TaskRan`): it no longer counts against the host's room.
    pub ran: bool,
}

/// Task attempts are keyed by (step, sequence, attempt): the run and recovery are the run's.
pub(super) type Key = (String, String, i32);

fn key_of(key: &TaskKey) -> Key {
    (key.step.clone(), key.sequence.clone(), key.attempt)
}

/// A host's current link.
struct Live {
    link: Arc<HostLink>,
    /// Its agent records each task's end itself.
    records: bool,
}

/// A task waiting for room on one of its hosts.
pub(super) struct Pending {
    task: TaskId,
    key: TaskKey,
    work: Work,
}

#[derive(Default)]
struct Table {
    in_flight: HashMap<Key, InFlight>,
    links: HashMap<Arc<str>, Live>,
    /// Hosts being brought back, with why they were lost.
    away: HashMap<Arc<str>, String>,
    placement: Placement<Pending>,
}

/// The table and what acts on it.
pub(super) struct Dispatcher {
    table: Mutex<Table>,
    events: mpsc::Sender<ExecEvent>,
    /// Deliveries and reports under way.
    tracker: TaskTracker,
}

impl Dispatcher {
    pub(super) fn new(events: mpsc::Sender<ExecEvent>) -> Dispatcher {
        Dispatcher {
            table: Mutex::new(Table::default()),
            events,
            tracker: TaskTracker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("dispatch table lock")
    }

    /// `host` is up with `link` (at the start, or back after a loss); waiting tasks may go.
    pub(super) fn host_up(self: &Arc<Self>, host: Arc<str>, link: HostLink) {
        let limit = MaxConcurrent::from_wire(link.accepted().limits.max_concurrent_tasks);
        let live = Live {
            records: link.records_results(),
            link: Arc::new(link),
        };
        let mut table = self.lock();
        table.away.remove(&host);
        table.placement.up(host.clone(), capacity(limit.get()));
        table.links.insert(host, live);
        self.pump(&mut table);
    }

    /// `host` was lost for `reason`: takes its tasks in flight (for the caller to end) and
    /// fails the waiting tasks that have no other host. Answers whether the host was not
    /// already known to be away (then the caller starts bringing it back).
    pub(super) fn host_lost(
        self: &Arc<Self>,
        host: &str,
        reason: &str,
    ) -> (bool, Vec<(Key, InFlight)>) {
        let mut table = self.lock();
        table.placement.down(host);
        let first = table
            .away
            .insert(Arc::from(host), reason.to_string())
            .is_none();
        let keys: Vec<Key> = table
            .in_flight
            .iter()
            .filter(|(_, f)| &*f.host == host)
            .map(|(k, _)| k.clone())
            .collect();
        let mut flights = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(flight) = table.in_flight.remove(&key) {
                if !flight.ran {
                    table.placement.end(&flight.host);
                }
                flights.push((key, flight));
            }
        }
        self.pump(&mut table);
        (first, flights)
    }

    /// A task allowed on `hosts` is to run: sent now, kept until a host has room, or failed
    /// when none of them is up.
    pub(super) fn submit(
        self: &Arc<Self>,
        hosts: &[Arc<str>],
        task: TaskId,
        key: TaskKey,
        work: Work,
    ) {
        let pending = Pending { task, key, work };
        let mut table = self.lock();
        match table.placement.choose(hosts) {
            Place::On(host) => {
                table.placement.start(&host);
                self.send(&mut table, host, pending);
            }
            Place::Wait => table.placement.wait(hosts, pending),
            Place::Nowhere => {
                let error = nowhere(&table, hosts);
                self.fail(pending.task, error);
            }
        }
    }

    /// Takes the task of `key` off the table (its end came); room it frees goes to the next.
    pub(super) fn finished(self: &Arc<Self>, key: &TaskKey) -> Option<InFlight> {
        let mut table = self.lock();
        let flight = table.in_flight.remove(&key_of(key))?;
        if !flight.ran {
            table.placement.end(&flight.host);
            self.pump(&mut table);
        }
        Some(flight)
    }

    /// The task of `key` ran on its host (its end is being recorded there): its room goes
    /// to the next task.
    pub(super) fn ran(self: &Arc<Self>, key: &TaskKey) {
        let mut table = self.lock();
        let Some(flight) = table.in_flight.get_mut(&key_of(key)) else {
            return;
        };
        if std::mem::replace(&mut flight.ran, true) {
            return;
        }
        let host = flight.host.clone();
        table.placement.end(&host);
        self.pump(&mut table);
    }

    /// The agent could not record this task's end: the prime will.
    pub(super) fn unrecorded(&self, key: &TaskKey) {
        if let Some(flight) = self.lock().in_flight.get_mut(&key_of(key)) {
            flight.recorded = false;
        }
    }

    /// Fails every waiting task (they never reached a host) and sends `Cancel` for every
    /// task in flight; each agent stops its command's group and answers with the task's
    /// end, which comes back as usual.
    pub(super) fn cancel_all(&self, run: &RunKey) {
        let (waiting, keys) = {
            let mut table = self.lock();
            let waiting = table.placement.take_waiting();
            let flights = table.in_flight.iter();
            let linked = flights.filter_map(|(k, f)| Some((k, table.links.get(&f.host)?)));
            let keys: Vec<(Key, Arc<HostLink>)> = linked
                .map(|(k, live)| (k.clone(), live.link.clone()))
                .collect();
            (waiting, keys)
        };
        for pending in waiting {
            self.fail(pending.task, "stopped before it reached a host".to_string());
        }
        for ((step, sequence, attempt), link) in keys {
            let key = TaskKey {
                run_id: run.run_id.to_string(),
                step,
                sequence,
                recovery: run.recovery,
                attempt,
            };
            self.tracker.spawn(async move {
                let _ = link.cancel(key).await;
            });
        }
    }

    /// Takes every link (the run is over), and waits for deliveries and reports under way.
    pub(super) async fn close(&self) -> Vec<Arc<HostLink>> {
        let links = {
            let mut table = self.lock();
            table.links.drain().map(|(_, live)| live.link).collect()
        };
        self.tracker.close();
        self.tracker.wait().await;
        links
    }

    /// The links there are now.
    pub(super) fn links(&self) -> Vec<Arc<HostLink>> {
        let table = self.lock();
        table.links.values().map(|live| live.link.clone()).collect()
    }

    /// Sends the waiting tasks that can go now, and fails those no host will take.
    fn pump(self: &Arc<Self>, table: &mut Table) {
        while let Some((host, pending)) = table.placement.next_ready() {
            self.send(table, host, pending);
        }
        for (hosts, stranded) in table.placement.stranded() {
            let error = nowhere(table, &hosts);
            for pending in stranded {
                self.fail(pending.task, error.clone());
            }
        }
    }

    /// Hands `pending` to `host`'s link (already counted on the host).
    fn send(self: &Arc<Self>, table: &mut Table, host: Arc<str>, pending: Pending) {
        let Some(live) = table.links.get(&host) else {
            table.placement.end(&host);
            return self.fail(pending.task, format!("no link to {host}"));
        };
        let (link, recorded) = (live.link.clone(), live.records);
        let Pending { task, key, work } = pending;
        let flight = InFlight {
            task,
            host: host.clone(),
            recorded,
            ran: false,
        };
        table.in_flight.insert(key_of(&key), flight);
        let this = self.clone();
        self.tracker.spawn(async move {
            let dispatch = Dispatch {
                key: key.clone(),
                work,
            };
            if let Err(e) = link.dispatch(dispatch).await {
                if this.finished(&key).is_some() {
                    let outcome = Outcome::failure(format!("cannot dispatch to {host}: {e}"));
                    let _ = this
                        .events
                        .send(ExecEvent::Finished { task, outcome })
                        .await;
                }
            }
        });
    }

    /// Reports `task` failed with `error`, without waiting.
    fn fail(&self, task: TaskId, error: String) {
        let events = self.events.clone();
        let outcome = Outcome::failure(error);
        self.tracker.spawn(async move {
            let _ = events.send(ExecEvent::Finished { task, outcome }).await;
        });
    }
}

/// Why no host of `hosts` can take a task: the losses of those being brought back.
fn nowhere(table: &Table, hosts: &[Arc<str>]) -> String {
    let away: Vec<String> = hosts
        .iter()
        .filter_map(|h| table.away.get(h).map(|why| format!("{h} lost: {why}")))
        .collect();
    let mut error = format!("no link to any of {hosts:?}");
    if !away.is_empty() {
        error += &format!(" ({}; reconnecting)", away.join("; "));
    }
    error
}
