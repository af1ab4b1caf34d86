//! The keeper's view of processes, from /proc: descendants by parent links (what a stop
//! signals; the keeper is the subreaper, so whatever a death orphans stays in its tree),
//! its own children, and the command number in an orphan's environment.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};

/// Sends `signal` to all this process's descendants, parents before children.
pub(super) fn signal_descendants(signal: Signal) {
    for process in descendants_of(getpid().as_raw(), &processes()) {
        let _ = kill(Pid::from_raw(process.pid), signal);
    }
}

/// Sends `signal` to each of `roots` and all their descendants, parents before children.
pub(super) fn signal_trees(roots: &[i32], signal: Signal) {
    let processes = processes();
    for root in roots {
        let _ = kill(Pid::from_raw(*root), signal);
        for process in descendants_of(*root, &processes) {
            let _ = kill(Pid::from_raw(process.pid), signal);
        }
    }
}

/// This process's children, from its one thread's `children` file.
pub(super) fn own_children() -> Vec<i32> {
    let me = getpid();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// The number `pid`'s environment gives `var`, if it has one.
pub(super) fn number_in_environment(pid: i32, var: &str) -> Option<u64> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
}

/// One process as its /proc/PID/stat line tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    parent: i32,
}

/// Every process (those that end meanwhile are simply missing).
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<i32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| process_of(&stat))
        .collect()
}

/// A process from its /proc/PID/stat line.
fn process_of(stat: &str) -> Option<Process> {
    let pid = stat.split(' ').next()?.parse().ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ').skip(1);
    let parent = fields.next()?.parse().ok()?;
    Some(Process { pid, parent })
}

/// `root`'s descendants, parents before their children.
fn descendants_of(root: i32, processes: &[Process]) -> Vec<Process> {
    let mut children: HashMap<i32, Vec<Process>> = HashMap::new();
    for process in processes {
        children.entry(process.parent).or_default().push(*process);
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            found.push(*child);
            next.push(child.pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 17 4240 4240 0 -1 4194560";
        let read = process_of(stat);
        assert_eq!(
            read,
            Some(Process {
                pid: 4242,
                parent: 17,
            })
        );
        assert_eq!(process_of("garbage"), None);
    }

    #[test]
    fn descendants_are_the_whole_subtree_and_nothing_else() {
        let links = [(2, 1), (3, 1), (4, 2), (5, 4), (10, 9)];
        let processes: Vec<Process> = links
            .into_iter()
            .map(|(pid, parent)| Process { pid, parent })
            .collect();
        let mut found: Vec<i32> = descendants_of(2, &processes)
            .iter()
            .map(|p| p.pid)
            .collect();
        found.sort();
        assert_eq!(found, vec![4, 5]);
    }
}
