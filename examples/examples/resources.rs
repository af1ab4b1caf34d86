//! Resources: each of 4 sequences acquires 1 unit from a pool of 2, so at most two run at
//! once (the example checks it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventor::{Eventor, Step, StepConfig};
use eventor_examples::{finish, init_logging, options};

fn main() -> anyhow::Result<()> {
    init_logging();
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut ev = Eventor::new(options("resources"))?;
    ev.add_resource_pool("slots", 2)?;
    ev.add_event("start", None)?;
    let (r, m) = (running.clone(), most.clone());
    let work = Step::new("work").func(move |task| {
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        r.fetch_sub(1, Ordering::SeqCst);
        Ok::<_, String>(format!("sequence {} done", task.sequence))
    });
    ev.add_step(work.config(StepConfig {
        acquires: vec![("slots".into(), 1)],
        ..StepConfig::default()
    }))?;
    ev.add_assoc("start", ["work"], None)?;
    for seq in 1..=4 {
        ev.trigger_event("start", seq.to_string())?;
    }
    anyhow::ensure!(finish(ev)?.is_success(), "resources flow should succeed");
    println!("at most {} ran at once", most.load(Ordering::SeqCst));
    anyhow::ensure!(
        most.load(Ordering::SeqCst) == 2,
        "the pool of 2 should allow exactly two at once"
    );
    Ok(())
}
