//! Why a task waits, for `status` and the web page: read from the flow (its limits and
//! pools) against the run's tasks and retries as stored, without asking the run's
//! coordinator. A failed task with a retry not yet taken waits for that retry; a ready task
//! waits for, first match wins: the step's `max_concurrent`, the run's `max_concurrent`, a
//! pool whose units the running tasks hold (or other runs may, for a shared pool); else it
//! is about to start.

use std::collections::HashMap;

use eventor_store::{Micros, RetryRecord, TaskRecord, TaskStatus};

use super::time::timestamp;

use crate::flow::FlowFile;

/// What a flow says about waiting.
#[derive(Debug, Clone, Default)]
pub struct WaitRules {
    /// A step's own `max_concurrent`.
    step_limits: HashMap<String, usize>,
    /// The flow's `max_concurrent`.
    run_limit: Option<usize>,
    /// A pool's capacity, and whether other runs share it.
    pools: HashMap<String, (u32, bool)>,
    /// What each step acquires.
    needs: HashMap<String, Vec<(String, u32)>>,
    /// The steps' names by number (as retry rows name them).
    steps: Vec<String>,
}

impl WaitRules {
    pub fn of_flow(flow: &FlowFile) -> WaitRules {
        let step_limits = flow
            .steps
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.max_concurrent.get()?)))
            .collect();
        let pools = flow
            .resources
            .iter()
            .map(|(name, capacity)| {
                let shared = flow.shared_resources.contains(name);
                (name.clone(), (*capacity, shared))
            })
            .collect();
        let needs = flow
            .steps
            .iter()
            .filter(|s| !s.acquires.is_empty())
            .map(|s| (s.name.clone(), s.acquires.clone()))
            .collect();
        WaitRules {
            step_limits,
            run_limit: flow.config.max_concurrent.and_then(|m| m.get()),
            pools,
            needs,
            steps: flow.steps.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// Each waiting task of `tasks` (by index) with what it waits for: the ready ones, and
    /// the failed ones with a retry of `retries` not yet taken.
    pub fn explain(&self, tasks: &[TaskRecord], retries: &[RetryRecord]) -> HashMap<usize, String> {
        let running = Running::of(tasks, self);
        let due = self.retries_due(retries);
        let mut why = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            let reason = match task.status {
                TaskStatus::Ready => self.reason(task, &running),
                TaskStatus::Failure => match due.get(&(task.step.as_str(), task.sequence.as_str()))
                {
                    Some((number, at)) => format!(
                        "its retry {number} (attempt {}), due at {}",
                        number + 1,
                        timestamp(*at)
                    ),
                    None => continue,
                },
                _ => continue,
            };
            why.insert(i, reason);
        }
        why
    }

    /// The retries not yet taken, by (step, sequence): their number and when they are due.
    fn retries_due<'a>(
        &'a self,
        retries: &'a [RetryRecord],
    ) -> HashMap<(&'a str, &'a str), (i32, Micros)> {
        let pending = retries.iter().filter(|r| !r.taken);
        pending
            .filter_map(|r| {
                let step = self.steps.get(usize::try_from(r.step).ok()?)?;
                Some(((step.as_str(), r.sequence.as_str()), (r.number, r.due_at)))
            })
            .collect()
    }

    fn reason(&self, task: &TaskRecord, running: &Running) -> String {
        let step = task.step.as_str();
        let of_step = running.by_step.get(step).copied().unwrap_or(0);
        if let Some(limit) = self.step_limits.get(step).filter(|l| of_step >= **l) {
            return format!("the step's max_concurrent ({of_step} of {limit} running)");
        }
        if let Some(limit) = self.run_limit.filter(|l| running.all >= *l) {
            return format!(
                "the run's max_concurrent ({} of {limit} running)",
                running.all
            );
        }
        for (pool, need) in self.needs.get(step).into_iter().flatten() {
            let Some((capacity, shared)) = self.pools.get(pool) else {
                continue;
            };
            let held = running.held.get(pool.as_str()).copied().unwrap_or(0);
            if held + need > *capacity || *shared {
                let others = if *shared {
                    ", and what other runs hold"
                } else {
                    ""
                };
                return format!(
                    "pool `{pool}` ({need} wanted, {held} of {capacity} held by running tasks{others})"
                );
            }
        }
        "nothing: it is about to start".to_string()
    }
}

/// What the active tasks take: per step, in all, and of each pool.
struct Running<'a> {
    by_step: HashMap<&'a str, usize>,
    all: usize,
    held: HashMap<&'a str, u32>,
}

impl<'a> Running<'a> {
    fn of(tasks: &'a [TaskRecord], rules: &'a WaitRules) -> Running<'a> {
        let mut running = Running {
            by_step: HashMap::new(),
            all: 0,
            held: HashMap::new(),
        };
        for task in tasks.iter().filter(|t| t.status == TaskStatus::Active) {
            *running.by_step.entry(&task.step).or_default() += 1;
            running.all += 1;
            for (pool, units) in rules.needs.get(&task.step).into_iter().flatten() {
                *running.held.entry(pool).or_default() += units;
            }
        }
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(step: &str, status: TaskStatus, attempt: i32) -> TaskRecord {
        TaskRecord {
            id: 0,
            step: step.into(),
            sequence: "1".into(),
            status,
            attempt,
            host: None,
            pid: None,
            result: None,
            error: None,
            failure_class: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Each reason in its order: a retry, the step's limit, the run's limit, a pool, none.
    #[test]
    fn each_ready_task_is_told_what_it_waits_for() {
        let rules = WaitRules {
            step_limits: HashMap::from([("one".into(), 1)]),
            run_limit: Some(4),
            pools: HashMap::from([("db".into(), (2, false))]),
            needs: HashMap::from([("load".into(), vec![("db".into(), 2)])]),
            steps: vec!["one".into(), "load".into(), "free".into(), "flaky".into()],
        };
        let retry = RetryRecord {
            id: 1,
            step: 3,
            sequence: "1".into(),
            number: 1,
            due_at: 0,
            taken: false,
            created_at: 0,
        };
        let tasks = [
            task("one", TaskStatus::Active, 1),
            task("one", TaskStatus::Ready, 1),
            task("load", TaskStatus::Active, 1),
            task("load", TaskStatus::Ready, 1),
            task("free", TaskStatus::Ready, 1),
            task("flaky", TaskStatus::Failure, 1),
            task("free", TaskStatus::Failure, 1),
        ];
        let why = rules.explain(&tasks, &[retry]);
        assert_eq!(why[&1], "the step's max_concurrent (1 of 1 running)");
        assert_eq!(
            why[&3],
            "pool `db` (2 wanted, 2 of 2 held by running tasks)"
        );
        assert_eq!(why[&4], "nothing: it is about to start");
        assert_eq!(
            why[&5],
            "its retry 1 (attempt 2), due at 1970-01-01T00:00:00Z"
        );
        assert_eq!(
            why.len(),
            4,
            "only ready tasks and failed ones with a retry wait"
        );
        let busy = [
            task("free", TaskStatus::Active, 1),
            task("free", TaskStatus::Active, 1),
            task("one", TaskStatus::Active, 1),
            task("load", TaskStatus::Active, 1),
            task("free", TaskStatus::Ready, 1),
        ];
        assert_eq!(
            rules.explain(&busy, &[])[&4],
            "the run's max_concurrent (4 of 4 running)"
        );
    }
}
