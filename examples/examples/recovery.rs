//! Recovery: square → square root → divide. The first run gets -4 and fails at the square
//! root; the recovery gets 16 and skips `square` (it succeeded), then runs the rest.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use eventor::{Eventor, RunMode, RunOutcome, Step};
use eventor_examples::{init_logging, options};

fn build(input: Arc<AtomicI64>, mode: RunMode) -> anyhow::Result<Eventor> {
    let mut ev = Eventor::new(eventor::EventorOptions {
        run_mode: mode,
        ..options("recovery")
    })?;
    for event in ["start", "squared", "rooted"] {
        ev.add_event(event, None)?;
    }
    let n = input.clone();
    ev.add_step(
        Step::new("square")
            .func(move |_| {
                let n = n.load(Ordering::SeqCst);
                Ok::<_, String>(n * n)
            })
            .on_success("squared"),
    )?;
    let n = input.clone();
    ev.add_step(
        Step::new("square_root")
            .func(move |_| {
                let n = n.load(Ordering::SeqCst);
                if n < 0 {
                    return Err(format!("no square root of {n}"));
                }
                Ok((n as f64).sqrt())
            })
            .on_success("rooted"),
    )?;
    let n = input;
    ev.add_step(
        Step::new("divide")
            .func(move |_| Ok::<_, String>(100.0 / (n.load(Ordering::SeqCst) as f64).sqrt())),
    )?;
    ev.add_assoc("start", ["square"], None)?;
    ev.add_assoc("squared", ["square_root"], None)?;
    ev.add_assoc("rooted", ["divide"], None)?;
    ev.trigger_event("start", "1")?;
    Ok(ev)
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let input = Arc::new(AtomicI64::new(-4));
    let mut first = build(input.clone(), RunMode::Restart)?;
    let outcome = first.run(-1)?;
    println!("run 1 (input -4): {outcome}");
    anyhow::ensure!(
        matches!(outcome, RunOutcome::Failure { .. }),
        "run 1 should fail"
    );
    first.close();

    input.store(16, Ordering::SeqCst);
    let mut second = build(input, RunMode::Recover)?;
    let outcome = second.run(-1)?;
    println!("recovery (input 16): {outcome}");
    anyhow::ensure!(outcome.is_success(), "the recovery should succeed");
    Ok(())
}
