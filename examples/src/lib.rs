//! Helpers shared by the examples in `examples/examples/` (run one with
//! `cargo run -p eventor-examples --example linear`).

use eventor::{Eventor, EventorOptions, RunOutcome};

/// Options for an example: its name, and its store in the system's temp directory so
/// running an example leaves nothing in the working tree.
pub fn options(name: &str) -> EventorOptions {
    let store = std::env::temp_dir().join(format!("eventor-example-{name}.run.db"));
    EventorOptions {
        name: name.to_string(),
        store: Some(eventor::StoreLocation::Sqlite(store)),
        ..EventorOptions::default()
    }
}

/// Logs to stderr at info level (step output included), as `eventor-coord` does.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // A closed stderr (`| head`) must not make logging panic inside a task.
        .log_internal_errors(false)
        .init();
}

/// Runs to the end, closes, prints the outcome and returns it.
pub fn finish(mut eventor: Eventor) -> anyhow::Result<RunOutcome> {
    let outcome = eventor.run(-1)?;
    eventor.close();
    println!("{}: {outcome}", eventor.name());
    Ok(outcome)
}
