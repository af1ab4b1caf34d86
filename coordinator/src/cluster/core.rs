//! The cluster's decisions as data: which host a pinned task goes to, what a lost host's
//! tasks become, and when a task of a host that went silent may be called dead.
//!
//! # Why a state machine
//!
//! Everything the prime decides about its hosts follows from a handful of facts arriving
//! in some order: a task was submitted, a host came up with room for so many tasks, a task
//! ran or finished there, a host was lost, time passed, the run was cancelled. The order is
//! where the bugs live (a host lost while a dispatch is under way, a task's end racing its
//! host's loss, room freed by a loss going to a task that waited), and real sshd makes
//! orders hard to force. So, as for the engine's scheduling core, the decisions are made by
//! [`ClusterCore`], which does no IO, reads no clock and spawns nothing: the forwarder
//! (`forwarder.rs`) feeds it [`Input`]s with the time and performs the [`Action`]s it
//! answers. The golden scripts (`golden.rs`, `golden/*.txt`) replay inputs and compare the
//! actions, exactly as the forwarder would see them.
//!
//! # The rules
//!
//! - **Room.** A host that is up takes at most its capacity of tasks dispatched and not yet
//!   reported ran ([`Placement`]); a task goes to the least loaded allowed host with room,
//!   waits when every allowed host that is up is full, and fails at once, naming why, when
//!   none is up (a run never waits for a host that is away).
//! - **Every submitted task ends exactly once** in an [`Action::End`] or inside an
//!   [`Action::Settle`]; nothing else is said about it afterwards.
//! - **A lost host's tasks are not dead yet.** Its agent may only be cut off from us and
//!   still running them. They wait in *limbo* until the host's *lease* has passed since
//!   the prime gave it up (plus a margin: see [`LeaseRule`]), or an agent that outlived its
//!   prime hands them back (re-adopted). A host that comes back with a new agent proves
//!   nothing about the old one (it may still run, cut off), so its other tasks wait on.
//!   Only when the lease is out are they settled (the store is read: an end
//!   the agent recorded stands, the rest fail), so another attempt never starts beside one
//!   still running. A lease of zero settles them at once.
//! - **A host is brought back** from its first loss on ([`Action::Reconnect`], once per
//!   loss); while it is away, a task that may run only there fails at once with the reason.
//! - **A misbehaving host is quarantined** ([`super::quarantine`]): after its rule's count of
//!   host-class failures (its link lost, its agent failing to start, a task of class
//!   `start`) within its window, no new task is sent to it until its cool-down ends (twice
//!   as long if it fails again right after). A task that may run elsewhere goes there; one
//!   that may run only on quarantined hosts waits for the end of the cool-down when its
//!   step would retry a host failure ([`Input::Submit`]'s `may_wait`), and otherwise fails
//!   at once naming the quarantine and when it ends. Each change of a host's health is
//!   reported ([`Action::Health`]) for the store and the reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::TaskEnd;
use eventor_protocol::{FailureClass, TaskKey};

use super::placement::{Place, Placement};
use super::quarantine::{human, Failure, Health, QuarantineRules};
use crate::engine::core::TaskId;

/// Added to a host's lease before its tasks are called dead, counted from the moment the
/// prime gave the host up.
///
/// Why from the loss and not from the last word heard: the agent counts its lease from
/// the last frame *it* read, and the prime's frames may have reached it until the prime
/// gave up (a link that failed one way only). The prime sends nothing after that, so the
/// agent's lease cannot start later. The margin then covers the agent's stop (SIGTERM,
/// then SIGKILL within the protocol's `LEASE_STOP_GRACE`), the frames in flight, and the
/// two clocks' rates.
///
/// And why a floor: an agent notices a silent prime only after its own wait (longer than
/// any prime's, so that of a blip the prime decides first); a lease shorter than that wait
/// runs out before the agent knows, and the agent stops its tasks only then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRule {
    pub margin: Duration,
    /// The least time an agent's tasks may run on after its prime gave it up, whatever
    /// its lease: how long the agent takes to notice a silent prime.
    pub floor: Duration,
}

/// What the forwarder tells the core.
#[derive(Debug)]
pub enum Input<P> {
    /// `host` is up (at the start, or back after a loss) with room for `cap` tasks; its
    /// agent records each task's end itself when `records`, and keeps running its tasks
    /// for `lease` once it lost the prime. `adopted`: the tasks an agent that outlived its
    /// prime still runs there (re-adopted, not started again).
    HostUp {
        host: Arc<str>,
        cap: usize,
        records: bool,
        lease: Duration,
        adopted: Vec<TaskKey>,
    },
    /// `host`'s link is gone for `reason`.
    HostLost { host: Arc<str>, reason: String },
    /// `task` (attempt `key`) may run on any of `hosts`. `may_wait`: its step would retry
    /// a host failure, so while its only hosts are quarantined it waits for the cool-down
    /// rather than failing.
    Submit {
        task: TaskId,
        hosts: Vec<Arc<str>>,
        key: TaskKey,
        payload: P,
        may_wait: bool,
    },
    /// `host`'s agent could not be started while it was being brought back (a host-class
    /// failure that changes no link).
    AgentFailed { host: Arc<str>, reason: String },
    /// A dispatch could not be handed to its host's link.
    Undelivered { key: TaskKey, error: String },
    /// The task's work is over on its host (its end is being recorded there).
    Ran { key: TaskKey },
    /// The host reported the task's end.
    Finished { key: TaskKey, end: TaskEnd },
    /// The agent could not record the task's end: the prime will.
    Unrecorded { key: TaskKey },
    /// Stop everything: waiting tasks fail, running ones are cancelled on their hosts.
    CancelAll,
    /// The prime lets go of every host for `reason` (it lost contact with the store): their
    /// links are cut without a word, so each agent's lease starts, and their tasks wait in
    /// limbo like a lost host's; no host is brought back until [`Input::BringBack`].
    LetGo { reason: String },
    /// The prime has its store again: the hosts it let go are brought back (a host back
    /// within its lease re-adopts its agent, and with it the tasks in limbo there).
    BringBack,
    /// Time passed (the forwarder wakes at [`ClusterCore::next_deadline`]).
    Tick,
}

/// What the core asks the forwarder to do.
#[derive(Debug, PartialEq)]
pub enum Action<P> {
    /// Hand the task to `host`'s link.
    Send {
        host: Arc<str>,
        key: TaskKey,
        payload: P,
    },
    /// Ask `host`'s agent to stop the task (its end comes back as usual).
    Cancel { host: Arc<str>, key: TaskKey },
    /// The task is over: tell the engine (`recorded`: its end is in the store already).
    End {
        task: TaskId,
        end: TaskEnd,
        recorded: bool,
    },
    /// Start bringing `host` back.
    Reconnect { host: Arc<str> },
    /// `host`'s health changed (up, away, quarantined, released, or a new failure).
    Health { host: Arc<str>, health: HostHealth },
    /// These tasks of `host` are known dead: an end recorded in the store stands, the
    /// others fail with "host NAME lost: REASON" (the prime records that, fenced).
    Settle {
        host: Arc<str>,
        reason: String,
        tasks: Vec<(TaskId, TaskKey)>,
    },
}

/// A host's health as the reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHealth {
    pub state: HealthState,
    /// Its last host-class failures, oldest first.
    pub failures: Vec<Failure>,
}

/// Whether a host takes tasks, and if not why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthState {
    Up,
    /// Lost (or unreachable at the start), being brought back.
    Away {
        reason: String,
    },
    /// No new task goes there before `until` (the core's time).
    Quarantined {
        until: Duration,
        reason: String,
    },
}

/// What is known of a host.
#[derive(Debug)]
enum HostState {
    Up {
        records: bool,
        lease: Duration,
    },
    /// Lost for this reason, being brought back.
    Away {
        reason: String,
    },
}

/// A task dispatched to a host (or under way to it).
#[derive(Debug)]
struct InFlight {
    task: TaskId,
    host: Arc<str>,
    /// Whether its end will be in the store when it is reported.
    recorded: bool,
    /// Its work is over on the host: it no longer counts against the host's room.
    ran: bool,
}

/// A task of a lost host, not yet known dead.
#[derive(Debug)]
struct Limbo {
    task: TaskId,
    host: Arc<str>,
    /// When it may be called dead.
    deadline: Duration,
    reason: String,
    recorded: bool,
}

/// A task waiting for room on one of its hosts.
#[derive(Debug)]
struct Pending<P> {
    task: TaskId,
    key: TaskKey,
    payload: P,
    may_wait: bool,
}

/// The cluster's table: hosts, tasks in flight, waiting and in limbo.
#[derive(Debug)]
pub struct ClusterCore<P> {
    rule: LeaseRule,
    hosts: HashMap<Arc<str>, HostState>,
    placement: Placement<Pending<P>>,
    in_flight: HashMap<TaskKey, InFlight>,
    limbo: HashMap<TaskKey, Limbo>,
    /// Hosts let go ([`Input::LetGo`]) and not brought back yet, in name order.
    let_go: std::collections::BTreeSet<Arc<str>>,
    quarantine: QuarantineRules,
    /// Each host's failures and quarantine.
    health: HashMap<Arc<str>, Health>,
    /// The capacity of each host that is up, quarantined or not.
    caps: HashMap<Arc<str>, usize>,
    /// Tasks whose only hosts are quarantined, waiting for a cool-down to end, in order.
    held: Vec<(Vec<Arc<str>>, Pending<P>)>,
    /// The time of the input being handled.
    now: Duration,
    /// The core's answers to the input being handled.
    out: Vec<Action<P>>,
}

impl<P> ClusterCore<P> {
    pub fn new(rule: LeaseRule, quarantine: QuarantineRules) -> ClusterCore<P> {
        ClusterCore {
            rule,
            hosts: HashMap::new(),
            placement: Placement::default(),
            in_flight: HashMap::new(),
            limbo: HashMap::new(),
            let_go: Default::default(),
            quarantine,
            health: HashMap::new(),
            caps: HashMap::new(),
            held: Vec::new(),
            now: Duration::ZERO,
            out: Vec::new(),
        }
    }

    /// Handles `input` at monotonic time `now`; answers what to do, in order.
    pub fn handle(&mut self, now: Duration, input: Input<P>) -> Vec<Action<P>> {
        self.now = now;
        self.lift_due(now);
        match input {
            Input::HostUp {
                host,
                cap,
                records,
                lease,
                adopted,
            } => {
                let state = HostState::Up { records, lease };
                self.host_up(host, cap, state, adopted)
            }
            Input::HostLost { host, reason } => {
                if self.host_lost(host.clone(), reason.clone(), now) {
                    self.out.push(Action::Reconnect { host: host.clone() });
                    self.host_failed(&host, &format!("lost: {reason}"));
                }
            }
            Input::AgentFailed { host, reason } => self.host_failed(&host, &reason),
            Input::LetGo { reason } => {
                let mut up: Vec<Arc<str>> = self
                    .hosts
                    .iter()
                    .filter(|(_, state)| matches!(state, HostState::Up { .. }))
                    .map(|(host, _)| host.clone())
                    .collect();
                up.sort(); // the actions come out in one order, whatever the map's
                for host in up {
                    self.host_lost(host.clone(), reason.clone(), now);
                    self.report_health(&host);
                }
                // Every host, up or already away: the attempts to bring any back stop too.
                self.let_go.extend(self.hosts.keys().cloned());
            }
            Input::BringBack => {
                for host in std::mem::take(&mut self.let_go) {
                    self.out.push(Action::Reconnect { host });
                }
            }
            Input::Submit {
                task,
                hosts,
                key,
                payload,
                may_wait,
            } => {
                let pending = Pending {
                    task,
                    key,
                    payload,
                    may_wait,
                };
                self.submit(hosts, pending)
            }
            Input::Undelivered { key, error } => self.undelivered(&key, error),
            Input::Ran { key } => self.ran(&key),
            Input::Finished { key, end } => self.finished(&key, end),
            Input::Unrecorded { key } => self.unrecorded(&key),
            Input::CancelAll => self.cancel_all(),
            Input::Tick => {}
        }
        self.settle_due(now);
        std::mem::take(&mut self.out)
    }

    /// When the next task in limbo may be called dead, or the next quarantine ends (the
    /// forwarder wakes then).
    pub fn next_deadline(&self) -> Option<Duration> {
        let limbo = self.limbo.values().map(|l| l.deadline);
        let quarantines = self
            .health
            .values()
            .filter_map(|h| Some(h.quarantine()?.until));
        limbo.chain(quarantines).min()
    }

    /// Tasks dispatched and not yet ended, waiting, and in limbo (for the golden scripts'
    /// state line).
    pub fn counts(&self) -> Counts {
        Counts {
            in_flight: self.in_flight.len(),
            waiting: self.placement.waiting_len() + self.held.len(),
            limbo: self.limbo.len(),
        }
    }

    fn host_up(&mut self, host: Arc<str>, cap: usize, state: HostState, adopted: Vec<TaskKey>) {
        self.hosts.insert(host.clone(), state);
        self.caps.insert(host.clone(), cap);
        if !self.quarantined(&host) {
            self.placement.up(host.clone(), cap);
        }
        self.report_health(&host);
        self.adopt(&host, adopted);
        self.pump();
    }

    fn quarantined(&self, host: &str) -> bool {
        self.health
            .get(host)
            .is_some_and(|h| h.quarantine().is_some())
    }

    /// A host-class failure of `host`: counted, and the host quarantined when its rule
    /// says so (its waiting tasks then go elsewhere, wait for the cool-down, or fail).
    fn host_failed(&mut self, host: &Arc<str>, reason: &str) {
        let rule = self.quarantine.of(host);
        let health = self.health.entry(host.clone()).or_default();
        if health.fail(&rule, self.now, reason).is_some() {
            self.placement.down(host);
            self.pump();
        }
        self.report_health(host);
    }

    /// Ends the quarantines whose time has come: those hosts take tasks again (when up),
    /// and the tasks held for them are placed again.
    fn lift_due(&mut self, now: Duration) {
        let mut lifted: Vec<Arc<str>> = self
            .health
            .iter_mut()
            .filter_map(|(host, health)| health.lift_due(now).then(|| host.clone()))
            .collect();
        if lifted.is_empty() {
            return;
        }
        lifted.sort();
        for host in &lifted {
            let up = matches!(self.hosts.get(host), Some(HostState::Up { .. }));
            if let (true, Some(cap)) = (up, self.caps.get(host)) {
                self.placement.up(host.clone(), *cap);
            }
            self.report_health(host);
        }
        for (hosts, pending) in std::mem::take(&mut self.held) {
            self.submit(hosts, pending);
        }
        self.pump();
    }

    /// Tells the forwarder `host`'s health now.
    fn report_health(&mut self, host: &Arc<str>) {
        let health = self.health.get(host);
        let state = match (health.and_then(Health::quarantine), self.hosts.get(host)) {
            (Some(q), _) => HealthState::Quarantined {
                until: q.until,
                reason: q.reason.clone(),
            },
            (None, Some(HostState::Away { reason })) => HealthState::Away {
                reason: reason.clone(),
            },
            (None, _) => HealthState::Up,
        };
        let failures = health.map_or(Vec::new(), |h| h.last_failures().cloned().collect());
        let health = HostHealth { state, failures };
        self.out.push(Action::Health {
            host: host.clone(),
            health,
        });
    }

    /// Takes back the tasks of `host` in limbo that its surviving agent still runs. The
    /// others of that host stay in limbo until their lease is out: a new agent there says
    /// nothing of whether the old one still runs them.
    fn adopt(&mut self, host: &Arc<str>, adopted: Vec<TaskKey>) {
        for key in adopted {
            if self.limbo.get(&key).is_none_or(|l| l.host != *host) {
                continue; // not this host's: its own host answers for it
            }
            let Some(limbo) = self.limbo.remove(&key) else {
                continue;
            };
            self.placement.start(host);
            let flight = InFlight {
                task: limbo.task,
                host: host.clone(),
                recorded: limbo.recorded,
                ran: false,
            };
            self.in_flight.insert(key, flight);
        }
    }

    /// Puts `host`'s tasks in limbo; answers whether it was up (then it is to be brought
    /// back, unless the prime let it go).
    fn host_lost(&mut self, host: Arc<str>, reason: String, now: Duration) -> bool {
        self.placement.down(&host);
        let away = HostState::Away {
            reason: reason.clone(),
        };
        let lease = match self.hosts.insert(host.clone(), away) {
            Some(HostState::Away { .. }) => return false, // lost before: nothing in flight
            Some(HostState::Up { lease, .. }) => lease,
            None => Duration::ZERO,
        };
        let deadline = now + lease.max(self.rule.floor) + self.rule.margin;
        let keys: Vec<TaskKey> = self.in_flight_on(&host);
        for key in keys {
            let Some(flight) = self.in_flight.remove(&key) else {
                continue;
            };
            if !flight.ran {
                self.placement.end(&host);
            }
            let limbo = Limbo {
                task: flight.task,
                host: host.clone(),
                deadline,
                reason: reason.clone(),
                recorded: flight.recorded,
            };
            self.limbo.insert(key, limbo);
        }
        self.pump();
        true
    }

    fn in_flight_on(&self, host: &str) -> Vec<TaskKey> {
        let on_host = self.in_flight.iter().filter(|(_, f)| &*f.host == host);
        let mut keys: Vec<TaskKey> = on_host.map(|(k, _)| k.clone()).collect();
        keys.sort(); // the actions come out in one order, whatever the map's
        keys
    }

    fn submit(&mut self, hosts: Vec<Arc<str>>, pending: Pending<P>) {
        match self.placement.choose(&hosts) {
            Place::On(host) => {
                self.placement.start(&host);
                self.send(host, pending);
            }
            Place::Wait => self.placement.wait(&hosts, pending),
            Place::Nowhere => self.unplaceable(hosts, pending),
        }
    }

    /// A task none of whose hosts takes tasks now: held for the end of a cool-down when it
    /// may wait and one of its hosts is quarantined, else failed naming why.
    fn unplaceable(&mut self, hosts: Vec<Arc<str>>, pending: Pending<P>) {
        if pending.may_wait && hosts.iter().any(|h| self.quarantined(h)) {
            self.held.push((hosts, pending));
            return;
        }
        let error = self.nowhere(&hosts);
        self.fail(pending.task, error);
    }

    fn undelivered(&mut self, key: &TaskKey, error: String) {
        if let Some(flight) = self.take_flight(key) {
            let error = format!("cannot dispatch to {}: {error}", flight.host);
            self.fail(flight.task, error);
        }
    }

    fn ran(&mut self, key: &TaskKey) {
        let Some(flight) = self.in_flight.get_mut(key) else {
            return;
        };
        if std::mem::replace(&mut flight.ran, true) {
            return;
        }
        let host = flight.host.clone();
        self.placement.end(&host);
        self.pump();
    }

    fn finished(&mut self, key: &TaskKey, end: TaskEnd) {
        // Counted before the task's room is freed: a host it quarantines gets no task there.
        let in_flight = self.in_flight.get(key).map(|f| f.host.clone());
        let host = in_flight.or_else(|| self.limbo.get(key).map(|l| l.host.clone()));
        if let (Some(host), Some(FailureClass::Start)) = (host, end.failure_class()) {
            let error = end.error.as_deref().unwrap_or("could not start");
            self.host_failed(&host, &format!("a task could not start: {error}"));
        }
        if let Some(flight) = self.take_flight(key) {
            self.out.push(Action::End {
                task: flight.task,
                end,
                recorded: flight.recorded,
            });
        } else if let Some(limbo) = self.limbo.remove(key) {
            // The end of an attempt in limbo, from the agent that ran it: a re-adopted
            // agent's held ends are read as soon as its link starts, which may be before
            // its host is up here. The attempt is over, so it leaves limbo with its end
            // (dropped, its task would wait for an end that already came).
            self.out.push(Action::End {
                task: limbo.task,
                end,
                recorded: limbo.recorded,
            });
        }
    }

    fn unrecorded(&mut self, key: &TaskKey) {
        if let Some(flight) = self.in_flight.get_mut(key) {
            flight.recorded = false;
        }
    }

    /// Takes the task of `key` off the table; room it frees goes to the next.
    fn take_flight(&mut self, key: &TaskKey) -> Option<InFlight> {
        let flight = self.in_flight.remove(key)?;
        if !flight.ran {
            self.placement.end(&flight.host);
            self.pump();
        }
        Some(flight)
    }

    /// Fails every waiting task (they never reached a host) and cancels every task in
    /// flight on its host. Tasks in limbo cannot be reached: their lease ends them.
    fn cancel_all(&mut self) {
        let held = std::mem::take(&mut self.held).into_iter().map(|(_, p)| p);
        for pending in self.placement.take_waiting().into_iter().chain(held) {
            let end = TaskEnd::interrupted("stopped before it reached a host");
            self.end_unsent(pending.task, end);
        }
        let mut cancels: Vec<(Arc<str>, TaskKey)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| matches!(self.hosts.get(&f.host), Some(HostState::Up { .. })))
            .map(|(k, f)| (f.host.clone(), k.clone()))
            .collect();
        cancels.sort();
        for (host, key) in cancels {
            self.out.push(Action::Cancel { host, key });
        }
    }

    /// Sends the waiting tasks that can go now, and fails those no host will take.
    fn pump(&mut self) {
        while let Some((host, pending)) = self.placement.next_ready() {
            self.send(host, pending);
        }
        for (hosts, stranded) in self.placement.stranded() {
            for pending in stranded {
                self.unplaceable(hosts.clone(), pending);
            }
        }
    }

    /// Hands `pending` to `host` (already counted there).
    fn send(&mut self, host: Arc<str>, pending: Pending<P>) {
        let Some(HostState::Up { records, .. }) = self.hosts.get(&host) else {
            self.placement.end(&host);
            return self.fail(pending.task, format!("no link to {host}"));
        };
        let flight = InFlight {
            task: pending.task,
            host: host.clone(),
            recorded: *records,
            ran: false,
        };
        self.in_flight.insert(pending.key.clone(), flight);
        self.out.push(Action::Send {
            host,
            key: pending.key,
            payload: pending.payload,
        });
    }

    /// Fails a task no host took (or whose host is gone): a host-class failure.
    fn fail(&mut self, task: TaskId, error: String) {
        self.end_unsent(task, TaskEnd::host_lost(error));
    }

    fn end_unsent(&mut self, task: TaskId, end: TaskEnd) {
        self.out.push(Action::End {
            task,
            end,
            recorded: false,
        });
    }

    /// Settles the tasks in limbo whose deadline has come.
    fn settle_due(&mut self, now: Duration) {
        if self.limbo.is_empty() {
            return;
        }
        let due = self.take_limbo(|l| l.deadline <= now);
        let mut by_host: Vec<(Arc<str>, Vec<(TaskKey, Limbo)>)> = Vec::new();
        for (key, limbo) in due {
            match by_host.iter_mut().find(|(h, _)| *h == limbo.host) {
                Some((_, tasks)) => tasks.push((key, limbo)),
                None => by_host.push((limbo.host.clone(), vec![(key, limbo)])),
            }
        }
        for (host, tasks) in by_host {
            self.settle(host, tasks);
        }
    }

    /// Takes the tasks in limbo that `which` picks, in key order.
    fn take_limbo(&mut self, which: impl Fn(&Limbo) -> bool) -> Vec<(TaskKey, Limbo)> {
        let mut keys: Vec<TaskKey> = self
            .limbo
            .iter()
            .filter(|(_, l)| which(l))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        let taken = keys.into_iter().filter_map(|k| self.limbo.remove_entry(&k));
        taken.collect()
    }

    fn settle(&mut self, host: Arc<str>, tasks: Vec<(TaskKey, Limbo)>) {
        let Some((_, first)) = tasks.first() else {
            return;
        };
        let reason = first.reason.clone();
        let tasks = tasks.into_iter().map(|(k, l)| (l.task, k)).collect();
        self.out.push(Action::Settle {
            host,
            reason,
            tasks,
        });
    }

    /// Why no host of `hosts` can take a task: the quarantines of those quarantined (with
    /// when they end), the losses of those being brought back.
    fn nowhere(&self, hosts: &[Arc<str>]) -> String {
        let quarantined: Vec<String> = hosts
            .iter()
            .filter_map(|h| {
                let q = self.health.get(h)?.quarantine()?;
                let left = human(q.until.saturating_sub(self.now));
                Some(format!("{h} quarantined, ends in {left}: {}", q.reason))
            })
            .collect();
        if !quarantined.is_empty() {
            let list = hosts.join(", ");
            return format!("no host of {list} takes tasks ({})", quarantined.join("; "));
        }
        let away: Vec<String> = hosts
            .iter()
            .filter_map(|h| match self.hosts.get(h) {
                Some(HostState::Away { reason }) => Some(format!("{h} lost: {reason}")),
                _ => None,
            })
            .collect();
        let mut error = format!("no link to any of {}", hosts.join(", "));
        if !away.is_empty() {
            error += &format!(" ({}; reconnecting)", away.join("; "));
        }
        error
    }
}

/// How many tasks are where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub in_flight: usize,
    pub waiting: usize,
    pub limbo: usize,
}
