//! A closure step's own log records into its run's central log: each running run's log
//! is found by the run's id, so a step needs only its [`TaskContext`] to write there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use eventor_agent::TaskContext;
use eventor_protocol::{LogLevel, LogRecord, Stream, TaskKey};

use super::CentralOutput;

/// The central logs of the runs driven in this process now, by run id.
static RUNS: Mutex<BTreeMap<Arc<str>, CentralOutput>> = Mutex::new(BTreeMap::new());

/// A run's central log open to its steps while this lives.
pub(crate) struct TaskLogs {
    run_id: Arc<str>,
}

impl TaskLogs {
    pub(crate) fn open(run_id: &str, output: CentralOutput) -> TaskLogs {
        let run_id: Arc<str> = Arc::from(run_id);
        runs().insert(run_id.clone(), output);
        TaskLogs { run_id }
    }
}

impl Drop for TaskLogs {
    fn drop(&mut self) {
        runs().remove(&self.run_id);
    }
}

fn runs() -> std::sync::MutexGuard<'static, BTreeMap<Arc<str>, CentralOutput>> {
    RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `text` at `level` into the central log of `task`'s run, as a record of the task
/// on this host (stream `agent`: the step's logging, not its output). `false` when the run
/// has no central log here (none configured, or the task runs on another host's agent).
pub fn task_log(task: &TaskContext, level: LogLevel, text: &str) -> bool {
    let Some(output) = runs().get(&task.run_id).cloned() else {
        return false;
    };
    let record = LogRecord {
        time: eventor_store::now_micros(),
        level,
        host: output.host.to_string(),
        task: Some(TaskKey {
            run_id: task.run_id.to_string(),
            step: task.step.to_string(),
            sequence: task.sequence.to_string(),
            recovery: task.recovery,
            attempt: task.attempt,
        }),
        stream: Stream::Agent,
        text: text.to_string(),
    };
    output.sink.record_blocking(record)
}
