//! The Rust API end to end: closures and commands run for real against an SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventor::{
    current_task, AssocTarget, Eventor, EventorConfig, EventorError, EventorOptions, FailureKind,
    MaxConcurrent, RetryMatch, RetryOn, RunOutcome, Step, StepConfig, StoreLocation,
};
use eventor_store::{Store, TaskStatus};

fn options(dir: &tempfile::TempDir, name: &str) -> EventorOptions {
    EventorOptions {
        name: name.to_string(),
        store: Some(StoreLocation::Sqlite(dir.path().join("api.run.db"))),
        ..EventorOptions::default()
    }
}

#[test]
fn concurrent_closures_each_see_their_own_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(options(&dir, "isolation")).unwrap();
    ev.add_event("go", None).unwrap();
    ev.add_step(Step::new("sync_step").func(|task| {
        std::thread::sleep(Duration::from_millis(20));
        let seen = current_task().ok_or("no current task")?;
        if seen.sequence != task.sequence || &*seen.step != "sync_step" {
            return Err(format!("saw {}[{}]", seen.step, seen.sequence));
        }
        Ok(seen.sequence.to_string())
    }))
    .unwrap();
    ev.add_step(Step::new("async_step").async_func(|task| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let seen = current_task().ok_or("no current task")?;
        if seen.sequence != task.sequence || &*seen.step != "async_step" {
            return Err(format!("saw {}[{}]", seen.step, seen.sequence));
        }
        Ok::<_, String>(seen.sequence.to_string())
    }))
    .unwrap();
    ev.add_assoc("go", ["sync_step", "async_step"], None)
        .unwrap();
    for seq in 1..=40 {
        ev.trigger_event("go", seq.to_string()).unwrap();
    }
    assert_eq!(ev.run(-1).unwrap(), RunOutcome::Success);
    assert!(current_task().is_none(), "no task outside a task");
}

#[test]
fn closure_results_and_errors_are_stored_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(EventorOptions {
        config: EventorConfig {
            stop_on_exception: false,
            ..EventorConfig::default()
        },
        ..options(&dir, "results")
    })
    .unwrap();
    ev.add_event("go", None).unwrap();
    ev.add_step(Step::new("square").func(|task| {
        let n: i64 = task.sequence.parse().map_err(|_| "not a number")?;
        Ok::<_, &str>(serde_json::json!({"square": n * n}))
    }))
    .unwrap();
    ev.add_step(Step::new("boom").func(|_| -> Result<(), String> { panic!("kaboom") }))
        .unwrap();
    ev.add_assoc("go", ["square", "boom"], None).unwrap();
    ev.trigger_event("go", "7").unwrap();
    let run_id = ev.run_id().to_string();
    let outcome = ev.run(-1).unwrap();
    let RunOutcome::Failure { failed } = outcome else {
        panic!("boom must fail the run")
    };
    assert_eq!(failed[0].error.as_deref(), Some("step panicked: kaboom"));

    let tasks = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(&StoreLocation::Sqlite(dir.path().join("api.run.db")))
            .await
            .unwrap();
        let run = store.run_history(&run_id).await.unwrap().remove(0);
        store.tasks(run.key).await.unwrap()
    });
    let square = tasks.iter().find(|t| t.step == "square").unwrap();
    assert_eq!(square.status, TaskStatus::Success);
    assert_eq!(square.result.as_deref(), Some(r#"{"square":49}"#));
    let boom = tasks.iter().find(|t| t.step == "boom").unwrap();
    assert_eq!(boom.status, TaskStatus::Failure);
    assert_eq!(boom.error.as_deref(), Some("step panicked: kaboom"));
}

/// `StepConfig::retry_on` as the flow file's: a command exiting 75 is retried under
/// `exit:75`, a closure's error (class `exit`, no code) is not, and a closure retried on
/// `exit` runs again; each end's class is stored.
#[test]
fn retry_on_in_the_api_spends_retries_on_the_classes_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(EventorOptions {
        config: EventorConfig {
            stop_on_exception: false,
            ..EventorConfig::default()
        },
        ..options(&dir, "retry_on")
    })
    .unwrap();
    let on = |m: Vec<RetryMatch>| StepConfig {
        retries: 2,
        retry_on: RetryOn(m),
        ..StepConfig::default()
    };
    let mark = dir.path().join("once");
    let command = format!("test -f {0} || {{ touch {0}; exit 75; }}", mark.display());
    ev.add_event("go", None).unwrap();
    ev.add_step(
        Step::new("tool")
            .command(command)
            .config(on(vec![RetryMatch::ExitCode(75)])),
    )
    .unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counted = refused.clone();
    ev.add_step(
        Step::new("closure")
            .func(move |_| -> Result<(), String> {
                counted.fetch_add(1, Ordering::SeqCst);
                Err("no".into())
            })
            .config(on(vec![RetryMatch::ExitCode(75)])),
    )
    .unwrap();
    let retried = Arc::new(AtomicUsize::new(0));
    let counted = retried.clone();
    ev.add_step(
        Step::new("again")
            .func(move |_| -> Result<(), String> {
                counted.fetch_add(1, Ordering::SeqCst);
                Err("no".into())
            })
            .config(on(vec![RetryMatch::Kind(FailureKind::Exit)])),
    )
    .unwrap();
    ev.add_assoc("go", ["tool", "closure", "again"], None)
        .unwrap();
    ev.trigger_event("go", "1").unwrap();
    let run_id = ev.run_id().to_string();
    assert!(matches!(ev.run(-1).unwrap(), RunOutcome::Failure { .. }));
    assert_eq!(refused.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(retried.load(Ordering::SeqCst), 3, "every retry spent");
    let tasks = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(&StoreLocation::Sqlite(dir.path().join("api.run.db")))
            .await
            .unwrap();
        let run = store.run_history(&run_id).await.unwrap().remove(0);
        store.tasks(run.key).await.unwrap()
    });
    let mut seen: Vec<_> = tasks
        .iter()
        .map(|t| {
            (
                t.step.as_str(),
                t.status,
                t.attempt,
                t.failure_class.as_deref(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("again", TaskStatus::Failure, 3, Some("exit")),
            ("closure", TaskStatus::Failure, 1, Some("exit")),
            ("tool", TaskStatus::Success, 2, None)
        ]
    );
}

/// Counts how many tasks run at once and remembers the most.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Gauge {
    async fn hold(&self, for_how_long: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(for_how_long).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn gauged_step(name: &str, gauge: &Arc<Gauge>, config: StepConfig) -> Step {
    let gauge = gauge.clone();
    Step::new(name)
        .async_func(move |_| {
            let gauge = gauge.clone();
            async move {
                gauge.hold(Duration::from_millis(30)).await;
                Ok::<_, String>(())
            }
        })
        .config(config)
}

#[test]
fn max_concurrent_holds_globally_and_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(EventorOptions {
        config: EventorConfig {
            max_concurrent: MaxConcurrent::at_most(3),
            ..EventorConfig::default()
        },
        ..options(&dir, "limits")
    })
    .unwrap();
    let (all, one_step) = (Arc::new(Gauge::default()), Arc::new(Gauge::default()));
    ev.add_event("go", None).unwrap();
    ev.add_step(gauged_step("free", &all, StepConfig::default()))
        .unwrap();
    let limited = StepConfig {
        max_concurrent: MaxConcurrent::at_most(1),
        ..StepConfig::default()
    };
    let limited_step = {
        let (all, one_step) = (all.clone(), one_step.clone());
        Step::new("limited")
            .async_func(move |_| {
                let (all, one_step) = (all.clone(), one_step.clone());
                async move {
                    tokio::join!(
                        all.hold(Duration::from_millis(30)),
                        one_step.hold(Duration::from_millis(30))
                    );
                    Ok::<_, String>(())
                }
            })
            .config(limited)
    };
    ev.add_step(limited_step).unwrap();
    ev.add_assoc("go", ["free", "limited"], None).unwrap();
    for seq in 1..=12 {
        ev.trigger_event("go", seq.to_string()).unwrap();
    }
    assert_eq!(ev.run(-1).unwrap(), RunOutcome::Success);
    assert_eq!(all.most.load(Ordering::SeqCst), 3, "global limit");
    assert_eq!(one_step.most.load(Ordering::SeqCst), 1, "per-step limit");
}

#[test]
fn a_task_can_trigger_the_next_sequence_of_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(options(&dir, "loop")).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    ev.add_event("start", None).unwrap();
    let counter = count.clone();
    ev.add_step(Step::new("work").func(move |task| {
        counter.fetch_add(1, Ordering::SeqCst);
        let n: u32 = task.sequence.parse().unwrap();
        if n < 10 {
            task.trigger_event("start", (n + 1).to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(n)
    }))
    .unwrap();
    ev.add_assoc("start", ["work"], None).unwrap();
    ev.trigger_event("start", "1").unwrap();
    assert_eq!(ev.run(-1).unwrap(), RunOutcome::Success);
    assert_eq!(count.load(Ordering::SeqCst), 10);
}

#[test]
fn definition_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut ev = Eventor::new(options(&dir, "errors")).unwrap();
    ev.add_event("a", None).unwrap();
    let dup = ev.add_event("a", None).err().unwrap();
    assert_eq!(dup.to_string(), "`a` is already defined");
    let bad = ev.add_event_expr("b", "a & (").err().unwrap();
    assert!(matches!(bad, EventorError::BadExpression { .. }), "{bad}");
    assert!(bad.to_string().contains("column"), "{bad}");
    ev.add_event_expr("c", "a & nope").unwrap();
    let unknown = ev.run(-1).err().unwrap();
    assert_eq!(
        unknown.to_string(),
        "expression of event `c` (column 5): unknown event `nope`"
    );
    assert!(
        !dir.path().join("api.run.db").exists(),
        "nothing stored for a bad flow"
    );
}

/// A flow where event `work` and step `work` (which touches `ran`) share the name, `go`
/// leading to `target`.
fn same_name_flow(dir: &tempfile::TempDir, target: AssocTarget) -> Eventor {
    let mut ev = Eventor::new(options(dir, "same_name")).unwrap();
    ev.add_event("go", None).unwrap();
    ev.add_event("work", None).unwrap();
    let touch = format!("touch '{}'", dir.path().join("ran").display());
    ev.add_step(Step::new("work").command(touch)).unwrap();
    ev.add_assoc("go", [target], None).unwrap();
    ev.trigger_event("go", "1").unwrap();
    ev
}

#[test]
fn an_event_and_a_step_may_share_a_name_and_a_target_naming_both_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let bare = same_name_flow(&dir, "work".into());
    let ambiguous = bare.validate().err().unwrap();
    assert!(
        matches!(ambiguous, EventorError::AmbiguousTarget { .. }),
        "{ambiguous}"
    );
    assert_eq!(
        ambiguous.to_string(),
        "association 1 (event `go`): `work` is both a step and an event: write {step: work} \
         or {event: work}"
    );
    let mut step = same_name_flow(&dir, AssocTarget::Step("work".into()));
    assert_eq!(step.run(-1).unwrap(), RunOutcome::Success);
    assert!(dir.path().join("ran").exists(), "the step ran");
}

#[test]
fn a_run_on_a_runtime_asked_for_from_inside_it_is_refused_before_its_steps_run() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let mut ev = Eventor::new(options(&dir, "inside")).unwrap();
    ev.add_event("go", None).unwrap();
    ev.add_step(Step::new("count").func(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(())
    }))
    .unwrap();
    ev.add_assoc("go", ["count"], None).unwrap();
    ev.trigger_event("go", "1").unwrap();
    {
        let _inside = runtime.enter();
        let refused = ev.run_on(&runtime, -1);
        assert!(
            matches!(refused, Err(EventorError::InsideRuntime)),
            "{refused:?}"
        );
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the refused run started its step"
    );
    assert_eq!(ev.run_on(&runtime, -1).unwrap(), RunOutcome::Success);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
