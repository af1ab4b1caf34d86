//! Distributed: a closure step pinned to another host runs there, in this same program, which
//! the prime starts on that host as its own agent (the original's distributed mode).
//!
//! Usage: `remote_closure HOSTS.yaml [RUN_ID]` — the hosts file names `node1` and the shared
//! store. Each closure returns where it ran; the results are in the store. A command step
//! pinned to `node1` runs there under the same program, which passes on none of what the
//! prime told it (`EVENTOR_AGENT_MODE` is unset for the command); its output is in the
//! central log, `logs/remote_closure/RUN_ID.log`.

use std::process::Command;

use eventor::cluster::{load_hosts, LinkSettings};
use eventor::{ClusterOptions, Eventor, EventorOptions, Step, StepConfig, StoreLocation};

/// Builds the flow; the prime and its agents build the same one.
fn flow(options: EventorOptions) -> anyhow::Result<Eventor> {
    let mut ev = Eventor::new(options)?;
    ev.add_event("start", None)?.add_event("measured", None)?;
    let pinned = StepConfig {
        hosts: vec!["node1".into()],
        ..StepConfig::default()
    };
    let measure = Step::new("measure")
        .func(|task| {
            let out = Command::new("hostname")
                .arg("-I")
                .output()
                .map_err(|e| e.to_string())?;
            let here = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok::<_, String>(format!("{} ran on {here}", task.step))
        })
        .config(pinned)
        .on_success("measured");
    ev.add_step(measure)?;
    ev.add_step(
        Step::new("inherit")
            .command("echo \"agent mode: ${EVENTOR_AGENT_MODE-unset}\"")
            .config(StepConfig {
                hosts: vec!["node1".into()],
                ..StepConfig::default()
            }),
    )?;
    ev.add_step(
        Step::new("report").func(|task| Ok::<_, String>(format!("{} ran on the prime", task.step))),
    )?;
    ev.add_assoc("start", ["measure", "inherit"], None)?
        .add_assoc("measured", ["report"], None)?;
    ev.trigger_event("start", "1")?;
    Ok(ev)
}

fn main() -> anyhow::Result<()> {
    // First: in agent mode stdout carries the protocol, so nothing may be printed to it.
    if eventor::agent_mode() {
        flow(EventorOptions {
            name: "remote_closure".into(),
            ..EventorOptions::default()
        })?
        .run(-1)?;
        return Ok(());
    }
    eventor_examples::init_logging();
    let args: Vec<String> = std::env::args().collect();
    let Some(hosts_path) = args.get(1) else {
        anyhow::bail!("usage: remote_closure HOSTS.yaml [RUN_ID]");
    };
    let hosts = load_hosts(hosts_path.as_ref())?;
    let store = hosts
        .store
        .as_deref()
        .map(StoreLocation::parse)
        .transpose()?;
    let options = EventorOptions {
        name: "remote_closure".into(),
        store,
        run_id: args.get(2).cloned(),
        logdir: Some("logs".into()),
        cluster: Some(ClusterOptions {
            hosts,
            lost_after: LinkSettings::default().lost_after,
            script: None,
        }),
        ..EventorOptions::default()
    };
    let mut ev = flow(options)?;
    let outcome = ev.run(-1)?;
    ev.close();
    println!("remote_closure: {outcome}");
    anyhow::ensure!(outcome.is_success(), "the distributed flow should succeed");
    Ok(())
}
