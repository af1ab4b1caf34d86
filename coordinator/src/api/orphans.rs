//! Commands an earlier coordinator left running: a command's supervisor stops its whole
//! tree when its coordinator dies, but a supervisor killed with SIGKILL too, or a command
//! run without one (a library program that did not call `supervise_commands`), takes only
//! the command itself along (parent-death signal), not what it started in its process
//! group. Before a recovery reruns anything, each task its run left `active` on this host
//! has its process group stopped (SIGTERM, the grace period, SIGKILL) when a member of that
//! group is still running and started no earlier than the task recorded its pid, so a
//! reused pid or group id from before is never hit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventor_store::{Micros, TaskRecord, TaskStatus};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How far a process's start may lie from the time its task recorded the pid.
const SAME_PROCESS_WITHIN: Duration = Duration::from_secs(5);
/// Clock ticks per second of /proc/PID/stat's start time (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SECOND: u64 = 100;

/// Stops the groups of `tasks` that are still running here; returns how many it stopped.
pub(super) async fn stop_orphans(tasks: &[TaskRecord], grace: Duration) -> usize {
    let mut stopped = 0;
    for task in tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Active && t.host.is_none())
    {
        let Some(pid) = task
            .pid
            .filter(|&p| p > 0)
            .and_then(|p| i32::try_from(p).ok())
        else {
            continue;
        };
        if !group_alive_since(pid, task.updated_at) {
            continue;
        }
        tracing::warn!(step = %task.step, sequence = %task.sequence, pid,
            "stopping a command an earlier coordinator left running");
        stop_group(pid, grace).await;
        stopped += 1;
    }
    stopped
}

/// Whether a process of group `pgid` runs that started after its task recorded the pid
/// (`at`, less a margin for the commit), i.e. belongs to that task's command.
fn group_alive_since(pgid: i32, at: Micros) -> bool {
    let recorded = UNIX_EPOCH + Duration::from_micros(at.max(0) as u64);
    let since = recorded
        .checked_sub(SAME_PROCESS_WITHIN)
        .unwrap_or(UNIX_EPOCH);
    let Some(boot) = boot_time() else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| group_and_start(&stat, boot))
        .any(|(group, started)| group == pgid && started >= since)
}

/// A process's group and start time from its /proc/PID/stat line.
fn group_and_start(stat: &str, boot: SystemTime) -> Option<(i32, SystemTime)> {
    // The command name is in parentheses and may hold spaces: count fields after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let group: i32 = fields.get(2)?.parse().ok()?;
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    Some((
        group,
        boot + Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND),
    ))
}

fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(btime))
}

async fn stop_group(pid: i32, grace: Duration) {
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while killpg(group, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}
