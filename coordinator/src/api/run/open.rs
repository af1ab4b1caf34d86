//! A run opened: its store checked and opened, its shared pools declared, its row written
//! and its lock taken by its mode (`modes.rs`), earlier grants given back, old runs pruned,
//! and the context every task of it shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::{TaskContext, TriggerError, TriggerSink};
use eventor_store::{now_micros, RunGuard, RunKey, RunMode, Store, StoreError, StoreLocation};
use tokio::sync::mpsc;

use crate::api::error::{store_error, EventorError};
use crate::api::state::{Eventor, Run};
use crate::engine::core::{CoreOptions, Input};
use crate::engine::driver::{PoolWake, RunState};
use crate::engine::executor::StepRuntime;
use crate::engine::external::ExternalTriggers;
use crate::engine::program::{EventId, Target};

/// How often a task waiting on a shared pool asks again on SQLite, which cannot notify.
const SQLITE_POOL_RECHECK: Duration = Duration::from_millis(250);
/// The same on Postgres, where another coordinator's release notifies: a safety net only.
const PG_POOL_RECHECK: Duration = Duration::from_secs(5);

/// A flow and its store while its run is being opened: the run modes (`modes.rs`) and what
/// every mode does around them.
pub(super) struct Opening<'a> {
    pub(super) flow: &'a Eventor,
    pub(super) store: &'a Store,
    /// The flow's steps as they run (where each may run, for the leases waited out).
    pub(super) steps: &'a [StepRuntime],
}

impl Run {
    /// Opens the run of `flow` by its mode: nothing is stored for a run whose log folder,
    /// store path, flow or shared pools are wrong.
    pub(super) async fn open(flow: &Eventor) -> Result<Run, EventorError> {
        if let Some(dir) = &flow.options.logdir {
            check_logdir(&dir.join(&flow.options.name))?;
        }
        let (program, steps) = flow.compile()?;
        let program = Arc::new(program);
        let location = flow.store_location();
        check_sqlite_path(&location)?;
        let store = Store::open(&location)
            .await
            .map_err(store_error(location.to_string()))?;
        let opening = Opening {
            flow,
            store: &store,
            steps: &steps,
        };
        opening.declare_shared_pools().await?;
        let options = CoreOptions::default();
        let (key, core, guard) = match flow.options.run_mode {
            RunMode::Restart => opening.fresh(program, options).await?,
            RunMode::Recover => opening.recover(program, options).await?,
            RunMode::Continue => opening.carry_on(program, options).await?,
        };
        let pools = opening.pool_wake(&key).await?;
        opening.prune_old_runs().await?;
        tracing::info!(
            run_id = %key.run_id,
            recovery = key.recovery,
            mode = %flow.options.run_mode,
            store = %store.describe(),
            "run started"
        );
        let (trigger_tx, task_triggers) = mpsc::unbounded_channel();
        let event_ids = Arc::new(event_ids(flow));
        let external = ExternalTriggers::new(&store, key.clone(), event_ids.clone())
            .await
            .map_err(store_error(store.describe()))?;
        let triggers = TaskTriggers {
            events: event_ids,
            sender: trigger_tx,
        };
        let state = RunState {
            task_template: task_template(flow, &key, triggers),
            store,
            run: key,
            steps,
            task_triggers,
            external,
            interrupt: flow.options.interrupt.clone().unwrap_or_default(),
            pools,
        };
        Ok(Run {
            location,
            guard,
            core,
            state,
        })
    }
}

impl Opening<'_> {
    /// Declares the flow's shared pools in the store: a pool another flow declared with other
    /// units is an input error (exit 2), found before anything of the run is stored.
    async fn declare_shared_pools(&self) -> Result<(), EventorError> {
        let flow = self.flow;
        let shared: Vec<(String, u32)> = flow
            .pools
            .iter()
            .filter(|(name, _)| flow.shared_pools.contains(name))
            .cloned()
            .collect();
        if shared.is_empty() {
            return Ok(());
        }
        let store = self.store;
        store.declare_pools(shared).await.map_err(|e| match e {
            StoreError::PoolMismatch { .. } => EventorError::PoolMismatch(e.to_string()),
            other => store_error(store.describe())(other),
        })
    }

    /// Gives back what earlier coordinators of this run (it is ours now: we hold its lock)
    /// still held of shared pools, and listens for units other runs give back.
    async fn pool_wake(&self, key: &RunKey) -> Result<PoolWake, EventorError> {
        let store = self.store;
        let err = store_error(store.describe());
        let released = store.release_run_grants(&key.run_id).await.map_err(&err)?;
        if released > 0 {
            tracing::info!(
                grants = released,
                "gave back the shared units earlier coordinators of the run held"
            );
        }
        let recheck = match store {
            Store::Sqlite(_) => SQLITE_POOL_RECHECK,
            Store::Postgres(_) => PG_POOL_RECHECK,
        };
        let subscription = store.subscribe_pools().await.map_err(&err)?;
        Ok(PoolWake {
            subscription,
            recheck,
        })
    }

    /// Prunes runs of this flow older than `day_to_keep_db` (never a running one: each is
    /// pruned under its run lock, and ours is held).
    async fn prune_old_runs(&self) -> Result<(), EventorError> {
        let options = &self.flow.options;
        let Some(days) = options.config.days_to_keep else {
            return Ok(());
        };
        let cutoff = now_micros() - i64::from(days) * 86_400_000_000;
        let pruned = self
            .store
            .prune(Some(&options.name), cutoff)
            .await
            .map_err(store_error(self.store.describe()))?;
        if !pruned.is_empty() {
            tracing::info!(
                runs = pruned.len(),
                days,
                "pruned runs older than day_to_keep_db"
            );
        }
        Ok(())
    }

    /// Takes the run's lock (held until the run ends); another coordinator holding it is an
    /// input error, reported as such.
    pub(super) async fn lock(&self, run_id: &str) -> Result<RunGuard, EventorError> {
        let store = self.store;
        store.lock_run(run_id).await.map_err(|source| match source {
            StoreError::RunLocked { .. } => EventorError::RunLocked(source.to_string()),
            other => store_error(store.describe())(other),
        })
    }
}

/// Sends the events a running task fires to the driver. Unbounded on purpose: each call
/// comes from a running task's own code, and the driver drains them every turn.
#[derive(Debug)]
struct TaskTriggers {
    events: Arc<HashMap<String, EventId>>,
    sender: mpsc::UnboundedSender<Input>,
}

impl TriggerSink for TaskTriggers {
    fn trigger(&self, event: &str, sequence: Arc<str>) -> Result<(), TriggerError> {
        let event = *self
            .events
            .get(event)
            .ok_or_else(|| TriggerError::UnknownEvent(event.to_string()))?;
        let input = Input::Trigger { event, sequence };
        self.sender.send(input).map_err(|_| TriggerError::RunOver)
    }
}

/// The flow's events by name.
fn event_ids(flow: &Eventor) -> HashMap<String, EventId> {
    let events = flow.names.iter().filter_map(|(name, target)| match target {
        Target::Event(id) => Some((name.to_string(), *id)),
        Target::Step(_) => None,
    });
    events.collect()
}

/// The context fields every task of the run shares.
fn task_template(flow: &Eventor, key: &RunKey, triggers: TaskTriggers) -> TaskContext {
    TaskContext {
        run_id: key.run_id.clone(),
        step: Arc::from(""),
        sequence: Arc::from(""),
        recovery: key.recovery,
        attempt: 1,
        flow: Arc::from(flow.options.name.as_str()),
        env_prefix: Arc::from(flow.options.config.envvar_prefix.as_str()),
        triggers: Some(Arc::new(triggers)),
    }
}

/// An SQLite store must be a durable file in an existing directory: a directory, a missing
/// directory or `:memory:` is the user's mistake (exit 2), found before anything is stored.
fn check_sqlite_path(location: &StoreLocation) -> Result<(), EventorError> {
    let StoreLocation::Sqlite(path) = location else {
        return Ok(());
    };
    let refuse = |why: &str| EventorError::BadStore {
        store: location.to_string(),
        why: why.to_string(),
    };
    if path.as_os_str() == ":memory:" {
        return Err(refuse("an in-memory database keeps nothing: name a file"));
    }
    if path.is_dir() {
        return Err(refuse("is a directory, not a database file"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|dir| !dir.is_dir()) {
        return Err(refuse("its directory does not exist"));
    }
    Ok(())
}

/// The central log's folder must be writable before the run starts (exit 2 otherwise).
fn check_logdir(dir: &std::path::Path) -> Result<(), EventorError> {
    let refuse = |source| EventorError::LogdirUnwritable {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(refuse)?;
    let probe = dir.join(format!(".eventor-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(refuse)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
