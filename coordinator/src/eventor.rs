//! The `Eventor` API: define events, steps and associations, trigger, run, close.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventor_store::{
    now_micros, DelayRecord, Micros, NewRun, RunGuard, RunKey, RunMode, RunRecord, RunStatus,
    Store, StoreError, StoreLocation, TaskRecord, TriggerRecord,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentOptions};
use crate::cluster::central_log::CentralLog;
use crate::cluster::hosts::HostsFile;
use crate::cluster::link::ConnectOptions;
use crate::config::EventorConfig;
use crate::engine::core::{
    Core, CoreOptions, Input, PreviousTask, StoredDelay, StoredState, StoredTask,
};
use crate::engine::driver::{drive, DriverContext, Loops};
use crate::engine::executor::{CentralOutput, ExecEvent, Executor, ExecutorConfig, StepRuntime};
use crate::engine::external::ExternalTriggers;
use crate::engine::program::{
    AssocDef, AssocId, Cond, EventDef, EventId, PoolDef, PoolId, Program, StepDef, StepId,
    StepTriggers, Target,
};
use crate::engine::remote::{Remote, RemoteConfig};
use crate::expr::Expr;
use crate::step::{Step, StepAction, TaskContext, TriggerSender};

/// How a run is set up. Build with struct update syntax:
/// `EventorOptions { name: "nightly".into(), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct EventorOptions {
    /// The flow's name: names the default store file and the runs in it.
    pub name: String,
    /// Where the store is; `None`: `<name>.run.db` in the working directory.
    pub store: Option<StoreLocation>,
    pub run_mode: RunMode,
    /// The run's id; `None`: a new one is generated (and reported by [`Eventor::run_id`]), or
    /// for recover/continue, the latest run of this flow in the store.
    pub run_id: Option<String>,
    /// Recover from this recovery of the run instead of its latest one.
    pub recovery: Option<i32>,
    pub config: EventorConfig,
    /// How long a stopped command gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Where the run's central log goes (`<logdir>/<flow>/<run_id>.log`, read with
    /// `eventor-coord logs`); `None`: no central log, output only in the console log.
    pub logdir: Option<PathBuf>,
    /// The cluster, for steps pinned to hosts; `None`: everything runs here.
    pub cluster: Option<ClusterOptions>,
    /// Most threads running blocking closure steps at once; more ready closures wait for a
    /// thread (a bounded pool keeps a fan-out of 100,000 closures from starting thousands).
    pub closure_threads: usize,
}

impl Default for EventorOptions {
    fn default() -> Self {
        EventorOptions {
            name: "eventor".to_string(),
            store: None,
            run_mode: RunMode::Restart,
            run_id: None,
            recovery: None,
            config: EventorConfig::default(),
            kill_grace: Duration::from_secs(5),
            logdir: None,
            cluster: None,
            closure_threads: 64,
        }
    }
}

/// Where pinned steps run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub hosts: HostsFile,
    /// A host silent for this long is lost (its running tasks fail); at most 10 s.
    pub lost_after: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Success,
    /// Some task failed and nothing handled it.
    Failure {
        failed: Vec<FailedTask>,
    },
    /// The loops ran out (or delays are pending) with work left.
    Incomplete {
        outstanding: usize,
        next_due: Option<SystemTime>,
    },
}

impl EventorError {
    /// Whether the error is in what the user gave (a definition, an option, a missing earlier
    /// run) rather than a failure while running.
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            EventorError::Store { .. }
                | EventorError::Runtime(_)
                | EventorError::Closed
                | EventorError::Cluster(_)
                | EventorError::Agent(_)
                | EventorError::Log(_)
        )
    }
}

impl RunOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Success)
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunOutcome::Success => write!(f, "success"),
            RunOutcome::Failure { failed } => {
                write!(f, "failure: ")?;
                for (i, task) in failed.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}[{}]", task.step, task.sequence)?;
                    if let Some(error) = &task.error {
                        write!(f, " ({error})")?;
                    }
                }
                Ok(())
            }
            RunOutcome::Incomplete {
                outstanding,
                next_due,
            } => {
                write!(f, "incomplete: {outstanding} outstanding")?;
                if let Some(due) = next_due {
                    write!(
                        f,
                        ", next due at {}",
                        humantime::format_rfc3339_seconds(*due)
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// A task that failed without a failure trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    pub step: String,
    pub sequence: String,
    pub error: Option<String>,
}

/// Why defining or running a flow failed. Messages are lowercase; causes in `source`.
#[derive(Debug, thiserror::Error)]
pub enum EventorError {
    #[error("`{0}` is already defined")]
    Duplicate(String),
    #[error("event `{event}`: {message}")]
    BadExpression { event: String, message: String },
    #[error("{context}: unknown event `{name}`")]
    UnknownEvent { context: String, name: String },
    #[error("{context}: unknown step or event `{name}`")]
    UnknownTarget { context: String, name: String },
    #[error("resource pool `{0}` is defined twice")]
    DuplicatePool(String),
    #[error("step `{step}`: unknown resource pool `{pool}`")]
    UnknownPool { step: String, pool: String },
    #[error("step `{step}`: acquires {wanted} of pool `{pool}`, whose capacity is {capacity}")]
    OverCapacity {
        step: String,
        pool: String,
        wanted: u32,
        capacity: u32,
    },
    #[error("no previous run to {mode} in {store}")]
    NoPreviousRun { mode: RunMode, store: String },
    #[error("run {run_id} has no recovery {recovery} in {store}")]
    NoSuchRecovery {
        run_id: String,
        recovery: i32,
        store: String,
    },
    #[error("{0}")]
    RunLocked(String),
    #[error("central log: {0}")]
    Log(String),
    #[error("step `{step}` is pinned to host `{host}`, which {}", match hosts_file {
        Some(path) => format!("{} does not name", path.display()),
        None => "needs a hosts file (--hosts)".to_string(),
    })]
    UnknownHost {
        step: String,
        host: String,
        hosts_file: Option<PathBuf>,
    },
    #[error("cannot reach the cluster: {0}")]
    Cluster(String),
    #[error("serving as an agent: {0}")]
    Agent(String),
    #[error("store {store}")]
    Store {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot start a runtime for the run")]
    Runtime(#[source] std::io::Error),
    #[error("run() was called inside a tokio runtime; use run_async().await there")]
    InsideRuntime,
    #[error("the eventor is closed")]
    Closed,
}

/// The state of a run in progress (kept between `run` calls so a second call continues).
struct Running {
    store: Store,
    external: ExternalTriggers,
    /// Held for the whole run: a second coordinator of the same run id is refused.
    _guard: RunGuard,
    task_triggers: mpsc::UnboundedReceiver<Input>,
    key: RunKey,
    core: Core,
    steps: Vec<StepRuntime>,
    template: TaskContext,
}

/// A flow and its run. See the crate docs for an example.
pub struct Eventor {
    options: EventorOptions,
    events: Vec<(String, Option<Expr>)>,
    steps: Vec<Step>,
    names: HashMap<String, Target>,
    assocs: Vec<(String, Vec<String>, Option<Duration>)>,
    pools: Vec<(String, u32)>,
    triggers: Vec<(String, Arc<str>)>,
    run_id: Arc<str>,
    running: Option<Running>,
    closed: bool,
}

impl Eventor {
    pub fn new(options: EventorOptions) -> Result<Eventor, EventorError> {
        let run_id: Arc<str> = match &options.run_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(generate_run_id().as_str()),
        };
        Ok(Eventor {
            options,
            events: Vec::new(),
            steps: Vec::new(),
            names: HashMap::new(),
            assocs: Vec::new(),
            pools: Vec::new(),
            triggers: Vec::new(),
            run_id,
            running: None,
            closed: false,
        })
    }

    /// The run's id (given in the options, or generated).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// Where the store is.
    pub fn store_location(&self) -> StoreLocation {
        self.options.store.clone().unwrap_or_else(|| {
            StoreLocation::Sqlite(PathBuf::from(format!("{}.run.db", self.options.name)))
        })
    }

    /// Defines an event; with an expression, it fires when the expression holds in a sequence.
    pub fn add_event(
        &mut self,
        name: impl Into<String>,
        expr: Option<Expr>,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        let id = EventId(self.events.len() as u32);
        self.claim_name(&name, Target::Event(id))?;
        self.events.push((name, expr));
        Ok(self)
    }

    /// Defines an expression event from text such as `"s1_done & (s2_done | s2_failed)"`.
    pub fn add_event_expr(
        &mut self,
        name: impl Into<String>,
        expr: &str,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        let parsed = Expr::parse(expr).map_err(|e| EventorError::BadExpression {
            event: name.clone(),
            message: e.to_string(),
        })?;
        self.add_event(name, Some(parsed))
    }

    pub fn add_step(&mut self, step: Step) -> Result<&mut Self, EventorError> {
        let id = StepId(self.steps.len() as u32);
        self.claim_name(&step.name, Target::Step(id))?;
        self.steps.push(step);
        Ok(self)
    }

    /// When `event` fires in a sequence, activates each target (a step or an event) in it,
    /// after `delay` if given.
    pub fn add_assoc<I, S>(
        &mut self,
        event: impl Into<String>,
        targets: I,
        delay: Option<Duration>,
    ) -> Result<&mut Self, EventorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let targets = targets.into_iter().map(Into::into).collect();
        self.assocs.push((event.into(), targets, delay));
        Ok(self)
    }

    /// Defines a resource pool of `capacity` units that steps acquire from.
    pub fn add_resource_pool(
        &mut self,
        name: impl Into<String>,
        capacity: u32,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        if self.pools.iter().any(|(n, _)| *n == name) {
            return Err(EventorError::DuplicatePool(name));
        }
        self.pools.push((name, capacity));
        Ok(self)
    }

    /// Fires `event` in `sequence` when the run starts (or at once, if it is running).
    pub fn trigger_event(
        &mut self,
        event: impl Into<String>,
        sequence: impl Into<String>,
    ) -> Result<&mut Self, EventorError> {
        let event = event.into();
        match self.names.get(&event) {
            Some(Target::Event(_)) => {}
            _ => {
                return Err(EventorError::UnknownEvent {
                    context: "trigger_event".into(),
                    name: event,
                })
            }
        }
        self.triggers
            .push((event, Arc::from(sequence.into().as_str())));
        Ok(self)
    }

    fn claim_name(&mut self, name: &str, target: Target) -> Result<(), EventorError> {
        if self.names.contains_key(name) {
            return Err(EventorError::Duplicate(name.to_string()));
        }
        self.names.insert(name.to_string(), target);
        Ok(())
    }

    /// Runs the flow on a runtime of its own. `max_loops < 0`: until nothing is left.
    pub fn run(&mut self, max_loops: i64) -> Result<RunOutcome, EventorError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(EventorError::InsideRuntime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(EventorError::Runtime)?;
        runtime.block_on(self.run_async(max_loops))
    }

    /// Runs the flow on the current runtime. `max_loops < 0`: until nothing is left.
    ///
    /// Started by a prime as its agent on another host ([`agent_mode`]), it serves the prime's
    /// tasks on stdin/stdout instead, this program's closure steps included, and returns
    /// success when the prime is done with it.
    pub async fn run_async(&mut self, max_loops: i64) -> Result<RunOutcome, EventorError> {
        if self.closed {
            return Err(EventorError::Closed);
        }
        if agent_mode() {
            return self.serve_as_agent().await;
        }
        if self.running.is_none() {
            self.running = Some(self.start_run(max_loops >= 0).await?);
        }
        let pending: Vec<_> = self.triggers.drain(..).collect();
        let location = self.store_location();
        let running = self.running.as_mut().expect("set above");
        for (event, sequence) in pending {
            let Some(Target::Event(event)) = self.names.get(&event).copied() else {
                continue; // checked by trigger_event
            };
            running
                .core
                .handle(Input::Trigger { event, sequence }, now_micros());
        }
        let loops = match u32::try_from(max_loops) {
            Ok(n) => Loops::AtMost(n),
            Err(_) => Loops::Unlimited,
        };
        let store_name = running.store.describe();
        let config = ExecutorConfig {
            closure_threads: self.options.closure_threads,
            kill_grace: self.options.kill_grace,
        };
        let central = match &self.options.logdir {
            Some(dir) => Some(
                CentralLog::open(dir, &self.options.name, &self.run_id)
                    .await
                    .map_err(|e| EventorError::Log(e.to_string()))?,
            ),
            None => None,
        };
        let remote = connect_hosts(&self.options, &location, running, central.as_ref()).await?;
        let result = run_loops(running, loops, config, central.as_ref(), remote).await;
        if let (Some(log), Ok(outcome)) = (central, &result) {
            if let Err(e) = log.close(&outcome.to_string()).await {
                tracing::warn!(error = %e, "the central log could not be completed");
            }
        }
        let outcome = result.map_err(|source| EventorError::Store {
            store: store_name.clone(),
            source,
        })?;
        let status = match &outcome {
            RunOutcome::Success => RunStatus::Success,
            RunOutcome::Failure { .. } => RunStatus::Failure,
            RunOutcome::Incomplete { .. } => RunStatus::Incomplete,
        };
        running
            .store
            .set_run_status(running.key.clone(), status, now_micros())
            .await
            .map_err(|source| EventorError::Store {
                store: store_name,
                source,
            })?;
        tracing::info!(run_id = %self.run_id, "Processing finished with: {outcome}");
        Ok(outcome)
    }

    /// Serves a prime as its agent on this host, with this program's closure steps.
    async fn serve_as_agent(&self) -> Result<RunOutcome, EventorError> {
        let closures = self
            .steps
            .iter()
            .filter(|s| matches!(s.action, StepAction::Sync(_) | StepAction::Async(_)))
            .map(|s| (s.name.clone(), s.action.clone()))
            .collect();
        let store = match std::env::var(AGENT_STORE_VAR) {
            Ok(url) => {
                Some(StoreLocation::parse(&url).map_err(|e| EventorError::Agent(e.to_string()))?)
            }
            Err(_) => None,
        };
        let options = AgentOptions {
            host_name: std::env::var(AGENT_HOST_VAR).unwrap_or_else(|_| host_name()),
            store,
            closures,
            ..AgentOptions::default()
        };
        let served = agent::serve(
            tokio::io::stdin(),
            tokio::io::stdout(),
            options,
            CancellationToken::new(),
        )
        .await;
        served.map_err(|e| EventorError::Agent(e.to_string()))?;
        Ok(RunOutcome::Success)
    }

    /// Releases the store and forgets the run. Further runs fail with [`EventorError::Closed`].
    pub fn close(&mut self) {
        self.running = None;
        self.closed = true;
    }

    async fn start_run(&mut self, gated: bool) -> Result<Running, EventorError> {
        let (program, steps) = self.compile()?;
        let program = Arc::new(program);
        let location = self.store_location();
        let store = Store::open(&location)
            .await
            .map_err(store_error(describe_location(&location)))?;
        let options = CoreOptions {
            gated,
            ..CoreOptions::default()
        };
        let (key, core, guard) = match self.options.run_mode {
            RunMode::Restart => self.begin_fresh(&store, program, options).await?,
            RunMode::Recover => self.begin_recovery(&store, program, options).await?,
            RunMode::Continue => self.carry_on(&store, program, options).await?,
        };
        self.run_id = key.run_id.clone();
        tracing::info!(
            run_id = %key.run_id,
            recovery = key.recovery,
            mode = %self.options.run_mode,
            store = %store.describe(),
            "run started"
        );
        let (trigger_tx, task_triggers) = mpsc::unbounded_channel();
        let event_ids: HashMap<String, EventId> = self
            .names
            .iter()
            .filter_map(|(name, target)| match target {
                Target::Event(id) => Some((name.clone(), *id)),
                Target::Step(_) => None,
            })
            .collect();
        let event_ids = Arc::new(event_ids);
        let external = ExternalTriggers::new(&store, key.clone(), event_ids.clone())
            .await
            .map_err(store_error(store.describe()))?;
        let template = TaskContext {
            run_id: self.run_id.clone(),
            step: Arc::from(""),
            sequence: Arc::from(""),
            recovery: key.recovery,
            attempt: 1,
            logger_name: Arc::from(self.options.name.as_str()),
            env_prefix: Arc::from(self.options.config.envvar_prefix.as_str()),
            triggers: Some(TriggerSender {
                events: event_ids,
                sender: trigger_tx,
            }),
        };
        Ok(Running {
            external,
            store,
            _guard: guard,
            task_triggers,
            key: key.clone(),
            core,
            steps,
            template,
        })
    }

    fn new_run_row(&self, key: &RunKey) -> NewRun {
        NewRun {
            key: key.clone(),
            name: self.options.name.clone(),
            mode: self.options.run_mode,
            host: host_name(),
            program: self.describe_program(),
            started_at: now_micros(),
        }
    }

    /// A new run: recovery 0 of a new run id.
    async fn begin_fresh(
        &self,
        store: &Store,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let key = RunKey {
            run_id: self.run_id.clone(),
            recovery: 0,
        };
        let guard = self.lock(store, &key.run_id).await?;
        store
            .begin_run(self.new_run_row(&key))
            .await
            .map_err(store_error(store.describe()))?;
        Ok((key, Core::new(program, options), guard))
    }

    /// Takes the run's lock (held until the run ends); another coordinator holding it is an
    /// input error, reported as such.
    async fn lock(&self, store: &Store, run_id: &str) -> Result<RunGuard, EventorError> {
        store.lock_run(run_id).await.map_err(|source| match source {
            StoreError::RunLocked { .. } => EventorError::RunLocked(source.to_string()),
            other => store_error(store.describe())(other),
        })
    }

    /// The recoveries of the run to recover or continue: the given run id, or the latest run
    /// of this flow.
    async fn previous_runs(&self, store: &Store) -> Result<Vec<RunRecord>, EventorError> {
        let err = store_error(store.describe());
        let no_run = || EventorError::NoPreviousRun {
            mode: self.options.run_mode,
            store: store.describe(),
        };
        let run_id = match &self.options.run_id {
            Some(id) => id.clone(),
            None => {
                let latest = store.latest_run(&self.options.name).await.map_err(&err)?;
                latest.ok_or_else(no_run)?.key.run_id.to_string()
            }
        };
        let history = store.run_history(&run_id).await.map_err(&err)?;
        let Some(last) = history.last() else {
            return Err(no_run());
        };
        if last.program != self.describe_program() {
            tracing::warn!(
                run_id = %run_id,
                recovery = last.key.recovery,
                "the flow changed since that run: steps and events are matched by name"
            );
        }
        Ok(history)
    }

    /// The recovery `wanted` of a run's history, or its latest.
    fn pick_recovery<'h>(
        &self,
        history: &'h [RunRecord],
        store: &Store,
    ) -> Result<&'h RunRecord, EventorError> {
        let latest = history
            .last()
            .expect("previous_runs returns a non-empty history");
        let Some(wanted) = self.options.recovery else {
            return Ok(latest);
        };
        history
            .iter()
            .find(|r| r.key.recovery == wanted)
            .ok_or_else(|| EventorError::NoSuchRecovery {
                run_id: latest.key.run_id.to_string(),
                recovery: wanted,
                store: store.describe(),
            })
    }

    /// Recover: a new recovery whose tasks skip or rerun by their outcome in the base one.
    async fn begin_recovery(
        &self,
        store: &Store,
        program: Arc<Program>,
        mut options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let err = store_error(store.describe());
        let history = self.previous_runs(store).await?;
        let base = self.pick_recovery(&history, store)?;
        let latest = history.last().expect("non-empty history");
        let tasks = store.tasks(base.key.clone()).await.map_err(&err)?;
        for task in tasks {
            if let Some(Target::Step(step)) = self.names.get(&task.step) {
                let previous = PreviousTask {
                    status: task.status,
                    attempt: task.attempt,
                };
                options
                    .previous
                    .insert((*step, Arc::from(task.sequence.as_str())), previous);
            }
        }
        options.previous_recovery = base.key.recovery;
        let key = RunKey {
            run_id: latest.key.run_id.clone(),
            recovery: latest.key.recovery + 1,
        };
        let guard = self.lock(store, &key.run_id).await?;
        store
            .begin_run(self.new_run_row(&key))
            .await
            .map_err(&err)?;
        Ok((key, Core::new(program, options), guard))
    }

    /// Continue: the same recovery carries on from its stored triggers, tasks and delays.
    async fn carry_on(
        &self,
        store: &Store,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let err = store_error(store.describe());
        let history = self.previous_runs(store).await?;
        let key = self.pick_recovery(&history, store)?.key.clone();
        let guard = self.lock(store, &key.run_id).await?;
        let stored = StoredState {
            triggers: self.stored_triggers(store.triggers(key.clone()).await.map_err(&err)?),
            tasks: self.stored_tasks(store.tasks(key.clone()).await.map_err(&err)?),
            delays: stored_delays(&program, store.delays(key.clone()).await.map_err(&err)?),
        };
        store
            .set_run_status(key.clone(), RunStatus::Running, now_micros())
            .await
            .map_err(&err)?;
        Ok((
            key,
            Core::restore(program, options, stored, now_micros()),
            guard,
        ))
    }

    fn stored_triggers(&self, rows: Vec<TriggerRecord>) -> Vec<(EventId, Arc<str>)> {
        rows.into_iter()
            .filter_map(|row| match self.names.get(&row.event) {
                Some(Target::Event(id)) => Some((*id, Arc::from(row.sequence.as_str()))),
                _ => None, // an event this version of the flow no longer has
            })
            .collect()
    }

    fn stored_tasks(&self, rows: Vec<TaskRecord>) -> Vec<StoredTask> {
        rows.into_iter()
            .filter_map(|row| match self.names.get(&row.step) {
                Some(Target::Step(step)) => Some(StoredTask {
                    step: *step,
                    sequence: Arc::from(row.sequence.as_str()),
                    status: row.status,
                    attempt: row.attempt,
                    error: row.error,
                }),
                _ => None,
            })
            .collect()
    }

    /// Resolves every name into the core's program, checking references.
    fn compile(&self) -> Result<(Program, Vec<StepRuntime>), EventorError> {
        let config = &self.options.config;
        let mut program = Program {
            name: Arc::from(self.options.name.as_str()),
            max_concurrent: usize::try_from(config.max_concurrent)
                .ok()
                .filter(|&n| n > 0),
            pools: self
                .pools
                .iter()
                .map(|(name, capacity)| PoolDef {
                    name: Arc::from(name.as_str()),
                    capacity: *capacity,
                })
                .collect(),
            ..Program::default()
        };
        for (name, expr) in &self.events {
            let cond = match expr {
                Some(expr) => Some(self.resolve_expr(name, expr)?),
                None => None,
            };
            program.events.push(EventDef {
                name: Arc::from(name.as_str()),
                cond,
                dependents: Vec::new(),
                assocs: Vec::new(),
            });
        }
        let mut runtimes = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            program.steps.push(self.compile_step(step)?);
            self.check_hosts(step)?;
            runtimes.push(StepRuntime {
                hosts: step
                    .config
                    .hosts
                    .iter()
                    .map(|h| Arc::from(h.as_str()))
                    .collect(),
                action: step.action.clone(),
                env: step.config.env.clone().into_iter().collect(),
                cwd: step.config.cwd.clone(),
                timeout: step.config.timeout,
            });
        }
        for (index, (event, targets, delay)) in self.assocs.iter().enumerate() {
            let context = format!("association {} (event `{event}`)", index + 1);
            let event = self.event_id(event, &context)?;
            let targets = targets
                .iter()
                .map(|name| {
                    self.names
                        .get(name)
                        .copied()
                        .ok_or_else(|| EventorError::UnknownTarget {
                            context: context.clone(),
                            name: name.clone(),
                        })
                })
                .collect::<Result<_, _>>()?;
            program.assocs.push(AssocDef {
                event,
                targets,
                delay: *delay,
            });
        }
        program.link();
        Ok((program, runtimes))
    }

    fn compile_step(&self, step: &Step) -> Result<StepDef, EventorError> {
        let ids = |kind: &str, names: &[String]| -> Result<Vec<EventId>, EventorError> {
            let context = format!("step `{}` triggers on {kind}", step.name);
            names.iter().map(|n| self.event_id(n, &context)).collect()
        };
        let t = &step.triggers;
        Ok(StepDef {
            name: Arc::from(step.name.as_str()),
            triggers: StepTriggers {
                ready: ids("ready", &t.ready)?,
                active: ids("active", &t.active)?,
                success: ids("success", &t.success)?,
                failure: ids("failure", &t.failure)?,
                complete: ids("complete", &t.complete)?,
            },
            max_concurrent: step.config.max_concurrent.filter(|&n| n > 0),
            stop_on_exception: step
                .config
                .stop_on_exception
                .unwrap_or(self.options.config.stop_on_exception),
            recovery: step.config.recovery,
            acquires: self.pool_amounts(step, &step.config.acquires, true)?,
            releases: self.pool_amounts(
                step,
                step.config
                    .releases
                    .as_ref()
                    .unwrap_or(&step.config.acquires),
                false,
            )?,
        })
    }

    /// A pinned step needs a hosts file that names its hosts.
    fn check_hosts(&self, step: &Step) -> Result<(), EventorError> {
        for host in &step.config.hosts {
            let known = self
                .options
                .cluster
                .as_ref()
                .map(|c| c.hosts.host(host).is_some());
            if known != Some(true) {
                return Err(EventorError::UnknownHost {
                    step: step.name.clone(),
                    host: host.clone(),
                    hosts_file: self.options.cluster.as_ref().map(|c| c.hosts.path.clone()),
                });
            }
        }
        Ok(())
    }

    /// Resolves `(pool, units)` pairs; an acquisition above the pool's capacity could never
    /// be granted, so it is refused here rather than waiting forever.
    fn pool_amounts(
        &self,
        step: &Step,
        amounts: &[(String, u32)],
        acquiring: bool,
    ) -> Result<Vec<(PoolId, u32)>, EventorError> {
        amounts
            .iter()
            .map(|(pool, units)| {
                let index = self.pools.iter().position(|(name, _)| name == pool);
                let index = index.ok_or_else(|| EventorError::UnknownPool {
                    step: step.name.clone(),
                    pool: pool.clone(),
                })?;
                let capacity = self.pools[index].1;
                if acquiring && *units > capacity {
                    return Err(EventorError::OverCapacity {
                        step: step.name.clone(),
                        pool: pool.clone(),
                        wanted: *units,
                        capacity,
                    });
                }
                Ok((PoolId(index as u32), *units))
            })
            .collect()
    }

    fn event_id(&self, name: &str, context: &str) -> Result<EventId, EventorError> {
        match self.names.get(name) {
            Some(Target::Event(id)) => Ok(*id),
            _ => Err(EventorError::UnknownEvent {
                context: context.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn resolve_expr(&self, event: &str, expr: &Expr) -> Result<Cond, EventorError> {
        let context = format!("expression of event `{event}`");
        let all = |items: &[Expr]| -> Result<Vec<Cond>, EventorError> {
            items.iter().map(|e| self.resolve_expr(event, e)).collect()
        };
        Ok(match expr {
            Expr::Event { name, column } => {
                let at = if *column > 0 {
                    format!(" (column {column})")
                } else {
                    String::new()
                };
                Cond::Event(self.event_id(name, &format!("{context}{at}"))?)
            }
            Expr::And(items) => Cond::And(all(items)?),
            Expr::Or(items) => Cond::Or(all(items)?),
            Expr::Not(inner) => Cond::Not(Box::new(self.resolve_expr(event, inner)?)),
        })
    }

    /// The flow's shape as JSON, kept with the run for later inspection and `continue`.
    ///
    /// Sizes and a fingerprint rather than the whole definition: a fan-out of 100,000 steps
    /// would otherwise write (and briefly hold) megabytes of JSON per run. Recover and
    /// continue compare the fingerprint to warn when the flow changed in between.
    fn describe_program(&self) -> String {
        format!(
            r#"{{"events":{},"steps":{},"assocs":{},"fingerprint":"{:016x}"}}"#,
            self.events.len(),
            self.steps.len(),
            self.assocs.len(),
            self.fingerprint()
        )
    }

    /// FNV-1a over the names and wiring of the flow: stable across builds and platforms.
    fn fingerprint(&self) -> u64 {
        let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
        for (name, expr) in &self.events {
            hash.text(name);
            hash.text(&expr.as_ref().map(|e| e.to_string()).unwrap_or_default());
        }
        for step in &self.steps {
            hash.text(&step.name);
            let t = &step.triggers;
            for list in [&t.ready, &t.active, &t.success, &t.failure, &t.complete] {
                list.iter().for_each(|e| hash.text(e));
                hash.text("|");
            }
        }
        for (event, targets, delay) in &self.assocs {
            hash.text(event);
            targets.iter().for_each(|t| hash.text(t));
            hash.text(&delay.map(|d| d.as_micros().to_string()).unwrap_or_default());
        }
        hash.0
    }
}

/// The FNV-1a hash, fed field by field (each field ends with a separator byte).
struct Fnv(u64);

impl Fnv {
    fn text(&mut self, text: &str) {
        for byte in text.bytes().chain([0xff]) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Executor events queued ahead of the driver.
const EXEC_EVENTS: usize = 4096;

/// Drives the core through the requested loops and turns its state into an outcome.
async fn run_loops(
    running: &mut Running,
    loops: Loops,
    config: ExecutorConfig,
    central: Option<&CentralLog>,
    remote: Option<(Remote, mpsc::Sender<ExecEvent>, mpsc::Receiver<ExecEvent>)>,
) -> Result<RunOutcome, StoreError> {
    let (tx, mut rx, remote) = match remote {
        Some((remote, tx, rx)) => (tx, rx, Some(Arc::new(remote))),
        None => {
            let (tx, rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
            (tx, rx, None)
        }
    };
    let central = central.map(|log| CentralOutput {
        sink: log.sink(),
        host: Arc::from(host_name().as_str()),
    });
    let executor = Executor::new(
        tx,
        CancellationToken::new(),
        config,
        central,
        remote.clone(),
    );
    let cx = DriverContext {
        store: &running.store,
        run: running.key.clone(),
        steps: &running.steps,
        executor: &executor,
        events: &mut rx,
        task_triggers: &mut running.task_triggers,
        external: &mut running.external,
        task_template: &running.template,
    };
    let result = drive(&mut running.core, cx, loops).await;
    executor.shutdown().await;
    drop(executor);
    if let Some(remote) = remote.and_then(|r| Arc::try_unwrap(r).ok()) {
        remote.shutdown(Duration::from_secs(10)).await;
    }
    result?;
    Ok(outcome_of(&running.core))
}

fn outcome_of(core: &Core) -> RunOutcome {
    if !core.failed().is_empty() {
        let failed = core
            .failed()
            .iter()
            .map(|f| {
                let task = core.task(f.task);
                FailedTask {
                    step: core.program().step(task.step).name.to_string(),
                    sequence: task.sequence.to_string(),
                    error: f.error.clone(),
                }
            })
            .collect();
        return RunOutcome::Failure { failed };
    }
    let outstanding = core.waiting() + core.pending_delays();
    if outstanding > 0 {
        return RunOutcome::Incomplete {
            outstanding,
            next_due: core.next_due().map(system_time),
        };
    }
    RunOutcome::Success
}

fn system_time(micros: Micros) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

/// A readable id that sorts by time: `20261129T210235-3f9a`.
fn generate_run_id() -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':', 'Z'], "");
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{stamp}-{salt:04x}")
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Pending delays of associations this flow still has.
fn stored_delays(program: &Program, rows: Vec<DelayRecord>) -> Vec<StoredDelay> {
    rows.into_iter()
        .filter(|row| (row.assoc as usize) < program.assocs.len())
        .map(|row| StoredDelay {
            assoc: AssocId(row.assoc as u32),
            sequence: Arc::from(row.sequence.as_str()),
            due: row.due_at,
            fired: row.fired,
        })
        .collect()
}

fn store_error(store: String) -> impl Fn(StoreError) -> EventorError {
    move |source| EventorError::Store {
        store: store.clone(),
        source,
    }
}

/// Connects to the hosts the flow's steps are pinned to (none: `None`), all at once.
async fn connect_hosts(
    options: &EventorOptions,
    location: &StoreLocation,
    running: &Running,
    central: Option<&CentralLog>,
) -> Result<Option<(Remote, mpsc::Sender<ExecEvent>, mpsc::Receiver<ExecEvent>)>, EventorError> {
    let Some(cluster) = &options.cluster else {
        return Ok(None);
    };
    let mut names: Vec<String> = running
        .steps
        .iter()
        .flat_map(|s| s.hosts.iter().map(|h| h.to_string()))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let store_for_agents = agent_store_url(location);
    let remote_closures = running.steps.iter().any(|s| {
        !s.hosts.is_empty() && matches!(s.action, StepAction::Sync(_) | StepAction::Async(_))
    });
    let (hosts, agent_args) = if remote_closures {
        (
            program_as_agent(&cluster.hosts, &store_for_agents)?,
            Vec::new(),
        )
    } else {
        (
            cluster.hosts.clone(),
            vec!["--store".to_string(), store_for_agents],
        )
    };
    let mut connect = ConnectOptions::new(running.key.run_id.to_string(), agent_args);
    connect.lost_after = cluster.lost_after;
    let (tx, rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
    let config = RemoteConfig {
        hosts: &hosts,
        names,
        connect,
        central: central.map(|log| CentralOutput {
            sink: log.sink(),
            host: Arc::from(host_name().as_str()),
        }),
        store: running.store.clone(),
        run: running.key.clone(),
    };
    let remote = Remote::connect(config, tx.clone())
        .await
        .map_err(EventorError::Cluster)?;
    Ok(Some((remote, tx, rx)))
}

/// The variable that starts a program as its own agent (set by the prime), and the ones
/// that tell it its store and its host's name.
const AGENT_MODE_VAR: &str = "EVENTOR_AGENT_MODE";
const AGENT_STORE_VAR: &str = "EVENTOR_AGENT_STORE";
const AGENT_HOST_VAR: &str = "EVENTOR_AGENT_HOST";

/// Whether this process was started by a prime as the agent of its own closure steps on a
/// cluster host. Call it first in `main` of a program whose closure steps are pinned to
/// other hosts: in agent mode stdout carries the protocol, so print nothing to it, build
/// the same flow, and call `run`, which then serves the prime's tasks.
pub fn agent_mode() -> bool {
    std::env::var_os(AGENT_MODE_VAR).is_some()
}

/// The hosts file with this very program as every host's agent (found at the same absolute
/// path, as the original's distributed mode did), told by environment that it is one.
fn program_as_agent(hosts: &HostsFile, store: &str) -> Result<HostsFile, EventorError> {
    let program = std::env::current_exe()
        .map_err(|e| EventorError::Cluster(format!("cannot find this program's path: {e}")))?;
    let mut hosts = hosts.clone();
    for host in &mut hosts.hosts {
        host.agent = program.display().to_string();
        host.env.push((AGENT_MODE_VAR.to_string(), "1".to_string()));
        host.env
            .push((AGENT_STORE_VAR.to_string(), store.to_string()));
        host.env
            .push((AGENT_HOST_VAR.to_string(), host.name.clone()));
    }
    Ok(hosts)
}

/// The store as agents are told it: the URL without its password (agents find theirs in
/// `PGPASSWORD` or `~/.pgpass`), an SQLite path made absolute.
fn agent_store_url(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Sqlite(path) => {
            let absolute = std::env::current_dir()
                .map(|dir| dir.join(path))
                .unwrap_or_else(|_| path.clone());
            format!("sqlite:{}", absolute.display())
        }
        other => other.to_string(),
    }
}

fn describe_location(location: &StoreLocation) -> String {
    location.to_string()
}
