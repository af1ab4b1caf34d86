//! Resource pools shared by every run on a store (`resources: {lic: {units: 2, shared:
//! true}}`), end to end through two `eventor-coord` processes on the shared Postgres: together
//! they never run more tasks holding the pool than its units (checked from the start and end
//! times the tasks write), a coordinator killed with SIGKILL holds its units only until its
//! run is recovered, and two flows declaring the pool with different units are refused.

use std::path::Path;
use std::time::{Duration, Instant};

use eventor_store::{Store, StoreLocation, TaskStatus};

use crate::cluster_run::schema;
use crate::{coord, finish_coord, spawn_coord, testbed, text, write};

/// A flow named `name` whose step `work` runs `tasks` tasks, each holding one unit of the
/// shared pool `lic` (of `units`) while it runs `body` between its start and end lines.
fn pool_flow(dir: &Path, name: &str, units: u32, tasks: u32, body: &str) -> String {
    let out = dir.display();
    let flow = format!(
        "name: {name}\nevents: {{go: {{}}}}\n\
         resources: {{lic: {{units: {units}, shared: true}}}}\n\
         steps:\n  \
           work: {{run: 'echo \"$(date +%s%N) 1 {name}-$EVENTOR_STEP_SEQUENCE-$EVENTOR_STEP_RECOVERY\" >> {out}/held.txt; {body}; \
                  echo \"$(date +%s%N) -1 {name}-$EVENTOR_STEP_SEQUENCE-$EVENTOR_STEP_RECOVERY\" >> {out}/held.txt', acquires: {{lic: 1}}}}\n\
         assocs: [{{event: go, targets: [work]}}]\n\
         trigger: [{{event: go, range: [1, {tasks}]}}]\n"
    );
    let path = write(dir, &format!("{name}.yaml"), &flow);
    path.to_str().unwrap().to_string()
}

/// The most tasks that held the pool at once, from the `TIME ±1 TASK` lines; a task that
/// started but never ended (its coordinator was killed) counts until `cut_off`.
fn most_at_once(held: &Path, cut_off: Option<i128>) -> (i64, usize) {
    let text = std::fs::read_to_string(held).unwrap_or_default();
    let mut events: Vec<(i128, i64, String)> = text
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let at = parts.next().unwrap().parse().unwrap();
            let delta = parts.next().unwrap().parse().unwrap();
            (at, delta, parts.next().unwrap().to_string())
        })
        .collect();
    let starts = events.iter().filter(|e| e.1 == 1).count();
    if let Some(cut_off) = cut_off {
        let open: Vec<String> = events
            .iter()
            .filter(|e| e.1 == 1 && !events.iter().any(|f| f.1 == -1 && f.2 == e.2))
            .map(|e| e.2.clone())
            .collect();
        events.extend(open.into_iter().map(|task| (cut_off, -1, task)));
    }
    // Ends before starts at the same instant: touching intervals do not overlap.
    events.sort_by_key(|e| (e.0, e.1));
    let (mut now, mut most) = (0, 0);
    for (_, delta, _) in events {
        now += delta;
        most = most.max(now);
    }
    (most, starts)
}

fn now_nanos() -> i128 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since.as_nanos() as i128
}

#[test]
fn two_coordinators_never_exceed_a_shared_pool_together() {
    let Some(bed) = testbed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{}?schema={}", bed["EVENTOR_PG_URL"], schema("pool2"));
    let a = pool_flow(dir.path(), "pa", 2, 6, "sleep 0.3");
    let b = pool_flow(dir.path(), "pb", 2, 6, "sleep 0.3");
    let one = spawn_coord(dir.path(), &["run", &a, "--store", &store, "--run-id", "A"]);
    let two = spawn_coord(dir.path(), &["run", &b, "--store", &store, "--run-id", "B"]);
    let (code, out) = finish_coord(one, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = finish_coord(two, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let (most, starts) = most_at_once(&dir.path().join("held.txt"), None);
    assert_eq!(starts, 12);
    assert!(most <= 2, "{most} tasks held the 2-unit pool at once");
    assert_eq!(most, 2, "the pool's units were used");

    // Another flow declaring the same pool with other units is refused.
    let c = pool_flow(dir.path(), "pc", 3, 1, "true");
    let refused = coord(dir.path(), &["run", &c, "--store", &store]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("shared pool `lic` has 2 units in the store, not 3"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn a_killed_coordinator_holds_its_units_only_until_its_run_is_recovered() {
    let Some(bed) = testbed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?schema={}", bed["EVENTOR_PG_URL"], schema("poolkill"));
    let a = pool_flow(dir.path(), "ka", 2, 3, "sleep 2");
    let b = pool_flow(dir.path(), "kb", 2, 3, "sleep 0.3");
    let mut first = spawn_coord(dir.path(), &["run", &a, "--store", &url, "--run-id", "KA"]);
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    wait_for_active(&store, "KA", 2).await;
    first.kill().unwrap(); // SIGKILL, its two grants still in the store
    first.wait().unwrap();
    let killed_at = now_nanos();

    // The dead coordinator's units stay held: the other run waits for them.
    let second = spawn_coord(dir.path(), &["run", &b, "--store", &url, "--run-id", "KB"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kb = store.run_history("KB").await.unwrap().remove(0).key;
    let tasks = store.tasks(kb).await.unwrap();
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Ready),
        "no units for KB while KA's grants stand: {tasks:?}"
    );
    // Recovering the run gives them back: both runs finish, never over the units.
    let recover = [
        "run", &a, "--store", &url, "--run-id", "KA", "--mode", "recover",
    ];
    let recovered = coord(dir.path(), &recover);
    assert_eq!(
        recovered.status.code(),
        Some(0),
        "{}",
        text(&recovered.stderr)
    );
    let (code, out) = finish_coord(second, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let held = dir.path().join("held.txt");
    let (most, _) = most_at_once(&held, Some(killed_at));
    let lines = std::fs::read_to_string(&held).unwrap();
    assert!(
        most <= 2,
        "{most} tasks held the 2-unit pool at once:\n{lines}"
    );
}

/// Waits until run `run_id` has `n` active tasks.
async fn wait_for_active(store: &Store, run_id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(run) = store.run_history(run_id).await.unwrap().pop() {
            let tasks = store.tasks(run.key).await.unwrap();
            let active = tasks.iter().filter(|t| t.status == TaskStatus::Active);
            if active.count() >= n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never had {n} active tasks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn grant_throughput_of_a_shared_pool_under_contention() {
    let Some(bed) = testbed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{}?schema={}", bed["EVENTOR_PG_URL"], schema("poolrate"));
    let tasks = 100;
    let a = pool_flow(dir.path(), "ta", 2, tasks, "true");
    let b = pool_flow(dir.path(), "tb", 2, tasks, "true");
    let started = Instant::now();
    let one = spawn_coord(
        dir.path(),
        &["run", &a, "--store", &store, "--run-id", "TA"],
    );
    let two = spawn_coord(
        dir.path(),
        &["run", &b, "--store", &store, "--run-id", "TB"],
    );
    let (code, out) = finish_coord(one, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = finish_coord(two, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{out}");
    let elapsed = started.elapsed();
    let (most, starts) = most_at_once(&dir.path().join("held.txt"), None);
    assert_eq!(starts, 2 * tasks as usize);
    assert!(most <= 2, "{most} tasks held the 2-unit pool at once");
    let rate = starts as f64 / elapsed.as_secs_f64();
    eprintln!(
        "MEASURE shared pool of 2 units, 2 coordinators: {starts} tasks in {elapsed:?} = {rate:.1} tasks/s"
    );
}

#[tokio::test]
async fn two_coordinators_on_one_sqlite_file_share_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared.db").display().to_string();
    // Created first: two processes creating one new SQLite file at once may meet a lock
    // that SQLite does not wait for (switching it to WAL).
    drop(
        Store::open(&StoreLocation::parse(&store).unwrap())
            .await
            .unwrap(),
    );
    let a = pool_flow(dir.path(), "sa", 1, 4, "sleep 0.2");
    let b = pool_flow(dir.path(), "sb", 1, 4, "sleep 0.2");
    let one = spawn_coord(
        dir.path(),
        &["run", &a, "--store", &store, "--run-id", "SA"],
    );
    let two = spawn_coord(
        dir.path(),
        &["run", &b, "--store", &store, "--run-id", "SB"],
    );
    let (code, out) = finish_coord(one, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = finish_coord(two, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    let (most, starts) = most_at_once(&dir.path().join("held.txt"), None);
    assert_eq!((most, starts), (1, 8), "one unit: one task at a time");
}
