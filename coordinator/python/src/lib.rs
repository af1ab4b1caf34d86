//! `eventor._eventor`: the engine under the Python package `eventor` (the original's API,
//! written in Python in `python/eventor/`). This module holds one flow class, [`Flow`],
//! that takes the flow already reduced to names and plain values, and runs it with the GIL
//! released; a Python step is a callable the engine calls on its closure threads, each call
//! taking the GIL for as long as it runs.

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use eventor::api::config::{ConsoleLevel, EventorConfig};
use eventor::cluster::{parse_hosts, HostDefaults, LinkSettings, LogLevel, ScriptAgent};
use eventor::flow::config::{load_config, parse_config};
use eventor::{
    error_chain, AssocTarget, ClusterOptions, Eventor, EventorError, EventorOptions, Expr,
    Interrupt, MaxConcurrent, RecoverAction, RecoveryPolicy, RunMode, RunOutcome, Step, StepAction,
    StepConfig, StoreLocation, TaskContext,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

/// How often a running `run` lets Python look for a signal (Ctrl-C); a run that ends is
/// answered at once, not at the next check.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// A flow on the engine, defined by names (the Python layer turns the original's objects
/// into them).
#[pyclass(module = "eventor._eventor")]
struct Flow {
    eventor: Eventor,
    warnings: Vec<String>,
    /// The config's `LOGGING` level, as Python's `logging` numbers it.
    log_level: u8,
    /// The config's settings for Python steps: `task_construct`, `sequence_arg_name`,
    /// `pass_logger_to_task`.
    python: (Option<String>, Option<String>, bool),
    /// The hosts of the hosts file, when one was given: the names a step may be pinned to.
    hosts: Option<Vec<String>>,
}

/// Where a run's settings come from: the config file or dict, and the store the user named.
fn options_of(
    name: &str,
    store: &str,
    run_mode: &str,
    run_id: &str,
    recovery_run: Option<i32>,
    config: EventorConfig,
) -> PyResult<EventorOptions> {
    let run_mode = match run_mode {
        "restart" => RunMode::Restart,
        "recover" => RunMode::Recover,
        "continue" => RunMode::Continue,
        other => return Err(PyValueError::new_err(format!("unknown run mode {other:?}"))),
    };
    Ok(EventorOptions {
        name: name.to_string(),
        store: choose_store(store, &config)?,
        run_mode,
        run_id: (!run_id.is_empty()).then(|| run_id.to_string()),
        recovery: recovery_run,
        logdir: config.logging.logdir.clone(),
        config,
        ..EventorOptions::default()
    })
}

/// `store` as the original read it: a `DATABASES` entry's name, else a path (or a store
/// URL); empty: the config's `default_db`, else the flow's default file.
fn choose_store(store: &str, config: &EventorConfig) -> PyResult<Option<StoreLocation>> {
    let entry = if store.is_empty() {
        config.database()
    } else {
        match config.database_named(store) {
            Some(entry) => Some(entry),
            None => {
                let location = StoreLocation::parse(store)
                    .map_err(|e| PyValueError::new_err(format!("store {store:?}: {e}")))?;
                return Ok(Some(location));
            }
        }
    };
    let Some(entry) = entry else { return Ok(None) };
    let entry = entry.map_err(|unusable| PyValueError::new_err(unusable.to_string()))?;
    let location = entry
        .location()
        .map_err(|e| PyValueError::new_err(format!("DATABASES entry: {e}")))?;
    Ok(Some(location))
}

/// The cluster of a hosts file, where this program (`interpreter script`) is the agent of
/// its pinned Python steps (so a host needs no `agent:`: the interpreter is its agent).
fn cluster_of(hosts: &str, interpreter: &str, script: &str) -> PyResult<ClusterOptions> {
    let text = std::fs::read_to_string(hosts)
        .map_err(|e| PyValueError::new_err(format!("hosts file {hosts}: {e}")))?;
    let defaults = HostDefaults {
        agent: Some(interpreter.to_string()),
        ..HostDefaults::from_env()
    };
    let file = parse_hosts(&text, Path::new(hosts), &defaults)
        .map_err(|e| PyValueError::new_err(error_chain(&e)))?;
    Ok(ClusterOptions {
        hosts: file,
        lost_after: LinkSettings::default().lost_after,
        script: Some(ScriptAgent {
            interpreter: interpreter.into(),
            script: script.into(),
        }),
    })
}

/// The config as `--config` loads it: from a file, or from the text of a dict (JSON, which
/// the YAML reader reads) named `source` in messages.
fn load(
    config_path: Option<&str>,
    config_text: Option<&str>,
    tag: &str,
) -> PyResult<EventorConfig> {
    let loaded = match (config_path, config_text) {
        (Some(path), _) => load_config(Path::new(path), tag),
        (None, Some(text)) => parse_config(text, Path::new("<config dict>"), tag),
        (None, None) => return Ok(EventorConfig::default()),
    };
    loaded.map_err(|e| PyValueError::new_err(error_chain(&e)))
}

/// An engine error as Python sees it: the user's input is a `ValueError`, the rest a
/// `RuntimeError`, each with the whole chain of causes.
fn to_py(error: EventorError) -> PyErr {
    let text = error_chain(&error);
    if error.is_input_error() {
        PyValueError::new_err(text)
    } else {
        PyRuntimeError::new_err(text)
    }
}

/// An event expression from the Python layer's form: a name, or `("and" | "or", [operands])`.
fn expr_of(value: &Bound<'_, PyAny>) -> PyResult<Expr> {
    if value.is_instance_of::<PyString>() {
        return Ok(Expr::Event {
            name: value.extract()?,
            column: 0,
        });
    }
    let (op, operands): (String, Bound<'_, PyList>) = value.extract()?;
    let operands = operands
        .iter()
        .map(|operand| expr_of(&operand))
        .collect::<PyResult<Vec<_>>>()?;
    match op.as_str() {
        "and" => Ok(Expr::And(operands)),
        "or" => Ok(Expr::Or(operands)),
        other => Err(PyValueError::new_err(format!(
            "unknown expression operator {other:?}"
        ))),
    }
}

/// A Python step: `call()` runs the user's function (in the process or a forked child, as
/// the Python layer arranged) and returns `(ok, text)`: the result as JSON text, or the
/// error with its traceback. The GIL is taken for the call only.
fn python_action(call: Py<PyAny>) -> StepAction {
    let call = Arc::new(call);
    StepAction::Sync(Arc::new(move |_task: &TaskContext| {
        Python::attach(|py| {
            let answer = call
                .bind(py)
                .call0()
                .and_then(|value| value.extract::<(bool, String)>());
            match answer {
                Ok((true, json)) => serde_json::from_str(&json)
                    .map_err(|e| format!("the step's result is not JSON: {e}")),
                Ok((false, error)) => Err(error),
                Err(error) => Err(format!("the step's wrapper failed: {error}")),
            }
        })
    }))
}

/// `value` seconds as a duration, or why it is none (negative, not a number, too long).
fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{what} {value} is not a number of seconds")))
}

/// A console level as Python's `logging` numbers it (`trace` is below `DEBUG`).
fn python_level(level: ConsoleLevel) -> u8 {
    match level {
        ConsoleLevel::Trace => 5,
        ConsoleLevel::Debug => 10,
        ConsoleLevel::Info => 20,
        ConsoleLevel::Warning => 30,
        ConsoleLevel::Error => 40,
        ConsoleLevel::Critical => 50,
    }
}

fn recover_action(value: &str) -> PyResult<RecoverAction> {
    match value {
        "rerun" => Ok(RecoverAction::Rerun),
        "skip" => Ok(RecoverAction::Skip),
        other => Err(PyValueError::new_err(format!("unknown replay {other:?}"))),
    }
}

fn recovery_of(pairs: Vec<(String, String)>) -> PyResult<RecoveryPolicy> {
    let mut policy = RecoveryPolicy::default();
    for (status, action) in pairs {
        let action = recover_action(&action)?;
        match status.as_str() {
            "ready" => policy.ready = action,
            "active" => policy.active = action,
            "success" => policy.success = action,
            "failure" => policy.failure = action,
            "complete" => {
                policy.success = action;
                policy.failure = action;
            }
            other => return Err(PyValueError::new_err(format!("unknown status {other:?}"))),
        }
    }
    Ok(policy)
}

impl Flow {
    /// Each of `hosts` is a host of the flow's hosts file.
    fn check_hosts(&self, step: &str, hosts: &[String]) -> PyResult<()> {
        let Some(first) = hosts.first() else {
            return Ok(());
        };
        let Some(known) = &self.hosts else {
            return Err(PyValueError::new_err(format!(
                "step {step}: host {first}: the flow has no hosts file (Eventor(hosts=FILE))"
            )));
        };
        match hosts.iter().find(|h| !known.contains(h)) {
            Some(unknown) => Err(PyValueError::new_err(format!(
                "step {step}: unknown host {unknown} (the hosts file has: {})",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl Flow {
    #[new]
    /// `hosts`: `(hosts file, interpreter, script)`: steps may be pinned to its hosts,
    /// where `interpreter script` serves them.
    #[pyo3(signature = (name, store, run_mode, run_id, recovery_run, config_path, config_text, config_tag, hosts))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        store: &str,
        run_mode: &str,
        run_id: &str,
        recovery_run: Option<i32>,
        config_path: Option<&str>,
        config_text: Option<&str>,
        config_tag: &str,
        hosts: Option<(String, String, String)>,
    ) -> PyResult<Flow> {
        let mut config = load(config_path, config_text, config_tag)?;
        let warnings = std::mem::take(&mut config.warnings);
        let log_level = python_level(config.logging.level);
        let python = (
            config.task_construct.clone(),
            config.sequence_arg_name.clone(),
            config.pass_logger_to_task,
        );
        let mut options = options_of(name, store, run_mode, run_id, recovery_run, config)?;
        if let Some((file, interpreter, script)) = hosts {
            options.cluster = Some(cluster_of(&file, &interpreter, &script)?);
        }
        let hosts = options.cluster.as_ref().map(|c| c.hosts.names());
        let eventor = Eventor::new(options).map_err(to_py)?;
        Ok(Flow {
            eventor,
            warnings,
            log_level,
            python,
            hosts,
        })
    }

    #[getter]
    fn run_id(&self) -> String {
        self.eventor.run_id().to_string()
    }

    #[getter]
    fn name(&self) -> String {
        self.eventor.name().to_string()
    }

    /// The run's status as one line of JSON (`status --json`'s object), read from the store
    /// (after `run`; a step asks with `task_run_status`, which does not wait for the flow).
    fn status_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.eventor.status_json())
            .map_err(|e| PyRuntimeError::new_err(error_chain(&e)))
    }

    /// Where the run is stored, as text (a password masked).
    #[getter]
    fn store(&self) -> String {
        self.eventor.store_location().to_string()
    }

    #[getter]
    fn log_level(&self) -> u8 {
        self.log_level
    }

    /// `(task_construct, sequence_arg_name, pass_logger_to_task)` as the config set them.
    #[getter]
    fn python_settings(&self) -> (Option<String>, Option<String>, bool) {
        self.python.clone()
    }

    /// What the config set that has no effect here, one line each.
    #[getter]
    fn config_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    #[pyo3(signature = (name, expr=None))]
    fn add_event(&mut self, name: &str, expr: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let expr = expr.map(expr_of).transpose()?;
        self.eventor.add_event(name, expr).map_err(to_py)?;
        Ok(())
    }

    /// A step: `command` (a shell command) or `call` (see [`python_action`]) or neither;
    /// `triggers` and `recovery` as (status, event) and (status, replay) pairs; `hosts`:
    /// where it runs (empty: here).
    #[pyo3(signature = (name, command, call, triggers, recovery, acquires, releases,
                        stop_on_exception, max_concurrent, timeout, hosts))]
    #[allow(clippy::too_many_arguments)]
    fn add_step(
        &mut self,
        name: &str,
        command: Option<String>,
        call: Option<Py<PyAny>>,
        triggers: Vec<(String, String)>,
        recovery: Vec<(String, String)>,
        acquires: Vec<(String, u32)>,
        releases: Option<Vec<(String, u32)>>,
        stop_on_exception: Option<bool>,
        max_concurrent: Option<i64>,
        timeout: Option<f64>,
        hosts: Vec<String>,
    ) -> PyResult<()> {
        self.check_hosts(name, &hosts)?;
        let mut step = Step::new(name);
        if let Some(command) = command {
            step = step.command(command);
        } else if let Some(call) = call {
            step.action = python_action(call);
        }
        for (status, event) in triggers {
            let list = match status.as_str() {
                "ready" => &mut step.triggers.ready,
                "active" => &mut step.triggers.active,
                "success" => &mut step.triggers.success,
                "failure" => &mut step.triggers.failure,
                "complete" => &mut step.triggers.complete,
                other => return Err(PyValueError::new_err(format!("unknown status {other:?}"))),
            };
            list.push(event);
        }
        step = step.config(StepConfig {
            max_concurrent: max_concurrent
                .map_or(MaxConcurrent::UNLIMITED, MaxConcurrent::from_config),
            stop_on_exception,
            timeout: timeout.map(|t| seconds("timeout", t)).transpose()?,
            recovery: recovery_of(recovery)?,
            acquires,
            releases,
            hosts,
            ..StepConfig::default()
        });
        self.eventor.add_step(step).map_err(to_py)?;
        Ok(())
    }

    #[pyo3(signature = (name, units, shared))]
    fn add_pool(&mut self, name: &str, units: u32, shared: bool) -> PyResult<()> {
        let added = if shared {
            self.eventor.add_shared_resource_pool(name, units)
        } else {
            self.eventor.add_resource_pool(name, units)
        };
        added.map_err(to_py)?;
        Ok(())
    }

    /// `targets` as (kind, name): kind `step`, `event`, or `""` for whichever the flow has.
    #[pyo3(signature = (event, targets, delay))]
    fn add_assoc(
        &mut self,
        event: &str,
        targets: Vec<(String, String)>,
        delay: f64,
    ) -> PyResult<()> {
        let delay = seconds("delay", delay)?;
        let targets = targets.into_iter().map(|(kind, name)| match kind.as_str() {
            "step" => AssocTarget::Step(name),
            "event" => AssocTarget::Event(name),
            _ => AssocTarget::Named(name),
        });
        let delay = (!delay.is_zero()).then_some(delay);
        self.eventor
            .add_assoc(event, targets, delay)
            .map_err(to_py)?;
        Ok(())
    }

    fn trigger_event(&mut self, event: &str, sequence: &str) -> PyResult<()> {
        self.eventor.trigger_event(event, sequence).map_err(to_py)?;
        Ok(())
    }

    /// Runs with the GIL released; returns the outcome's kind (`success`, `failure`,
    /// `incomplete`, `interrupted`) and its whole text. Ctrl-C stops the run as the command
    /// line's SIGINT does (a second one skips the grace), then raises KeyboardInterrupt.
    fn run(&mut self, py: Python<'_>, max_loops: i64) -> PyResult<(String, String)> {
        let interrupt = Interrupt::new();
        self.eventor.set_interrupt(interrupt.clone());
        let eventor = &mut self.eventor;
        let (result, signal) = std::thread::scope(|scope| {
            let (done, mut finished) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let _ = done.send(eventor.run(max_loops));
            });
            let mut signal = None;
            loop {
                // Python runs signal handlers only on its main thread, when asked.
                // (The receiver goes into the GIL-free closure and back: it is not `Sync`.)
                let (answer, back) =
                    py.detach(move || (finished.recv_timeout(SIGNAL_CHECK), finished));
                finished = back;
                match answer {
                    Ok(result) => return (result, signal),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        let gone =
                            std::io::Error::other("the run's thread ended without an answer");
                        return (Err(EventorError::Runtime(gone)), signal);
                    }
                }
                if let Err(error) = py.check_signals() {
                    if signal.is_none() {
                        interrupt.stop("SIGINT");
                    } else {
                        interrupt.hurry();
                    }
                    signal = Some(error);
                }
            }
        });
        if let Some(error) = signal {
            return Err(error);
        }
        let outcome = result.map_err(to_py)?;
        let kind = match &outcome {
            RunOutcome::Success => "success",
            RunOutcome::Failure { .. } => "failure",
            RunOutcome::Incomplete { .. } => "incomplete",
            RunOutcome::Interrupted { .. } => "interrupted",
        };
        Ok((kind.to_string(), outcome.to_string()))
    }

    fn close(&mut self) {
        self.eventor.close();
    }
}

/// The task running on this thread, as `(run_id, flow, step, sequence, recovery, attempt,
/// env_prefix)`, or `None` outside a step.
#[pyfunction]
fn task_identity(py: Python<'_>) -> PyResult<Option<Bound<'_, PyTuple>>> {
    let Some(task) = eventor::current_task() else {
        return Ok(None);
    };
    let fields = (
        &*task.run_id,
        &*task.flow,
        &*task.step,
        &*task.sequence,
        task.recovery,
        task.attempt,
        &*task.env_prefix,
    );
    Ok(Some(fields.into_pyobject(py)?))
}

/// Fires `event` in `sequence` in the run of the task running on this thread (it takes
/// effect at the driver's next turn).
#[pyfunction]
fn trigger_from_task(event: &str, sequence: &str) -> PyResult<()> {
    let task = eventor::current_task()
        .ok_or_else(|| PyRuntimeError::new_err("trigger_event from a task: no task runs here"))?;
    task.trigger_event(event, sequence)
        .map_err(|e| PyRuntimeError::new_err(error_chain(&e)))
}

/// The status of the run of the task running here, as one line of JSON, from its
/// coordinator (through the run's trigger socket, in a forked step's child too).
#[pyfunction]
fn task_run_status(py: Python<'_>) -> PyResult<String> {
    let task = eventor::current_task()
        .ok_or_else(|| PyRuntimeError::new_err("count_todos from a task: no task runs here"))?;
    let socket = task.trigger_socket.clone().ok_or_else(|| {
        PyRuntimeError::new_err("count_todos from a task: the run has no trigger socket")
    })?;
    let answer = py.detach(|| eventor::trigger_socket_status(std::path::Path::new(&*socket)));
    match answer {
        Ok(Ok(json)) => Ok(json),
        Ok(Err(why)) => Err(PyRuntimeError::new_err(why)),
        Err(e) => Err(PyRuntimeError::new_err(format!(
            "cannot reach the task's run: {e}"
        ))),
    }
}

/// Writes a Python log record's `text` at `level` (Python's number) into the central log
/// of the task running on this thread, as the task's; `False` when there is no task here or
/// its run has no central log in this process.
#[pyfunction]
fn log_from_task(py: Python<'_>, level: u32, text: &str) -> bool {
    let Some(task) = eventor::current_task() else {
        return false;
    };
    let level = match level {
        40.. => LogLevel::Error,
        30..=39 => LogLevel::Warn,
        20..=29 => LogLevel::Info,
        10..=19 => LogLevel::Debug,
        _ => LogLevel::Trace,
    };
    // The writer may make it wait (backpressure); a step on another thread may want the GIL.
    py.detach(|| eventor::log::task_log(&task, level, text))
}

/// In a forked step's child: dies with SIGKILL when the thread that forked it ends (it waits
/// for the child, so that is when the whole program ended).
#[pyfunction]
fn die_with_parent() -> PyResult<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| PyRuntimeError::new_err(format!("prctl(PR_SET_PDEATHSIG): {e}")))
}

#[pymodule]
fn _eventor(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Flow>()?;
    module.add_function(wrap_pyfunction!(task_identity, module)?)?;
    module.add_function(wrap_pyfunction!(die_with_parent, module)?)?;
    module.add_function(wrap_pyfunction!(trigger_from_task, module)?)?;
    module.add_function(wrap_pyfunction!(task_run_status, module)?)?;
    module.add_function(wrap_pyfunction!(log_from_task, module)?)?;
    Ok(())
}
