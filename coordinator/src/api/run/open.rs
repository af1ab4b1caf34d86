//! A run opened: its store checked and opened, its shared pools declared, its row written
//! and its lock taken by its mode (`modes.rs`), earlier grants given back, old runs pruned,
//! and the context every task of it shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::trigger_socket::{Answer, Fire, StatusAnswer, ToDriver, TriggerSocket};

use crate::report::json::StatusJson;
use crate::report::{own_run_report, RunSelector};
use eventor_agent::{TaskContext, TriggerError, TriggerSink};
use eventor_store::{now_micros, RunGuard, RunKey, RunMode, Store, StoreError, StoreLocation};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::error::{store_error, EventorError};
use crate::api::params;
use crate::api::state::{Eventor, Run};
use crate::engine::core::{CoreOptions, Input};
use crate::engine::driver::{PoolWake, RunState};
use crate::engine::executor::{RunEnv, StepRuntime};
use crate::engine::external::ExternalTriggers;
use crate::engine::interrupt::Interrupt;
use crate::engine::prime_env::PrimeEnv;
use crate::engine::program::EventId;

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
    /// Where the store is, as agents are told it (a recovery re-adopts them).
    pub(super) location: &'a StoreLocation,
    /// The run's one interrupt (the options' own, or one nobody fires).
    pub(super) interrupt: &'a Interrupt,
    /// The run's cancellation root: every link and attempt it starts lives under it.
    pub(super) root: &'a CancellationToken,
}

impl Run {
    /// Opens the run of `flow` by its mode: nothing is stored for a run whose log folder,
    /// store path, flow or shared pools are wrong.
    pub(super) async fn open(flow: &Eventor) -> Result<Run, EventorError> {
        if let Some(dir) = &flow.options.logdir {
            check_logdir(&dir.join(&flow.options.name))?;
        }
        let (program, mut steps) = flow.compile()?;
        params::check_given(&flow.params, &flow.options.params)?;
        if flow.options.run_mode == RunMode::Restart {
            // A new run has no stored values: a missing one is refused before the store is made.
            params::resolve(&flow.params, &flow.options.params, None)?;
        }
        let hosts_from_prime = hosts_from_prime(flow)?;
        let program = Arc::new(program);
        let location = flow.store_location();
        check_store_location(&location)?;
        let store = Store::open(&location)
            .await
            .map_err(store_error(location.to_string()))?;
        let interrupt = flow.options.interrupt.clone().unwrap_or_default();
        let root = CancellationToken::new();
        let opening = Opening {
            flow,
            store: &store,
            steps: &steps,
            location: &location,
            interrupt: &interrupt,
            root: &root,
        };
        opening.declare_shared_pools().await?;
        let options = CoreOptions::default();
        let (key, core, guard, requests_seen, params) = match flow.options.run_mode {
            RunMode::Restart => opening.fresh(program, options).await?,
            RunMode::Recover => opening.recover(program, options).await?,
            RunMode::Continue => opening.carry_on(program, options).await?,
        };
        let pools = opening.pool_wake(&key).await?;
        opening.prune_old_runs().await?;
        expand_step_env(&mut steps, &params);
        tracing::info!(
            run_id = %key.run_id,
            recovery = key.recovery,
            mode = %flow.options.run_mode,
            store = %store.describe(),
            "run started"
        );
        let (trigger_tx, task_triggers) = mpsc::unbounded_channel();
        let event_ids = Arc::new(event_ids(flow));
        let external = ExternalTriggers::new(&store, key.clone(), event_ids.clone(), requests_seen)
            .await
            .map_err(store_error(store.describe()))?;
        let triggers = TaskTriggers {
            events: event_ids,
            sender: trigger_tx,
        };
        let mut template = task_template(flow, &key, triggers);
        let run_socket: Option<Arc<dyn Fire>> = template.triggers.clone().map(|sink| {
            Arc::new(RunSocket {
                driver: ToDriver(sink),
                store: store.clone(),
                run: key.clone(),
            }) as Arc<dyn Fire>
        });
        let trigger_socket = match &run_socket {
            Some(run) => trigger_socket(&key.run_id, run.clone()).await,
            None => None,
        };
        template.trigger_socket = trigger_socket
            .as_ref()
            .map(|socket| Arc::from(socket.path().to_string_lossy().as_ref()));
        let state = RunState {
            task_template: template,
            store,
            run: key,
            steps,
            task_triggers,
            external,
            interrupt,
            pools,
            run_env: Arc::new(RunEnv {
                params: params.into_iter().collect(),
                hosts_from_prime,
            }),
        };
        Ok(Run {
            location,
            _ends_with_run: root.clone().drop_guard(),
            root,
            guard,
            core,
            state,
            _trigger_socket: trigger_socket,
            run_socket,
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
impl Eventor {
    /// The names of every variable the run's tasks get from the prime's environment (the
    /// hosts file's and the steps'), sorted: what the run's row keeps of them.
    pub(crate) fn env_from_prime_names(&self) -> Vec<String> {
        let hosts = self.options.cluster.iter();
        let hosts = hosts.flat_map(|c| c.hosts.env_from_prime.iter().cloned());
        let steps = self.steps.iter();
        let steps = steps.flat_map(|s| s.config().env_from_prime.iter().cloned());
        let names: std::collections::BTreeSet<String> = hosts.chain(steps).collect();
        names.into_iter().collect()
    }
}

/// The hosts file's `env_from_prime`, read from this process's environment (none without
/// a cluster): a variable missing here stops the run before anything is stored.
fn hosts_from_prime(flow: &Eventor) -> Result<PrimeEnv, EventorError> {
    let Some(cluster) = &flow.options.cluster else {
        return Ok(PrimeEnv::new());
    };
    Ok(PrimeEnv::read(
        &cluster.hosts.env_from_prime,
        "the hosts file",
    )?)
}

/// Each step's `env:` values with `${NAME}` of a parameter replaced by its value.
fn expand_step_env(steps: &mut [StepRuntime], params: &BTreeMap<String, String>) {
    for step in steps {
        let Some(settings) = step.settings.as_mut() else {
            continue;
        };
        for (_, value) in &mut settings.env {
            if value.contains("${") {
                *value = params::expand(value, params);
            }
        }
    }
}

fn event_ids(flow: &Eventor) -> HashMap<String, EventId> {
    let events = flow.names.events.iter();
    events.map(|(name, id)| (name.to_string(), *id)).collect()
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
        trigger_socket: None,
    }
}

/// The run's side of its trigger socket: events to the driver, the status from the store.
struct RunSocket {
    driver: ToDriver,
    store: Store,
    run: RunKey,
}

impl Fire for RunSocket {
    fn fire(&self, event: String, sequence: String) -> Answer {
        self.driver.fire(event, sequence)
    }

    fn status(&self) -> StatusAnswer {
        let (store, run) = (self.store.clone(), self.run.clone());
        Box::pin(async move {
            let selector = RunSelector {
                flow: None,
                run_id: Some(run.run_id.to_string()),
                recovery: Some(run.recovery),
            };
            // This coordinator holds the run: it is not asked whether anybody does.
            let report = own_run_report(&store, &selector)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_string(&StatusJson::of(&report)).map_err(|e| e.to_string())
        })
    }
}

/// The run's trigger socket, where its tasks' commands fire events in it and ask its
/// status (`run` its side); none (with a warning) where the den cannot be had.
async fn trigger_socket(run_id: &str, run: Arc<dyn Fire>) -> Option<TriggerSocket> {
    let here = eventor_agent::local_host_name();
    let name = format!("t-{}", eventor_agent::adopt::socket_name(run_id, &here));
    let opened = match eventor_agent::adopt::private_den() {
        Ok(dir) => TriggerSocket::open(&dir, &name, run).await,
        Err(error) => Err(error),
    };
    match opened {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::warn!(%error, "no trigger socket: the run's commands cannot fire its events");
            None
        }
    }
}

/// An SQLite store must be a durable file in an existing directory: a directory, a missing
/// directory, `:memory:` or a file that is not an SQLite database is the user's mistake
/// (exit 2), found before anything is stored.
pub fn check_store_location(location: &StoreLocation) -> Result<(), EventorError> {
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
    if !holds_sqlite_or_nothing(path) {
        return Err(refuse(
            "is not an SQLite database (its first bytes are not SQLite's header)",
        ));
    }
    Ok(())
}

/// Every SQLite database file begins with these 16 bytes.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` is missing, empty (SQLite makes a new database of both) or begins with
/// SQLite's header. A file that cannot be read is let through: opening it says why.
fn holds_sqlite_or_nothing(path: &std::path::Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return true;
    };
    let mut head = Vec::with_capacity(SQLITE_HEADER.len());
    match file.take(SQLITE_HEADER.len() as u64).read_to_end(&mut head) {
        Ok(_) => head.is_empty() || head == SQLITE_HEADER,
        Err(_) => true,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(path: &std::path::Path) -> Result<(), EventorError> {
        check_store_location(&StoreLocation::Sqlite(path.to_path_buf()))
    }

    #[test]
    fn a_file_that_is_not_an_sqlite_database_is_the_users_mistake_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let notdb = dir.path().join("notdb");
        std::fs::write(&notdb, "hello, not a database\n").unwrap();
        let error = checked(&notdb).unwrap_err();
        assert!(error.is_input_error(), "{error}");
        let message = error.to_string();
        assert!(message.contains(&notdb.display().to_string()), "{message}");
        assert!(message.contains("not an SQLite database"), "{message}");
        std::fs::write(&notdb, "SQLite").unwrap();
        assert!(checked(&notdb).is_err(), "a header cut short");
    }

    #[test]
    fn a_missing_an_empty_or_an_sqlite_file_may_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        checked(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        checked(&path).unwrap();
        let mut db = SQLITE_HEADER.to_vec();
        db.extend([0u8; 84]);
        std::fs::write(&path, db).unwrap();
        checked(&path).unwrap();
    }
}
