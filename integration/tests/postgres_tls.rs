//! `eventor-coord` on the test bed's Postgres through its role that may log in only over TLS
//! (`EVENTOR_PG_URL_TLS`, its CA in `EVENTOR_PG_TLS_CA`, a CA that signed nothing in
//! `EVENTOR_PG_TLS_WRONG_CA`): a run with `verify-full`, on the prime and on both test
//! hosts through `store_via: ssh`; plain text and a wrong CA refused with their reasons.
//! Without those variables these tests say they were skipped, unless `EVENTOR_REQUIRE_PG=1`
//! makes that a failure.

use std::path::Path;

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::{coord, testbed, text, write};

const PASSWORD: &str = "ev-tls-pw";

/// The TLS role's URL and the two CA files.
struct Tls {
    url: String,
    ca: String,
    wrong_ca: String,
}

fn tls_bed() -> Option<Tls> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Tls {
            url: var("EVENTOR_PG_URL_TLS")?,
            ca: var("EVENTOR_PG_TLS_CA")?,
            wrong_ca: var("EVENTOR_PG_TLS_WRONG_CA")?,
        })
    })();
    match found {
        Some(tls) => Some(tls),
        None if std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1") => panic!(
            "EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL_TLS, EVENTOR_PG_TLS_CA or \
             EVENTOR_PG_TLS_WRONG_CA is not set (a test bed from before TLS: scripts/testbed.sh pg-tls)"
        ),
        None => {
            eprintln!("skipped: EVENTOR_PG_URL_TLS is not set");
            None
        }
    }
}

impl Tls {
    /// The role's store in a schema of `test`'s own, checked against `ca` as `mode` says.
    fn store(&self, test: &str, mode: &str, ca: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{}?schema=e2e_{test}_{nanos}&sslmode={mode}&sslrootcert={ca}",
            self.url
        )
    }
}

/// One step, `echo`, as a flow file in `dir`.
fn one_step(dir: &Path) -> String {
    let yaml = "name: tls\nevents: {go: {}}\nsteps:\n  s: {run: 'echo over tls'}\n\
                assocs: [{event: go, targets: [s]}]\n";
    write(dir, "tls.yaml", yaml).to_str().unwrap().to_owned()
}

/// Runs the one-step flow on `store`; its exit code and stderr.
fn run_on(dir: &Path, store: &str) -> (Option<i32>, String) {
    let flow = one_step(dir);
    let out = coord(
        dir,
        &[
            "run",
            "--store",
            store,
            &flow,
            "--trigger",
            "go",
            "--run-id",
            "T",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(PASSWORD), "the password is in: {stderr}");
    (out.status.code(), stderr)
}

#[tokio::test]
async fn a_run_with_verify_full_gets_through_a_tls_only_role() {
    let Some(tls) = tls_bed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = tls.store("verify_full", "verify-full", &tls.ca);
    let (code, stderr) = run_on(dir.path(), &store);
    assert_eq!(code, Some(0), "{stderr}");
    let store = Store::open(&StoreLocation::parse(&store).unwrap())
        .await
        .unwrap();
    let run = store.run_history("T").await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Success);
}

#[test]
fn plain_text_is_refused_saying_the_server_requires_tls() {
    let Some(tls) = tls_bed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_on(dir.path(), &tls.store("plain", "disable", &tls.ca));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("the server requires TLS for this user"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_ca_is_refused_naming_the_certificate() {
    let Some(tls) = tls_bed() else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = tls.store("wrong_ca", "verify-full", &tls.wrong_ca);
    let (code, stderr) = run_on(dir.path(), &store);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "the server's certificate is not trusted (not issued by the root certificate \
             given (sslrootcert)): subject CN=eventor testbed postgres, issuer CN=eventor \
             testbed CA"
        ),
        "{stderr}"
    );
}

/// Both test hosts reach the TLS-only role through `store_via: ssh` with `verify-full`:
/// the CA reaches their agents in the session setup (no file of it on the hosts), and the
/// name checked is the store's host as the prime names it, not the tunnel's end.
#[tokio::test]
async fn a_cluster_run_records_on_both_hosts_with_verify_full() {
    let Some(tls) = tls_bed() else { return };
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    assert!(tls.url.contains("@127.0.0.1:"), "{}", tls.url);
    let dir = tempfile::tempdir().unwrap();
    let store = tls.store("tls_cluster", "verify-full", &tls.ca);
    let agent = crate::agent_binary();
    let yaml = format!(
        "store: '{store}'\nssh_config: {}\nhosts:\n  \
         node1: {{agent: {a}, store_via: ssh}}\n  node2: {{agent: {a}, store_via: ssh}}\n",
        bed["EVENTOR_SSH_CONFIG"],
        a = agent.display()
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let flow = write(
        dir.path(),
        "both.yaml",
        "name: both\nevents: {go: {}}\n\
         steps:\n  a: {run: 'true', host: node1}\n  b: {run: 'true', host: node2}\n\
         assocs: [{event: go, targets: [a, b]}]\n",
    );
    let out = coord(
        dir.path(),
        &[
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            flow.to_str().unwrap(),
            "--trigger",
            "go",
            "--run-id",
            "C",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(PASSWORD), "the password is in: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let store = Store::open(&StoreLocation::parse(&store).unwrap())
        .await
        .unwrap();
    let run = store.run_history("C").await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Success);
    let tasks = store.tasks(run.key).await.unwrap();
    let mut ran: Vec<_> = tasks.iter().map(|t| (t.status, t.host.clone())).collect();
    ran.sort_by(|a, b| a.1.cmp(&b.1));
    let on = |host: &str| (TaskStatus::Success, Some(host.to_owned()));
    assert_eq!(ran, [on("node1"), on("node2")]);
}
