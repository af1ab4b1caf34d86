//! A supervisor's descendants, found in /proc by parent links: what it signals on a stop.
//! (It is the subreaper, so whatever a descendant's death orphans stays in its tree.)

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpgrp, getpid, Pid};

/// Which descendants a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    All,
    /// Those out of this process's group (the group had the signal already).
    LeftTheGroup,
}

/// Sends `signal` to this process's descendants `reach` names, parents before children.
pub(super) fn signal_descendants(signal: Signal, reach: Reach) {
    let group = getpgrp().as_raw();
    for process in descendants_of(getpid().as_raw(), &processes()) {
        if reach == Reach::All || process.group != group {
            let _ = kill(Pid::from_raw(process.pid), signal);
        }
    }
}

/// One process as its /proc/PID/stat line tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    parent: i32,
    group: i32,
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
    let group = fields.next()?.parse().ok()?;
    Some(Process { pid, parent, group })
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
                group: 4240
            })
        );
        assert_eq!(process_of("garbage"), None);
    }

    #[test]
    fn descendants_are_the_whole_subtree_and_nothing_else() {
        let links = [(2, 1), (3, 1), (4, 2), (5, 4), (10, 9)];
        let processes: Vec<Process> = links
            .into_iter()
            .map(|(pid, parent)| Process {
                pid,
                parent,
                group: 1,
            })
            .collect();
        let mut found: Vec<i32> = descendants_of(2, &processes)
            .iter()
            .map(|p| p.pid)
            .collect();
        found.sort();
        assert_eq!(found, vec![4, 5]);
    }
}
