//! stop_on_exception: s2 fails with no failure trigger, so no new task starts, the running
//! s1 finishes, s3 never runs, and the run fails (the example exits 0 when that happened).

use eventor::{Eventor, RunOutcome, Step};
use eventor_examples::{finish, init_logging, options};

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut ev = Eventor::new(options("stop_on_exception"))?;
    ev.add_event("start", None)?;
    ev.add_event("s1_done", None)?;
    ev.add_step(Step::new("s1").command("sleep 0.3").on_success("s1_done"))?;
    ev.add_step(Step::new("s2").func(|_| Err::<(), _>("bad input: -1")))?;
    ev.add_step(Step::new("s3").command("echo never printed"))?;
    ev.add_assoc("start", ["s1", "s2"], None)?;
    ev.add_assoc("s1_done", ["s3"], None)?;
    ev.trigger_event("start", "1")?;
    match finish(ev)? {
        RunOutcome::Failure { failed } if failed.len() == 1 && failed[0].step == "s2" => Ok(()),
        other => anyhow::bail!("expected s2 to fail the run, got {other}"),
    }
}
