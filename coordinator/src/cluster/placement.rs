//! Which host a pinned task goes to, and when: per-host room, and the tasks waiting for it.
//!
//! Each host that is up has a capacity: twice its `max_concurrent` (the agent runs that
//! many and has as many queued next, so it never idles for a round trip), or
//! [`UNLIMITED_CAP`] when it has no limit. A task goes to the least loaded of its allowed
//! hosts that has room; when none has, it waits here, queued by its set of allowed hosts,
//! and goes out as soon as one of them has room again: of the tasks that could go, the one
//! that has waited longest (so a fan-out over `[a, b]` does not hold back a later task that
//! may run only on `a`). So an agent never holds more
//! than its share (a fan-out of a million tasks does not overflow its queue), and a slow
//! host does not collect work that a free one could run now.
//!
//! No IO: the cluster's core (`core.rs`) holds it, feeds it what happens and acts on its
//! answers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// In flight on a host without a limit of its own, at most.
pub const UNLIMITED_CAP: usize = 1024;

/// Where a task can go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// To this host (the least loaded of those with room).
    On(Arc<str>),
    /// Some allowed host is up, none has room: the task waits.
    Wait,
    /// No allowed host is up.
    Nowhere,
}

/// Tasks waiting for the same hosts, each with its ticket.
type Queue<T> = VecDeque<(u64, T)>;

/// The hosts' load and capacity, and the tasks waiting for room.
#[derive(Debug)]
pub struct Placement<T> {
    load: HashMap<Arc<str>, usize>,
    /// The capacity of each host that is up.
    caps: HashMap<Arc<str>, usize>,
    /// Each waiting task with its ticket (the order it came in), queued by its hosts.
    waiting: HashMap<Vec<Arc<str>>, Queue<T>>,
    next_ticket: u64,
}

impl<T> Default for Placement<T> {
    fn default() -> Self {
        Placement {
            load: HashMap::new(),
            caps: HashMap::new(),
            waiting: HashMap::new(),
            next_ticket: 0,
        }
    }
}

/// A host's capacity for a `max_concurrent` of `limit` (`None`: no limit).
pub fn capacity(limit: Option<usize>) -> usize {
    match limit {
        Some(n) => n.max(1).saturating_mul(2),
        None => UNLIMITED_CAP,
    }
}

impl<T> Placement<T> {
    /// `host` is up (again) with room for `cap` tasks.
    pub fn up(&mut self, host: Arc<str>, cap: usize) {
        self.caps.insert(host, cap);
    }

    /// `host` is gone; its tasks in flight are ended by the caller ([`end`](Self::end)).
    pub fn down(&mut self, host: &str) {
        self.caps.remove(host);
    }

    /// Where a task allowed on `hosts` can go now.
    pub fn choose(&self, hosts: &[Arc<str>]) -> Place {
        choose_in(&self.caps, &self.load, hosts)
    }

    /// A task went to `host`.
    pub fn start(&mut self, host: &Arc<str>) {
        *self.load.entry(host.clone()).or_default() += 1;
    }

    /// A task on `host` ended (or was never delivered).
    pub fn end(&mut self, host: &str) {
        if let Some(load) = self.load.get_mut(host) {
            *load = load.saturating_sub(1);
        }
    }

    /// Keeps `item`, allowed on `hosts`, until one of them has room.
    pub fn wait(&mut self, hosts: &[Arc<str>], item: T) {
        let entry = (self.next_ticket, item);
        self.next_ticket += 1;
        match self.waiting.get_mut(hosts) {
            Some(queue) => queue.push_back(entry),
            None => {
                self.waiting.insert(hosts.to_vec(), VecDeque::from([entry]));
            }
        }
    }

    /// The longest-waiting task that can go now, and where (already counted as started).
    pub fn next_ready(&mut self) -> Option<(Arc<str>, T)> {
        let (caps, load) = (&self.caps, &self.load);
        let mut best: Option<(u64, Arc<str>, &mut Queue<T>)> = None;
        for (hosts, queue) in self.waiting.iter_mut() {
            let Some(&(ticket, _)) = queue.front() else {
                continue;
            };
            if best.as_ref().is_some_and(|(first, ..)| *first < ticket) {
                continue;
            }
            if let Place::On(host) = choose_in(caps, load, hosts) {
                best = Some((ticket, host, queue));
            }
        }
        let (_, host, queue) = best?;
        let (_, item) = queue.pop_front()?;
        // An emptied queue stays (one per set of hosts a flow names): not worth a key copy.
        self.start(&host);
        Some((host, item))
    }

    /// Takes the waiting tasks none of whose hosts is up, with their hosts.
    pub fn stranded(&mut self) -> Vec<(Vec<Arc<str>>, Vec<T>)> {
        let caps = &self.caps;
        let mut out = Vec::new();
        for (hosts, queue) in &mut self.waiting {
            if !queue.is_empty() && !hosts.iter().any(|h| caps.contains_key(h)) {
                out.push((hosts.clone(), queue.drain(..).map(|(_, t)| t).collect()));
            }
        }
        out
    }

    /// How many tasks wait.
    pub fn waiting_len(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Takes every waiting task.
    pub fn take_waiting(&mut self) -> Vec<T> {
        let queues = self.waiting.drain().flat_map(|(_, queue)| queue);
        queues.map(|(_, t)| t).collect()
    }
}

/// Where a task allowed on `hosts` can go, given the hosts' capacities and loads.
fn choose_in(
    caps: &HashMap<Arc<str>, usize>,
    load: &HashMap<Arc<str>, usize>,
    hosts: &[Arc<str>],
) -> Place {
    let mut up = false;
    let mut best: Option<(&Arc<str>, usize)> = None;
    for host in hosts {
        let Some(&cap) = caps.get(host) else {
            continue;
        };
        up = true;
        let used = load.get(host).copied().unwrap_or(0);
        if used < cap && best.is_none_or(|(_, least)| used < least) {
            best = Some((host, used));
        }
    }
    match (best, up) {
        (Some((host, _)), _) => Place::On(host.clone()),
        (None, true) => Place::Wait,
        (None, false) => Place::Nowhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|h| Arc::from(*h)).collect()
    }

    #[test]
    fn a_task_goes_to_the_least_loaded_host_with_room() {
        let mut p: Placement<u32> = Placement::default();
        let ab = names(&["a", "b"]);
        p.up(ab[0].clone(), 2);
        p.up(ab[1].clone(), 2);
        p.start(&ab[0]);
        assert_eq!(p.choose(&ab), Place::On(ab[1].clone()));
        p.start(&ab[1]);
        p.start(&ab[1]);
        assert_eq!(p.choose(&ab), Place::On(ab[0].clone()), "b is full");
        p.start(&ab[0]);
        assert_eq!(p.choose(&ab), Place::Wait);
        assert_eq!(p.choose(&names(&["c"])), Place::Nowhere);
    }

    #[test]
    fn waiting_tasks_go_out_in_order_as_room_frees() {
        let mut p = Placement::default();
        let a = names(&["a"]);
        p.up(a[0].clone(), 1);
        p.start(&a[0]);
        p.wait(&a, 1);
        p.wait(&a, 2);
        assert_eq!(p.next_ready(), None, "no room yet");
        p.end("a");
        assert_eq!(p.next_ready(), Some((a[0].clone(), 1)));
        assert_eq!(p.next_ready(), None, "the first took the room");
        p.end("a");
        assert_eq!(p.next_ready(), Some((a[0].clone(), 2)));
        assert!(p.take_waiting().is_empty());
    }

    /// Hosts `a` and `b`, one slot each, both taken; and the host sets `[a]` and `[a, b]`.
    fn both_full<T>() -> (Placement<T>, Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut p = Placement::default();
        let (a, ab) = (names(&["a"]), names(&["a", "b"]));
        p.up(a[0].clone(), 1);
        p.up(ab[1].clone(), 1);
        p.start(&a[0]);
        p.start(&ab[1]);
        (p, a, ab)
    }

    /// Of the tasks that may go to a freed host, the one that waited longest goes: a
    /// fan-out over `[a, b]` does not hold back a later task that may run only on `a`.
    #[test]
    fn the_longest_waiting_task_that_can_go_goes_first() {
        let (mut p, a, ab) = both_full();
        for (hosts, item) in [(&ab, "x1"), (&a, "y"), (&ab, "x2"), (&a, "z")] {
            p.wait(hosts, item);
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            p.end("a");
            order.push(p.next_ready().unwrap().1);
        }
        assert_eq!(order, ["x1", "y", "x2", "z"]);
    }

    #[test]
    fn a_full_host_set_does_not_hold_up_another() {
        let mut p = Placement::default();
        let (a, b) = (names(&["a"]), names(&["b"]));
        p.up(a[0].clone(), 1);
        p.up(b[0].clone(), 1);
        p.start(&a[0]);
        p.wait(&a, "on a");
        p.wait(&b, "on b");
        assert_eq!(p.next_ready(), Some((b[0].clone(), "on b")));
        assert_eq!(p.next_ready(), None);
    }

    #[test]
    fn tasks_of_hosts_that_are_all_down_are_stranded() {
        let (mut p, a, ab) = both_full();
        p.wait(&a, 1);
        p.wait(&ab, 2);
        p.down("a");
        assert_eq!(p.stranded(), [(a.clone(), vec![1])], "b may still take 2");
        assert_eq!(p.choose(&ab), Place::Wait);
        p.up(a[0].clone(), 1);
        p.end("a");
        assert_eq!(p.next_ready(), Some((a[0].clone(), 2)), "back, with room");
    }

    #[test]
    fn capacity_is_twice_the_limit() {
        assert_eq!(capacity(Some(2)), 4);
        assert_eq!(capacity(Some(0)), 2);
        assert_eq!(capacity(None), UNLIMITED_CAP);
    }
}
