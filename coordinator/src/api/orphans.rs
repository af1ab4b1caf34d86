//! Commands an earlier coordinator left running: a command's supervisor stops its whole
//! tree when its coordinator dies, but a supervisor killed with SIGKILL too, or a command
//! run without one (a library program that did not call `supervise_commands`), takes only
//! the command itself along (parent-death signal), not what it started in its process
//! group. Before a recovery reruns anything, each task its run left `active` on this host
//! has its process group stopped (SIGTERM, the grace period, SIGKILL) when a member of that
//! group is still running that is that task's: it started no earlier than the task
//! recorded its pid, and its environment (`/proc/PID/environ`) holds the task's own
//! variables, run id, step, sequence, recovery and attempt
//! ([`TaskContext::identity_vars`]). So a reused pid or group id, whether from before or
//! from another run's command started since, is never hit. A task whose pid was not stored
//! yet (the driver holds a pid a few milliseconds for the next batch) has every group
//! stopped that one of its processes is in, found by those variables alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventor_agent::TaskContext;
use eventor_store::{Micros, RunKey, TaskRecord, TaskStatus};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How far a process's start may lie from the time its task recorded the pid.
const SAME_PROCESS_WITHIN: Duration = Duration::from_secs(5);
/// Clock ticks per second of /proc/PID/stat's start time (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SECOND: u64 = 100;

/// Stops the groups of `run`'s `tasks` that are still running here; returns how many it
/// stopped. `env_prefix` is the prefix of the tasks' variables.
pub(super) async fn stop_orphans(
    run: &RunKey,
    env_prefix: &str,
    tasks: &[TaskRecord],
    grace: Duration,
) -> usize {
    // Never the group this coordinator is in (a recovery started by one of its commands).
    let own = nix::unistd::getpgrp().as_raw();
    // Every process's group and environment, read once and only for a task without a pid.
    let mut here: Option<Vec<Seen>> = None;
    let mut stopped = 0;
    for task in tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Active && t.host.is_none())
    {
        let mark = task_mark(run, env_prefix, task);
        // The stored pid leads the command's group; without one, its groups are found by
        // its variables, and any process of them is the task's, however old.
        let (groups, since) = match task.pid {
            Some(pid) => (
                i32::try_from(pid).into_iter().collect(),
                Some(recorded_since(task.updated_at)),
            ),
            None => (
                groups_holding(here.get_or_insert_with(seen_here), &mark),
                None,
            ),
        };
        let mut any = false;
        for group in groups.into_iter().filter(|&g| g > 1 && g != own) {
            // Checked just before its signal: a group gone, or its id taken by another
            // since it was found, is left alone.
            if !group_holds(group, &mark, since) {
                continue;
            }
            tracing::warn!(step = %task.step, sequence = %task.sequence, pid = group,
                "stopping a command an earlier coordinator left running");
            stop_group(group, grace).await;
            any = true;
        }
        stopped += usize::from(any);
    }
    stopped
}

/// The earliest start a process of a task that recorded its pid at `at` may have: that
/// moment less a margin for the commit.
fn recorded_since(at: Micros) -> SystemTime {
    let recorded = UNIX_EPOCH + Duration::from_micros(at.max(0) as u64);
    recorded
        .checked_sub(SAME_PROCESS_WITHIN)
        .unwrap_or(UNIX_EPOCH)
}

/// A process as a task's pid-less stop looks for it: its group and environment.
struct Seen {
    group: i32,
    environ: Vec<u8>,
}

/// Every process here whose environment this user may read.
fn seen_here() -> Vec<Seen> {
    processes()
        .filter_map(|dir| {
            let environ = std::fs::read(dir.join("environ")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let group = group_and_start(&stat, UNIX_EPOCH)?.0;
            Some(Seen { group, environ })
        })
        .collect()
}

/// The process groups of the processes whose environment holds `mark`, each once.
fn groups_holding(here: &[Seen], mark: &[(String, String)]) -> Vec<i32> {
    let mut groups: Vec<i32> = here
        .iter()
        .filter(|seen| environ_holds(&seen.environ, mark))
        .map(|seen| seen.group)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Each process's directory under /proc.
fn processes() -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .map(|e| e.path())
}

/// The variables `task`'s command was started with that name it alone.
fn task_mark(run: &RunKey, env_prefix: &str, task: &TaskRecord) -> [(String, String); 5] {
    let context = TaskContext {
        run_id: run.run_id.clone(),
        step: task.step.as_str().into(),
        sequence: task.sequence.as_str().into(),
        recovery: run.recovery,
        attempt: task.attempt,
        flow: "".into(),
        env_prefix: env_prefix.into(),
        triggers: None,
        trigger_socket: None,
    };
    context.identity_vars()
}

/// Whether a process of group `pgid` runs that is the task's: holding its `mark`, and
/// started no earlier than `since` when given.
fn group_holds(pgid: i32, mark: &[(String, String)], since: Option<SystemTime>) -> bool {
    let Some(boot) = boot_time() else {
        return false;
    };
    processes().any(|dir| {
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            return false;
        };
        let in_time = group_and_start(&stat, boot).is_some_and(|(group, started)| {
            group == pgid && since.is_none_or(|since| started >= since)
        });
        // Read only for the group's members; another user's is unreadable: not ours.
        in_time && std::fs::read(dir.join("environ")).is_ok_and(|env| environ_holds(&env, mark))
    })
}

/// Whether `environ` (NUL-separated `NAME=VALUE`s) holds every variable of `mark` with
/// exactly its value.
fn environ_holds(environ: &[u8], mark: &[(String, String)]) -> bool {
    mark.iter().all(|(name, value)| {
        environ.split(|&b| b == 0).any(|entry| {
            entry.len() == name.len() + 1 + value.len()
                && entry.starts_with(name.as_bytes())
                && entry[name.len()] == b'='
                && entry.ends_with(value.as_bytes())
        })
    })
}

/// A process's group and start time from its /proc/PID/stat line.
fn group_and_start(stat: &str, boot: SystemTime) -> Option<(i32, SystemTime)> {
    let fields = stat_fields(stat)?;
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

/// How long a group killed with SIGKILL may take to be gone (its members reaped).
const KILLED_GONE_WITHIN: Duration = Duration::from_secs(2);

/// SIGTERM, the grace period, SIGKILL when still running; returns once the group is gone
/// (or the kill's wait ran out), so what reruns next never starts beside it.
async fn stop_group(pid: i32, grace: Duration) {
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    wait_gone(group, grace).await;
    if group_runs(pid) {
        let _ = killpg(group, Signal::SIGKILL);
        wait_gone(group, KILLED_GONE_WITHIN).await;
    }
}

/// Waits until no process of `group` runs (a zombie waiting for its parent has ended),
/// at most `limit`.
async fn wait_gone(group: Pid, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while group_runs(group.as_raw()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process of `group` is here that has not ended.
fn group_runs(group: i32) -> bool {
    processes().any(|dir| {
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            return false;
        };
        let Some(fields) = stat_fields(&stat) else {
            return false;
        };
        fields[0] != "Z" && fields.get(2).and_then(|g| g.parse().ok()) == Some(group)
    })
}

/// The fields of a /proc/PID/stat line after the command name (state first).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    // The command name is in parentheses and may hold spaces: count fields after it.
    Some(stat.get(stat.rfind(')')? + 2..)?.split(' ').collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};
    use std::sync::Arc;

    fn run(run_id: &str) -> RunKey {
        RunKey {
            run_id: Arc::from(run_id),
            recovery: 1,
        }
    }

    /// The task `s[7]`, attempt 2, recorded `active` here with `pid` just now.
    fn active_task(pid: u32) -> TaskRecord {
        TaskRecord {
            id: 1,
            step: "s".into(),
            sequence: "7".into(),
            status: TaskStatus::Active,
            attempt: 2,
            host: None,
            pid: Some(i64::from(pid)),
            failure_class: None,
            result: None,
            error: None,
            created_at: eventor_store::now_micros(),
            updated_at: eventor_store::now_micros(),
        }
    }

    /// `sleep 30` leading a process group of its own, with `vars` in its environment.
    fn sleeper(vars: &[(String, String)]) -> Child {
        let mut command = Command::new("sleep");
        command
            .arg("30")
            .process_group(0)
            .envs(vars.iter().cloned());
        command.spawn().unwrap()
    }

    /// A pid reused by a process of no task (a `sleep` without the variables), or by the
    /// same step's command of another run or attempt, is left alone, though it started
    /// after the task recorded its pid.
    #[tokio::test]
    async fn a_process_that_is_not_the_tasks_own_is_never_signalled() {
        let key = run("r1");
        let task = active_task(0);
        let other_run = task_mark(&run("r2"), "EVENTOR_", &task);
        let mut other_attempt = task_mark(&key, "EVENTOR_", &task);
        other_attempt[4].1 = "1".into();
        let strangers = [sleeper(&[]), sleeper(&other_run), sleeper(&other_attempt)];
        for mut stranger in strangers {
            let task = active_task(stranger.id());
            let grace = Duration::from_millis(100);
            assert_eq!(stop_orphans(&key, "EVENTOR_", &[task], grace).await, 0);
            assert!(stranger.try_wait().unwrap().is_none(), "still running");
            stranger.kill().unwrap();
            stranger.wait().unwrap();
        }
    }

    #[tokio::test]
    async fn the_tasks_own_group_is_stopped() {
        let key = run("r1");
        let mut own = sleeper(&task_mark(&key, "EV_", &active_task(0)));
        let task = active_task(own.id());
        let grace = Duration::from_millis(100);
        assert_eq!(stop_orphans(&key, "EV_", &[task], grace).await, 1);
        assert_eq!(own.wait().unwrap().signal(), Some(Signal::SIGTERM as i32));
    }

    /// A task whose pid was never stored (its coordinator died while holding it) has the
    /// group of its own command stopped, found by its variables; the same step's command of
    /// another attempt is left running.
    #[tokio::test]
    async fn a_task_without_a_stored_pid_has_its_own_group_found_and_stopped() {
        // A run of its own: the test beside it starts a command with r1's same task marks.
        let key = run("r3");
        let mut unstored = active_task(0);
        unstored.pid = None;
        let mut own = sleeper(&task_mark(&key, "EV_", &unstored));
        let mut other_attempt = task_mark(&key, "EV_", &unstored);
        other_attempt[4].1 = "1".into();
        let mut stranger = sleeper(&other_attempt);
        let grace = Duration::from_millis(100);
        assert_eq!(stop_orphans(&key, "EV_", &[unstored], grace).await, 1);
        assert_eq!(own.wait().unwrap().signal(), Some(Signal::SIGTERM as i32));
        assert!(stranger.try_wait().unwrap().is_none(), "still running");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    #[test]
    fn an_environment_holds_a_mark_only_with_every_value_exact() {
        let mark = [
            ("A_X".to_string(), "1".to_string()),
            ("A_Y".into(), "".into()),
        ];
        assert!(environ_holds(b"PATH=/bin\0A_Y=\0A_X=1\0", &mark));
        assert!(!environ_holds(b"A_X=10\0A_Y=\0", &mark));
        assert!(!environ_holds(b"A_X=1\0", &mark));
        assert!(!environ_holds(b"XA_X=1\0A_Y=\0", &mark));
    }
}
