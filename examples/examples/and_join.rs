//! AND join: s3 waits for both s1 and s2, which fire their events on `complete`.

use std::time::Duration;

use eventor::{Eventor, Expr, Step};
use eventor_examples::{finish, init_logging, options};

fn main() -> anyhow::Result<()> {
    init_logging();
    let mut ev = Eventor::new(options("and_join"))?;
    ev.add_event("start", None)?;
    ev.add_event("s1_done", None)?;
    ev.add_event("s2_done", None)?;
    ev.add_event(
        "both",
        Some(Expr::and([Expr::event("s1_done"), Expr::event("s2_done")])),
    )?;
    ev.add_step(
        Step::new("s1")
            .async_func(|_| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, String>("slow one")
            })
            .on_complete("s1_done"),
    )?;
    ev.add_step(
        Step::new("s2")
            .command("echo quick one")
            .on_complete("s2_done"),
    )?;
    ev.add_step(Step::new("s3").command("echo s3 runs after both"))?;
    ev.add_assoc("start", ["s1", "s2"], None)?;
    ev.add_assoc("both", ["s3"], None)?;
    ev.trigger_event("start", "1")?;
    anyhow::ensure!(finish(ev)?.is_success(), "and-join flow should succeed");
    Ok(())
}
