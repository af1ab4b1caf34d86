//! Runs and tasks loaded from the store and summed up: the rows of `runs`, the data of
//! `status`, per-step statistics. Shared by the command line and the web page.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use eventor_store::{
    now_micros, HostHealthRecord, Micros, RetryRecord, RunKey, RunRecord, RunStatus, Store,
    StoreLocation, TaskCount, TaskRecord, TaskStatus,
};
use serde::Serialize;

use super::waiting::WaitRules;
use super::ReportError;

/// Tasks by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ready: u64,
    pub active: u64,
    pub success: u64,
    pub failure: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        match status {
            TaskStatus::Ready => self.ready += n,
            TaskStatus::Active => self.active += n,
            TaskStatus::Success => self.success += n,
            TaskStatus::Failure => self.failure += n,
            TaskStatus::Skipped => self.skipped += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.ready + self.active + self.success + self.failure + self.skipped
    }

    /// Finished tasks (success, failure, skipped).
    pub fn done(&self) -> u64 {
        self.success + self.failure + self.skipped
    }

    /// The counts as (status, count) pairs, in the order statuses are listed.
    pub fn pairs(&self) -> [(&'static str, u64); 5] {
        [
            ("ready", self.ready),
            ("active", self.active),
            ("success", self.success),
            ("failure", self.failure),
            ("skipped", self.skipped),
        ]
    }

    /// One word for the lot, as a step is coloured: failure wins, then active, ready,
    /// success; `none` without tasks.
    pub fn state(&self) -> &'static str {
        if self.failure > 0 {
            "failure"
        } else if self.active > 0 {
            "active"
        } else if self.ready > 0 {
            "ready"
        } else if self.success + self.skipped > 0 {
            "success"
        } else {
            "none"
        }
    }
}

/// One run recovery as `runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub recovery: i32,
    pub flow: String,
    pub mode: String,
    pub host: String,
    /// The run's status as stored (`success`, `failure`, `incomplete`, `running`, or any
    /// status a newer coordinator writes), or [`ABANDONED`].
    pub outcome: String,
    #[serde(skip)]
    pub started_at: Micros,
    #[serde(skip)]
    pub ended_at: Option<Micros>,
    pub counts: Counts,
    /// The run's parameters (none for a run stored before there were any).
    pub params: BTreeMap<String, String>,
    /// The names of the variables its tasks got from the prime (never their values).
    pub env_from_prime: Vec<String>,
}

/// What a run stored as running shows when no coordinator holds it any more (it was killed,
/// or its machine went down) or a later recovery of it started: it will not end by itself.
pub const ABANDONED: &str = "abandoned";

/// Whether `run`, stored as running, is no one's: a later recovery of it is running too
/// (one coordinator per run id, and it runs the newest), or no coordinator holds its run id
/// and the row, read again, still says running (a coordinator records its end before it
/// lets the lock go, so a run that just ended is not taken for abandoned). When the lock
/// cannot be asked about, the run is as stored.
async fn abandoned(store: &Store, run: &RunRecord, superseded: bool) -> bool {
    if run.status != RunStatus::Running {
        return false;
    }
    if superseded {
        return true;
    }
    if store.run_held(&run.key.run_id).await.unwrap_or(true) {
        return false;
    }
    match store.run_history(&run.key.run_id).await {
        Ok(history) => history
            .iter()
            .any(|r| r.key == run.key && r.status == RunStatus::Running),
        Err(_) => false,
    }
}

/// The newest recovery stored as running, per run id: an older running one is superseded.
fn newest_running(runs: &[RunRecord]) -> HashMap<&str, i32> {
    let mut newest: HashMap<&str, i32> = HashMap::new();
    for run in runs.iter().filter(|r| r.status == RunStatus::Running) {
        let recovery = newest.entry(&*run.key.run_id).or_insert(run.key.recovery);
        *recovery = (*recovery).max(run.key.recovery);
    }
    newest
}

/// Whether a later recovery than `run`'s is running (`newest`: from [`newest_running`]).
fn superseded(run: &RunRecord, newest: &HashMap<&str, i32>) -> bool {
    newest
        .get(&*run.key.run_id)
        .is_some_and(|&n| n > run.key.recovery)
}

impl RunSummary {
    fn of(run: &RunRecord, counts: Counts, abandoned: bool) -> RunSummary {
        let outcome = if abandoned {
            ABANDONED
        } else {
            run.status.as_str()
        };
        RunSummary {
            run_id: run.key.run_id.to_string(),
            recovery: run.key.recovery,
            flow: run.name.clone(),
            mode: run.mode.as_str().to_string(),
            host: run.host.clone(),
            outcome: outcome.to_string(),
            started_at: run.started_at,
            ended_at: run.ended_at,
            counts,
            params: run.params.clone().unwrap_or_default(),
            env_from_prime: run.env_from_prime.clone(),
        }
    }

    /// From start to end, or to now while it runs.
    pub fn duration_end(&self) -> Micros {
        self.ended_at.unwrap_or_else(now_micros)
    }
}

/// Opens the store for reading; an SQLite file that does not exist is not created.
pub async fn open_store(location: &StoreLocation) -> Result<Store, ReportError> {
    if let StoreLocation::Sqlite(path) = location {
        if !Path::new(path).exists() {
            return Err(ReportError::NoStore {
                path: path.display().to_string(),
            });
        }
    }
    Store::open(location)
        .await
        .map_err(|source| ReportError::Open {
            store: location.to_string(),
            source,
        })
}

fn reading(store: &Store) -> impl Fn(eventor_store::StoreError) -> ReportError + '_ {
    move |source| ReportError::Store {
        store: store.describe(),
        source,
    }
}

/// The runs (every recovery) of the flow `flow`, or of every flow, newest first, with their
/// task counts.
pub async fn list_runs(store: &Store, flow: Option<&str>) -> Result<Vec<RunSummary>, ReportError> {
    let runs = store.runs(flow).await.map_err(reading(store))?;
    let counts = count_by_run(store.task_counts().await.map_err(reading(store))?);
    let newest = newest_running(&runs);
    let mut summaries = Vec::with_capacity(runs.len());
    for run in &runs {
        let abandoned = abandoned(store, run, superseded(run, &newest)).await;
        let counts = counts.get(&run.key).copied().unwrap_or_default();
        summaries.push(RunSummary::of(run, counts, abandoned));
    }
    Ok(summaries)
}

fn count_by_run(rows: Vec<TaskCount>) -> HashMap<RunKey, Counts> {
    let mut counts: HashMap<RunKey, Counts> = HashMap::new();
    for row in rows {
        let n = u64::try_from(row.count).unwrap_or(0);
        counts.entry(row.run).or_default().add(row.status, n);
    }
    counts
}

/// Which run a report is about: the given id (its latest recovery, or `recovery`), else the
/// newest run of the flow.
#[derive(Debug, Clone, Default)]
pub struct RunSelector {
    pub flow: Option<String>,
    pub run_id: Option<String>,
    pub recovery: Option<i32>,
}

/// A run recovery and its tasks, as `status` shows them.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run: RunRecord,
    pub tasks: Vec<TaskRecord>,
    /// Stored as running, but no one's (see [`ABANDONED`]).
    pub abandoned: bool,
    /// Delays of the recovery not yet fired: work still to come.
    pub pending_delays: usize,
    /// The recovery's retries, taken or not.
    pub retries: Vec<RetryRecord>,
    /// What the waiting tasks wait for, by index in `tasks` (see [`Self::explain_waiting`]).
    pub waiting: HashMap<usize, String>,
    /// Who cancelled the run (`eventor-coord cancel (user@host)`), from its first cancel
    /// request.
    pub cancelled_by: Option<String>,
    /// Each host's health as the run's prime last wrote it (cluster runs), by name.
    pub hosts: Vec<HostHealthRecord>,
}

/// Loads the run `selector` names and its tasks, and whether it was abandoned.
pub async fn run_report(store: &Store, selector: &RunSelector) -> Result<RunReport, ReportError> {
    let (mut report, superseded) = load_report(store, selector).await?;
    report.abandoned = abandoned(store, &report.run, superseded).await;
    Ok(report)
}

/// [`run_report`] for the run's own coordinator, which holds the run: not asked.
pub async fn own_run_report(
    store: &Store,
    selector: &RunSelector,
) -> Result<RunReport, ReportError> {
    Ok(load_report(store, selector).await?.0)
}

/// The run and its tasks, and whether a later recovery of it is running.
async fn load_report(
    store: &Store,
    selector: &RunSelector,
) -> Result<(RunReport, bool), ReportError> {
    let (run, superseded) = select_run(store, selector).await?;
    let tasks = store.tasks(run.key.clone()).await.map_err(reading(store))?;
    let delays = store
        .delays(run.key.clone())
        .await
        .map_err(reading(store))?;
    let retries = store
        .retries(run.key.clone())
        .await
        .map_err(reading(store))?;
    let requests = store
        .requests_after(run.key.clone(), 0)
        .await
        .map_err(reading(store))?;
    let cancel = requests
        .into_iter()
        .find(|r| r.kind == Some(eventor_store::RequestKind::Cancel));
    let hosts = store
        .host_health(run.key.clone())
        .await
        .map_err(reading(store))?;
    let report = RunReport {
        run,
        tasks,
        abandoned: false,
        pending_delays: delays.iter().filter(|d| !d.fired).count(),
        retries,
        waiting: HashMap::new(),
        cancelled_by: cancel.map(|r| r.by),
        hosts,
    };
    Ok((report, superseded))
}

/// The run, and whether a later recovery of it is running.
async fn select_run(
    store: &Store,
    selector: &RunSelector,
) -> Result<(RunRecord, bool), ReportError> {
    let Some(run_id) = &selector.run_id else {
        let flow = selector.flow.clone().unwrap_or_default();
        let latest = store.latest_run(&flow).await.map_err(reading(store))?;
        let latest = latest.ok_or_else(|| ReportError::NoRuns {
            flow,
            store: store.describe(),
        })?;
        return Ok((latest, false));
    };
    let history = store.run_history(run_id).await.map_err(reading(store))?;
    let wanted = match selector.recovery {
        Some(n) => history.iter().find(|r| r.key.recovery == n),
        None => history.last(),
    };
    let newest = newest_running(&history);
    let wanted = wanted.map(|run| (run.clone(), superseded(run, &newest)));
    wanted.ok_or_else(|| ReportError::NoSuchRun {
        run_id: match selector.recovery {
            Some(n) => format!("{run_id} recovery {n}"),
            None => run_id.clone(),
        },
        store: store.describe(),
    })
}

/// One step's tasks summed up.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: String,
    pub counts: Counts,
    pub hosts: Vec<String>,
    /// Durations (updated − created) of the finished tasks, in microseconds.
    pub min: Option<Micros>,
    pub median: Option<Micros>,
    pub max: Option<Micros>,
    /// The highest attempt number of its tasks.
    pub attempts: i32,
}

impl RunReport {
    /// Every step with tasks, in order of its first task.
    pub fn steps(&self) -> Vec<StepStats> {
        let mut order: Vec<&str> = Vec::new();
        let mut by_step: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
        for task in &self.tasks {
            let entry = by_step.entry(task.step.as_str()).or_default();
            if entry.is_empty() {
                order.push(&task.step);
            }
            entry.push(task);
        }
        order
            .into_iter()
            .map(|step| step_stats(step, &by_step[step]))
            .collect()
    }

    /// Gives the tasks without a stored host the host their step is pinned to (`pins`: step →
    /// host). A remote task's host is stored with its end (by its agent, or by the prime when
    /// the host was lost), so this covers the rest: tasks still running or waiting, runs of
    /// earlier versions; a step pinned to several hosts shows them all (`a|b`).
    pub fn fill_pinned_hosts(&mut self, pins: &HashMap<String, String>) {
        // A host is stored with an attempt's end: an active task's stored host, if any, is
        // an earlier attempt's (a retry may run elsewhere), so it shows where it may run.
        let unknown = |t: &TaskRecord| t.host.is_none() || t.status == TaskStatus::Active;
        for task in self.tasks.iter_mut().filter(|t| unknown(t)) {
            task.host = pins.get(&task.step).cloned();
        }
    }

    /// Says what each waiting task waits for, by the flow's `rules`.
    pub fn explain_waiting(&mut self, rules: &WaitRules) {
        self.waiting = rules.explain(&self.tasks, &self.retries);
    }

    /// The tasks that wait, in creation order, with what for.
    pub fn waiting(&self) -> impl Iterator<Item = (&TaskRecord, &str)> {
        let tasks = self.tasks.iter().enumerate();
        tasks.filter_map(|(i, t)| Some((t, self.waiting.get(&i)?.as_str())))
    }

    /// The tasks that failed, in creation order.
    pub fn failed(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failure)
    }

    /// All tasks by status.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        self.tasks.iter().for_each(|t| counts.add(t.status, 1));
        counts
    }

    /// The run as a summary row.
    pub fn summary(&self) -> RunSummary {
        RunSummary::of(&self.run, self.counts(), self.abandoned)
    }

    /// The run's status as stored, or [`ABANDONED`].
    pub fn outcome(&self) -> &'static str {
        if self.abandoned {
            ABANDONED
        } else {
            self.run.status.as_str()
        }
    }

    /// Whether the run may still change: it is running and someone runs it.
    pub fn is_live(&self) -> bool {
        self.run.status == RunStatus::Running && !self.abandoned
    }
}

fn step_stats(step: &str, tasks: &[&TaskRecord]) -> StepStats {
    let mut counts = Counts::default();
    let mut hosts: Vec<String> = Vec::new();
    let mut spans: Vec<Micros> = Vec::new();
    for task in tasks {
        counts.add(task.status, 1);
        if let Some(host) = &task.host {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        if task.status.is_final() && task.status != TaskStatus::Skipped {
            spans.push(task.updated_at - task.created_at);
        }
    }
    spans.sort_unstable();
    StepStats {
        step: step.to_string(),
        counts,
        hosts,
        min: spans.first().copied(),
        median: spans.get(spans.len() / 2).copied(),
        max: spans.last().copied(),
        attempts: tasks.iter().map(|t| t.attempt).max().unwrap_or(0),
    }
}

/// The first line of a task's error, for one-line listings.
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_store::RunMode;

    fn run(run_id: &str, recovery: i32, status: RunStatus) -> RunRecord {
        RunRecord {
            key: RunKey {
                run_id: run_id.into(),
                recovery,
            },
            name: "f".into(),
            mode: RunMode::Restart,
            status,
            host: "h".into(),
            program: String::new(),
            started_at: 0,
            ended_at: None,
            params: None,
            env_from_prime: Vec::new(),
            cause: None,
        }
    }

    /// A retried task running again shows where it may run, not the host of its failed
    /// attempt (stored with that end); an ended task keeps its own.
    #[test]
    fn an_active_retry_shows_its_pins_not_its_last_attempts_host() {
        let task = |status, host: &str| TaskRecord {
            id: 0,
            step: "w".into(),
            sequence: "1".into(),
            status,
            attempt: 2,
            host: Some(host.into()),
            pid: None,
            result: None,
            error: None,
            failure_class: None,
            created_at: 0,
            updated_at: 0,
        };
        let mut report = RunReport {
            run: run("A", 0, RunStatus::Running),
            tasks: vec![
                task(TaskStatus::Active, "node1"),
                task(TaskStatus::Failure, "node1"),
            ],
            abandoned: false,
            pending_delays: 0,
            retries: Vec::new(),
            waiting: HashMap::new(),
            cancelled_by: None,
            hosts: Vec::new(),
        };
        report.fill_pinned_hosts(&HashMap::from([("w".into(), "node1|node2".into())]));
        let hosts: Vec<_> = report.tasks.iter().map(|t| t.host.as_deref()).collect();
        assert_eq!(hosts, [Some("node1|node2"), Some("node1")]);
    }

    /// Only a later recovery that is itself running supersedes one (a continued older
    /// recovery beside a finished newer one is live); other run ids do not count.
    #[test]
    fn a_running_recovery_is_superseded_only_by_a_later_running_one() {
        use RunStatus::*;
        let runs = [
            run("A", 0, Running),
            run("A", 1, Running),
            run("B", 0, Running),
            run("B", 1, Success),
            run("C", 3, Running),
        ];
        let newest = newest_running(&runs);
        let shown: Vec<bool> = runs.iter().map(|r| superseded(r, &newest)).collect();
        assert_eq!(shown, [true, false, false, false, false]);
    }
}
