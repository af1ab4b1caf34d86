//! Sequences: the same flow runs independently per sequence; a step that re-triggers the
//! start event with the next sequence iterates a loop (here five times).

use eventor::{Eventor, Step};
use eventor_examples::{finish, init_logging, options};

const ROUNDS: u32 = 5;

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut ev = Eventor::new(options("sequences"))?;
    ev.add_event("start", None)?;
    ev.add_event("worked", None)?;
    ev.add_step(
        Step::new("work")
            .command("echo working on sequence $EVENTOR_STEP_SEQUENCE")
            .on_success("worked"),
    )?;
    ev.add_step(Step::new("next").func(|task| {
        let sequence: u32 = task
            .sequence
            .parse()
            .map_err(|e| format!("bad sequence: {e}"))?;
        if sequence < ROUNDS {
            task.trigger_event("start", (sequence + 1).to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(sequence)
    }))?;
    ev.add_assoc("start", ["work"], None)?;
    ev.add_assoc("worked", ["next"], None)?;
    ev.trigger_event("start", "1")?;
    anyhow::ensure!(finish(ev)?.is_success(), "sequence loop should succeed");
    Ok(())
}
