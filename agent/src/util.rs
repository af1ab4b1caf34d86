//! Small helpers shared by the agent and the prime: an error's whole chain on one line, and
//! a wait for a deadline that may not exist.

use tokio::time::Instant;

/// An error and its causes on one line, `outer: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sleeps until `deadline`; with none, forever (a `select!` arm that never fires).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
