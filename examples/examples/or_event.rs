//! OR: `cleanup` runs when either `s1_failed` or `s2_done` fires — whichever comes first.

use eventor::{Eventor, Step};
use eventor_examples::{finish, init_logging, options};

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut ev = Eventor::new(options("or_event"))?;
    for event in ["start", "s1_failed", "s2_done"] {
        ev.add_event(event, None)?;
    }
    ev.add_event_expr("either", "s1_failed | s2_done")?;
    // s1 fails, but its failure trigger handles it: the flow goes on.
    ev.add_step(
        Step::new("s1")
            .command("sh -c 'exit 4'")
            .on_failure("s1_failed"),
    )?;
    ev.add_step(Step::new("s2").command("sleep 0.2").on_success("s2_done"))?;
    ev.add_step(Step::new("cleanup").command("echo cleanup runs once"))?;
    ev.add_assoc("start", ["s1", "s2"], None)?;
    ev.add_assoc("either", ["cleanup"], None)?;
    ev.trigger_event("start", "1")?;
    anyhow::ensure!(finish(ev)?.is_success(), "or flow should succeed");
    Ok(())
}
