//! Faithful to the original: what a loop is, the original's config file, recovery policies,
//! a recovery's own triggers, run ids and history, and the logger name, each through the CLI.

use std::path::Path;

use eventor_store::{NewRun, RunKey, RunMode, Store, StoreLocation, TaskStatus};

use crate::{coord, example_flows, text, write};

fn ran(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default()
}

async fn sqlite(path: &Path) -> Store {
    Store::open(&StoreLocation::Sqlite(path.to_path_buf()))
        .await
        .expect("open store")
}

/// s1 -> s2 -> s3, each writing its name to ran.txt; s2 fails while `fail` exists.
const CHAIN: &str = "name: chain\n\
    events: {start: {}, s1_done: {}, s2_done: {}}\n\
    steps:\n  \
      s1: {run: 'echo s1[$EVENTOR_STEP_SEQUENCE] >> ran.txt', triggers: {success: [s1_done]}}\n  \
      s2: {run: 'echo s2[$EVENTOR_STEP_SEQUENCE] >> ran.txt; test ! -e fail', \
           triggers: {success: [s2_done]}, recovery: RECOVERY}\n  \
      s3: {run: 'echo s3[$EVENTOR_STEP_SEQUENCE] >> ran.txt'}\n\
    assocs:\n  \
      - {event: start, targets: [s1]}\n  \
      - {event: s1_done, targets: [s2]}\n  \
      - {event: s2_done, targets: [s3]}\n\
    trigger: [{event: start}]\n";

fn chain(dir: &Path, recovery: &str) -> String {
    let flow = write(dir, "chain.yaml", &CHAIN.replace("RECOVERY", recovery));
    flow.to_str().unwrap().to_string()
}

#[test]
fn one_loop_runs_a_plain_chain_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{}");
    let out = coord(dir.path(), &["run", &flow, "--max-loops", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ran(dir.path()), "s1[1]\ns2[1]\ns3[1]\n");
}

#[test]
fn zero_loops_is_bad_input_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{}");
    let out = coord(dir.path(), &["run", &flow, "--max-loops", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("max_loops must be at least 1"));
    assert_eq!(ran(dir.path()), "");
}

#[test]
fn recover_with_failure_skip_goes_on_as_if_it_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{failure: skip}");
    write(dir.path(), "fail", "");
    let first = coord(dir.path(), &["run", &flow, "--run-id", "r"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let again = coord(
        dir.path(),
        &["run", &flow, "--run-id", "r", "--mode", "recover"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(
        ran(dir.path()),
        "s1[1]\ns2[1]\ns3[1]\n",
        "s2 is not run again"
    );
}

#[tokio::test]
async fn recover_starts_from_the_runs_own_triggers_not_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{}");
    write(dir.path(), "fail", "");
    let first = coord(dir.path(), &["run", &flow, "--trigger", "start@5"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let again = coord(dir.path(), &["run", &flow, "--mode", "recover"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(
        ran(dir.path()),
        "s1[5]\ns2[5]\ns2[5]\ns3[5]\n",
        "sequence 5 goes on; the file's sequence 1 never starts"
    );
    let store = sqlite(&dir.path().join("chain.run.db")).await;
    let run = store.latest_run("chain").await.unwrap().unwrap();
    let tasks = store.tasks(run.key).await.unwrap();
    let s1 = tasks.iter().find(|t| t.step == "s1").unwrap();
    assert_eq!(
        (s1.sequence.as_str(), s1.status),
        ("5", TaskStatus::Skipped)
    );
}

#[tokio::test]
async fn restart_under_a_stored_run_id_is_refused_unless_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{}");
    let run = ["run", flow.as_str(), "--run-id", "nightly"];
    let first = coord(dir.path(), &run);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let again = coord(dir.path(), &run);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
    let message = text(&again.stderr);
    for choice in ["--mode recover", "--run-id", "--replace"] {
        assert!(message.contains(choice), "{choice} not named: {message}");
    }
    let store = sqlite(&dir.path().join("chain.run.db")).await;
    assert_eq!(
        store.run_history("nightly").await.unwrap().len(),
        1,
        "nothing lost"
    );
    let replaced = coord(dir.path(), &[&run[..], &["--replace"]].concat());
    assert_eq!(
        replaced.status.code(),
        Some(0),
        "{}",
        text(&replaced.stderr)
    );
    let history = store.run_history("nightly").await.unwrap();
    assert_eq!(
        history.len(),
        1,
        "the old history is gone, the new run stands"
    );
    assert_eq!(
        ran(dir.path()).lines().count(),
        6,
        "both runs ran every step"
    );
    let log = std::fs::read_to_string(dir.path().join("logs/chain/nightly.log")).unwrap();
    assert_eq!(
        log.matches("-- start of run nightly").count(),
        1,
        "the replaced run's log went with its history: {log}"
    );
    assert!(
        dir.path().join("logs/chain/nightly.graph.json").is_file(),
        "the new run keeps the graph saved for it"
    );
}

/// `--replace` starts the run's central log anew even when the store no longer holds the
/// run (a store made afresh, or pruned): the log holds the new run alone, and its graph.
#[test]
fn a_replaced_runs_log_starts_anew_though_the_store_forgot_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path(), "{}");
    let run = ["run", flow.as_str(), "--run-id", "nightly", "--replace"];
    let first = coord(dir.path(), &run);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    std::fs::remove_file(dir.path().join("chain.run.db")).unwrap();
    let again = coord(dir.path(), &run);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(
        ran(dir.path()).lines().count(),
        6,
        "both runs ran every step"
    );
    let log = std::fs::read_to_string(dir.path().join("logs/chain/nightly.log")).unwrap();
    let markers: Vec<&str> = log.lines().filter(|l| l.starts_with("-- ")).collect();
    assert_eq!(
        markers.len(),
        2,
        "one start and one end, of the new run alone:\n{log}"
    );
    assert!(
        dir.path().join("logs/chain/nightly.graph.json").is_file(),
        "the new run's graph"
    );
}

#[test]
fn the_logger_name_is_flow_dot_step_underscore_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "named.yaml",
        "events: {go: {}}\nsteps: {s1: {run: 'echo $EVENTOR_LOGGER_NAME >> ran.txt'}}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go, range: [7, 8]}]\n",
    );
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut names: Vec<String> = ran(dir.path()).lines().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["named.s1_7", "named.s1_8"]);
}

/// The configuration sample of the original's README, its paths pointed at `dir` and its
/// Postgres entry at `pg` (host, port, database, schema), in the original's keys.
fn original_config(dir: &Path, pg: (&str, &str, &str, &str)) -> String {
    let (host, port, database, schema) = pg;
    format!(
        "EVENTOR:\n    debug: False\n    task_construct: process\n    envvar_prefix: EVENTOR_\n    \
         max_concurrent: -1\n    stop_on_exception: True\n    sleep_between_loops: 0.25\n    \
         sequence_arg_name: None\n    day_to_keep_db: 5\n    remote_method: ssh\n    \
         pass_logger_to_task: False\n    shared_db: False\n    DATABASES:\n        \
         sqfile1: {{dialect: sqlite, database: {db}}}\n        \
         pgdb1: {{dialect: postgresql, drivername: psycopg2, username: postgres, \
         host: {host}, port: {port}, database: {database}, schema: {schema}}}\n    \
         LOGGING:\n        logging_level: 10\n        logdir: {logs}\n        \
         level_formats: {{10: '...', default: '...'}}\n        consolidate: False\n        \
         console: True\n        file_prefix: ''\n        file_suffix: ''\n        file_mode: 'a'\n",
        db = dir.join("runly.db").display(),
        logs = dir.join("eventor-logs").display(),
    )
}

#[test]
fn the_originals_config_sample_runs_a_flow_on_sqlite_and_postgres() {
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let flow = example_flows().join("linear.yaml");
    let flow = flow.to_str().unwrap();
    let port = std::env::var("EVENTOR_PG_PORT").unwrap_or("55432".into());
    let schema = format!("faithful_{}", std::process::id());
    let config = original_config(dir.path(), ("127.0.0.1", &port, "eventor", &schema));
    let config = write(dir.path(), "eventor.yaml", &config);
    let config = config.to_str().unwrap();
    let need_pg = std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1");
    let stores: &[&str] = if need_pg {
        &["sqfile1", "pgdb1"]
    } else {
        &["sqfile1"]
    };
    for store in stores {
        let out = coord(
            dir.path(),
            &["run", flow, "--config", config, "--store", store],
        );
        assert_eq!(out.status.code(), Some(0), "{store}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert_eq!(stderr.matches("warning: ").count(), 13, "{stderr}");
        assert!(stderr.contains("EVENTOR.sleep_between_loops: has no effect here"));
    }
    assert!(
        dir.path().join("runly.db").exists(),
        "the sqlite entry's file"
    );
    assert!(
        dir.path().join("eventor-logs/linear").is_dir(),
        "LOGGING.logdir"
    );
}

#[tokio::test]
async fn day_to_keep_db_prunes_old_runs_and_prune_deletes_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chain.run.db");
    let store = sqlite(&db).await;
    let old = NewRun {
        key: RunKey {
            run_id: "old".into(),
            recovery: 0,
        },
        name: "chain".into(),
        mode: RunMode::Restart,
        host: "h".into(),
        program: "{}".into(),
        started_at: eventor_store::now_micros() - 10 * 86_400_000_000,
        params: Default::default(),
        env_from_prime: Vec::new(),
    };
    store.begin_run(old).await.unwrap();
    let flow = chain(dir.path(), "{}");
    let config = write(dir.path(), "keep.yaml", "EVENTOR: {day_to_keep_db: 5}\n");
    let config = config.to_str().unwrap();
    let out = coord(
        dir.path(),
        &["run", &flow, "--run-id", "new", "--config", config],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        store.run_history("old").await.unwrap().is_empty(),
        "older than 5 days"
    );
    assert_eq!(store.run_history("new").await.unwrap().len(), 1);

    let keep = coord(dir.path(), &["prune", &flow, "--older-than", "1h"]);
    assert_eq!(keep.status.code(), Some(0), "{}", text(&keep.stderr));
    assert_eq!(
        store.run_history("new").await.unwrap().len(),
        1,
        "not an hour old"
    );
    let gone = coord(dir.path(), &["prune", &flow, "--older-than", "0s"]);
    assert_eq!(gone.status.code(), Some(0), "{}", text(&gone.stderr));
    assert_eq!(text(&gone.stdout), "new\n");
    assert!(store.run_history("new").await.unwrap().is_empty());
}
