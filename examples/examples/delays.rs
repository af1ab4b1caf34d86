//! Delays + continue: s1 →(1 s)→ s2 →(1 s)→ s3, driven by repeated one-loop invocations as
//! cron would: each runs only what has become due, and the last one reports success.

use std::time::Duration;

use eventor::{Eventor, RunMode, RunOutcome, Step};
use eventor_examples::{init_logging, options};

fn build(mode: RunMode) -> anyhow::Result<Eventor> {
    let mut ev = Eventor::new(eventor::EventorOptions {
        run_mode: mode,
        ..options("delays")
    })?;
    for event in ["start", "s1_done", "s2_done"] {
        ev.add_event(event, None)?;
    }
    ev.add_step(Step::new("s1").command("echo s1").on_success("s1_done"))?;
    ev.add_step(Step::new("s2").command("echo s2").on_success("s2_done"))?;
    ev.add_step(Step::new("s3").command("echo s3"))?;
    ev.add_assoc("start", ["s1"], None)?;
    ev.add_assoc("s1_done", ["s2"], Some(Duration::from_secs(1)))?;
    ev.add_assoc("s2_done", ["s3"], Some(Duration::from_secs(1)))?;
    ev.trigger_event("start", "1")?;
    Ok(ev)
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut mode = RunMode::Restart;
    for invocation in 1..=20 {
        let mut ev = build(mode)?;
        let outcome = ev.run(1)?;
        ev.close();
        println!("invocation {invocation}: {outcome}");
        match outcome {
            RunOutcome::Success => return Ok(()),
            RunOutcome::Incomplete { .. } => std::thread::sleep(Duration::from_millis(400)),
            RunOutcome::Failure { .. } | RunOutcome::Interrupted { .. } => {
                anyhow::bail!("the flow did not finish: {outcome}")
            }
        }
        mode = RunMode::Continue;
    }
    anyhow::bail!("still incomplete after 20 invocations")
}
