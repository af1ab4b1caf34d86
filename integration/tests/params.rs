//! Run parameters and secrets from the prime, end to end through `eventor-coord`: a
//! `--param` reaches tasks on the prime and on node1 (as a variable and through `${NAME}` in
//! `env:`), a recovery reuses the stored values and records an override; a variable of
//! `env_from_prime` reaches its tasks and is written nowhere (store, central log, stderr);
//! bad names and values are refused with exit 2 before anything is stored.

use std::path::Path;

use eventor_store::{Store, StoreLocation};

use crate::cluster_run::{hosts_file, hosts_file_with, schema};
use crate::{coord, coord_command, testbed, text, write};

async fn store(url: &str) -> Store {
    Store::open(&StoreLocation::parse(url).unwrap())
        .await
        .unwrap()
}

/// The lines of the run's central log, as `eventor-coord logs` prints them.
fn logs(dir: &Path, flow: &str, run_id: &str) -> String {
    text(&coord(dir, &["logs", flow, "--run-id", run_id]).stdout)
}

/// How many lines of `log` end with `said` on `host`'s stdout (`prime`: the prime's own,
/// logged under its machine's name).
fn said(log: &str, host: &str, said: &str) -> usize {
    let tail = format!(" stdout {said}");
    let on_host = |l: &&str| {
        let logged = l.split(' ').nth(1).unwrap_or("");
        logged == host || (host == "prime" && !logged.starts_with("node"))
    };
    log.lines()
        .filter(|l| l.ends_with(&tail))
        .filter(on_host)
        .count()
}

#[tokio::test]
async fn parameters_reach_tasks_here_and_on_node1_and_a_recovery_keeps_them() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("params"));
    let flow = write(
        dir.path(),
        "nightly.yaml",
        &format!(
            "name: nightly\n\
             params: {{RUN_DATE: ~, REGION: eu}}\n\
             events: {{go: {{}}}}\n\
             steps:\n  \
               here: {{run: 'echo \"here $RUN_DATE $REGION $DAY\"', env: {{DAY: 'day=${{RUN_DATE}}'}}}}\n  \
               there: {{run: 'echo \"there $RUN_DATE $DAY\"; test -f {out}/once || {{ touch {out}/once; exit 1; }}', host: node1, env: {{DAY: 'day=${{RUN_DATE}}'}}}}\n\
             assocs: [{{event: go, targets: [here, there]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = ["run", "--hosts", &hosts, flow, "--run-id", "N"];
    let first = coord(
        dir.path(),
        &[&run[..], &["--param", "RUN_DATE=2026-12-04"]].concat(),
    );
    assert_eq!(
        first.status.code(),
        Some(1),
        "`there` fails once: {}",
        text(&first.stderr)
    );
    let log = logs(dir.path(), flow, "N");
    assert_eq!(
        said(&log, "prime", "here 2026-12-04 eu day=2026-12-04"),
        1,
        "{log}"
    );
    assert_eq!(
        said(&log, "node1", "there 2026-12-04 day=2026-12-04"),
        1,
        "{log}"
    );

    let recover = coord(dir.path(), &[&run[..], &["--mode", "recover"]].concat());
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let log = logs(dir.path(), flow, "N");
    assert_eq!(
        said(&log, "node1", "there 2026-12-04 day=2026-12-04"),
        2,
        "the recovery reran `there` with the stored value:\n{log}"
    );
    let history = store(&url).await.run_history("N").await.unwrap();
    let kept = [("REGION", "eu"), ("RUN_DATE", "2026-12-04")];
    let kept = kept.map(|(k, v)| (k.to_string(), v.to_string())).into();
    assert_eq!(history[1].params, Some(kept));

    let again = [
        &run[..],
        &["--mode", "recover", "--param", "RUN_DATE=2026-12-05"],
    ]
    .concat();
    let overridden = coord(dir.path(), &again);
    assert_eq!(
        overridden.status.code(),
        Some(0),
        "{}",
        text(&overridden.stderr)
    );
    let err = text(&overridden.stderr);
    assert_eq!(
        err.matches("parameter RUN_DATE: 2026-12-05 (was 2026-12-04)")
            .count(),
        1,
        "the override is logged once:\n{err}"
    );
    let history = store(&url).await.run_history("N").await.unwrap();
    let params = history[2].params.as_ref().unwrap();
    assert_eq!(params["RUN_DATE"], "2026-12-05", "the override is recorded");
    let status = coord(
        dir.path(),
        &["status", flow, "--hosts", &hosts, "--run-id", "N", "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["params"]["RUN_DATE"], "2026-12-05", "{json}");
    let status = coord(
        dir.path(),
        &["status", flow, "--hosts", &hosts, "--run-id", "N"],
    );
    let shown = text(&status.stdout);
    assert!(
        shown.contains("params: REGION=eu  RUN_DATE=2026-12-05"),
        "{shown}"
    );
}

/// Every text of every row of every table of `schema` in the shared Postgres, as text.
async fn every_row_as_text(url: &str, schema: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap();
    let mut all = String::new();
    for table in tables {
        let name: String = table.get(0);
        let sql = format!("SELECT t::text FROM \"{schema}\".\"{name}\" t");
        for row in client.query(&sql, &[]).await.unwrap() {
            all.push_str(&row.get::<_, String>(0));
            all.push('\n');
        }
    }
    drop(client);
    let _ = driver.await;
    assert!(all.contains("nightly"), "the dump holds the run's rows");
    all
}

/// Every file's bytes under `dir` whose name contains `part`, lossily as text.
fn files_containing(dir: &Path, part: &str) -> String {
    let mut all = String::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(part) {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
        }
    }
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

const SECRET: &str = "s3cret-Value-7Qx";
const STEP_SECRET: &str = "step-s3cret-9Zw";

#[tokio::test]
async fn a_secret_from_the_prime_reaches_node1_and_is_written_nowhere() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let name = schema("secret");
    let (hosts, _) = hosts_file_with(
        dir.path(),
        &bed,
        &name,
        "env_from_prime: [EV_DB_PASSWORD]\n",
    );
    let flow = write(
        dir.path(),
        "nightly.yaml",
        &format!(
            "name: nightly\n\
             events: {{go: {{}}}}\n\
             steps:\n  \
               there: {{run: 'test \"$EV_DB_PASSWORD\" = {SECRET} && test \"$EV_STEP\" = {STEP_SECRET} && echo there ok', host: node1, env_from_prime: [EV_STEP]}}\n  \
               here: {{run: 'test \"$EV_STEP\" = {STEP_SECRET} && echo here ok', env_from_prime: [EV_STEP]}}\n\
             assocs: [{{event: go, targets: [here, there]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = coord_command(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "S"],
    )
    .env("RUST_LOG", "debug")
    .env("EV_DB_PASSWORD", SECRET)
    .env("EV_STEP", STEP_SECRET)
    .output()
    .unwrap();
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let log = logs(dir.path(), flow, "S");
    assert_eq!(
        said(&log, "node1", "there ok"),
        1,
        "the secrets reach node1:\n{log}"
    );
    assert_eq!(
        said(&log, "prime", "here ok"),
        1,
        "the step's reaches the prime's task:\n{log}"
    );
    let central = files_containing(&dir.path().join("logs"), "S.");
    let rows = every_row_as_text(&bed["EVENTOR_PG_URL"], &name).await;
    for secret in [SECRET, STEP_SECRET] {
        assert!(
            !stderr.contains(secret),
            "the run's stderr shows a secret:\n{stderr}"
        );
        assert!(!central.contains(secret), "the central log holds a secret");
        assert!(!rows.contains(secret), "the store holds a secret:\n{rows}");
    }
    let status = coord_command(
        dir.path(),
        &["status", flow, "--hosts", &hosts, "--run-id", "S"],
    )
    .output()
    .unwrap();
    let shown = text(&status.stdout);
    assert!(
        shown.contains("env from the prime: EV_DB_PASSWORD, EV_STEP"),
        "{shown}"
    );
    // The hosts file's variable missing from the prime: exit 2 naming it, nothing run.
    let missing = coord_command(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "M"],
    )
    .env_remove("EV_DB_PASSWORD")
    .env("EV_STEP", STEP_SECRET)
    .output()
    .unwrap();
    let err = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`EV_DB_PASSWORD` (env_from_prime of the hosts file) is not set in the prime's environment"),
        "{err}"
    );
    let runs = store(&format!("{}?schema={name}", bed["EVENTOR_PG_URL"])).await;
    assert!(
        runs.run_history("M").await.unwrap().is_empty(),
        "nothing is stored for M"
    );
}

#[test]
fn a_step_s_secret_reaches_its_local_task_and_not_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "local.yaml",
        &format!(
            "events: {{go: {{}}}}\n\
             steps:\n  \
               s1: {{run: 'test \"$EV_STEP\" = {STEP_SECRET} && echo local ok', env_from_prime: [EV_STEP]}}\n\
             assocs: [{{event: go, targets: [s1]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = coord_command(dir.path(), &["run", flow, "--run-id", "L"])
        .env("RUST_LOG", "debug")
        .env("EV_STEP", STEP_SECRET)
        .output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert_eq!(said(&logs(dir.path(), flow, "L"), "prime", "local ok"), 1);
    let stored = files_containing(dir.path(), "local.run.db");
    assert!(
        stored.contains("EV_STEP"),
        "the store keeps the variable's name"
    );
    assert!(
        !stored.contains(STEP_SECRET),
        "the SQLite store holds the secret"
    );
    assert!(!stderr.contains(STEP_SECRET), "{stderr}");
    assert!(!files_containing(&dir.path().join("logs"), "L.").contains(STEP_SECRET));
}

/// `eventor-coord run FLOW ARGS` in a fresh directory: its exit code and stderr, and
/// whether it left a store behind, and whether it wrote a log folder.
fn refused(flow_text: &str, args: &[&str]) -> (Option<i32>, String, bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "flow.yaml", flow_text);
    let run = coord_command(
        dir.path(),
        &[&["run", flow.to_str().unwrap()], args].concat(),
    )
    .env_remove("EV_SURELY_UNSET")
    .output()
    .unwrap();
    let stored = dir.path().join("flow.run.db").exists();
    let logged = dir.path().join("logs").exists();
    (run.status.code(), text(&run.stderr), stored, logged)
}

const DATED: &str = "params: {RUN_DATE: ~}\n\
    events: {go: {}}\n\
    steps:\n  s1: {run: 'echo $RUN_DATE'}\n\
    assocs: [{event: go, targets: [s1]}]\n\
    trigger: [{event: go}]\n";

#[test]
fn bad_parameters_and_a_missing_prime_variable_exit_2_before_anything_is_stored() {
    let (code, err, stored, logged) = refused(DATED, &["--param", "RUN_DAT=2026-12-05"]);
    assert_eq!((code, stored, logged), (Some(2), false, false), "{err}");
    assert!(
        err.contains("unknown parameter `RUN_DAT` (the flow's parameters: RUN_DATE); did you mean `RUN_DATE`?"),
        "{err}"
    );
    let (code, err, stored, logged) = refused(DATED, &[]);
    assert_eq!((code, stored, logged), (Some(2), false, false), "{err}");
    assert!(
        err.contains("parameter `RUN_DATE` is required and has no value"),
        "{err}"
    );
    let undeclared = DATED.replace("params: {RUN_DATE: ~}\n", "");
    let (code, err, _, _) = refused(&undeclared, &["--param", "RUN_DATE=x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("(the flow's parameters: none)"), "{err}");
    let bad_name = DATED.replace("RUN_DATE: ~", "RUN-DATE: ~");
    let (code, err, _, _) = refused(&bad_name, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("flow.yaml:1:10: params.RUN-DATE: invalid parameter name"),
        "{err}"
    );
    let secret = DATED.replace(
        "'echo $RUN_DATE'}",
        "'true', env_from_prime: [EV_SURELY_UNSET]}",
    );
    let (code, err, stored, _) = refused(&secret, &["--param", "RUN_DATE=x"]);
    assert_eq!((code, stored), (Some(2), false), "{err}");
    assert!(
        err.contains(
            "`EV_SURELY_UNSET` (env_from_prime of step s1) is not set in the prime's environment"
        ),
        "{err}"
    );
}

#[test]
fn a_continue_keeps_the_stored_values_and_records_an_override_on_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "later.yaml",
        "params: {RUN_DATE: ~}\n\
         events: {go: {}, a_done: {}}\n\
         steps:\n  \
           a: {run: 'echo a $RUN_DATE', triggers: {success: [a_done]}}\n  \
           b: {run: 'echo b $RUN_DATE'}\n\
         assocs: [{event: go, targets: [a]}, {event: a_done, targets: [b], delay: 1s}]\n\
         trigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = ["run", flow, "--run-id", "C", "--max-loops", "1"];
    let first = coord(
        dir.path(),
        &[&run[..], &["--param", "RUN_DATE=2026-12-04"]].concat(),
    );
    assert_eq!(
        first.status.code(),
        Some(3),
        "b waits for its delay: {}",
        text(&first.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let carry_on = [
        &run[..],
        &["--mode", "continue", "--param", "RUN_DATE=2026-12-05"],
    ]
    .concat();
    let second = coord(dir.path(), &carry_on);
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("parameter RUN_DATE: 2026-12-05 (was 2026-12-04)")
            .count(),
        1,
        "{err}"
    );
    let log = logs(dir.path(), flow, "C");
    assert_eq!(said(&log, "prime", "a 2026-12-04"), 1, "{log}");
    assert_eq!(
        said(&log, "prime", "b 2026-12-05"),
        1,
        "the continue ran b with the override:\n{log}"
    );
    let status = coord(dir.path(), &["status", flow, "--run-id", "C", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (json["recovery"].as_i64(), &json["params"]["RUN_DATE"]),
        (Some(0), &serde_json::json!("2026-12-05")),
        "{json}"
    );
}
