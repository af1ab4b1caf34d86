//! Linear: s1 → s2 → s3, each started by the previous one's success event (sequence 1).

use eventor::{Eventor, Step};
use eventor_examples::{finish, init_logging, options};

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut ev = Eventor::new(options("linear"))?;
    for event in ["start", "s1_done", "s2_done"] {
        ev.add_event(event, None)?;
    }
    ev.add_step(
        Step::new("s1")
            .func(|t| Ok::<_, String>(format!("s1 ran in sequence {}", t.sequence)))
            .on_success("s1_done"),
    )?;
    ev.add_step(
        Step::new("s2")
            .command("echo s2 says hello")
            .on_success("s2_done"),
    )?;
    ev.add_step(Step::new("s3").func(|_| Ok::<_, String>(3)))?;
    ev.add_assoc("start", ["s1"], None)?;
    ev.add_assoc("s1_done", ["s2"], None)?;
    ev.add_assoc("s2_done", ["s3"], None)?;
    ev.trigger_event("start", "1")?;
    anyhow::ensure!(finish(ev)?.is_success(), "linear flow should succeed");
    Ok(())
}
