//! Wake-ups when other processes write to a run: Postgres LISTEN/NOTIFY behind one type.
//!
//! SQLite has no way to tell one process about another's commits, so its subscription never
//! yields; an engine on SQLite relies on its slow safety re-scan alone (and on SQLite only
//! one coordinator writes a run anyway).

use crate::postgres::Listener;

/// Yields when another store handle (another process, usually) committed writes to the run it
/// was made for. Writes while nobody waits are remembered as one wake-up; a wake-up may also
/// come without a write (after the store reconnected), so the woken side re-reads the store.
pub struct Subscription {
    listener: Option<Listener>,
}

impl Subscription {
    /// A subscription that never yields (SQLite).
    pub(crate) fn never() -> Subscription {
        Subscription { listener: None }
    }

    pub(crate) fn postgres(listener: Listener) -> Subscription {
        Subscription {
            listener: Some(listener),
        }
    }

    /// Waits for the next wake-up. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) {
        match &mut self.listener {
            Some(listener) => listener.next().await,
            None => std::future::pending().await,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = if self.listener.is_some() {
            "postgres"
        } else {
            "never"
        };
        f.debug_tuple("Subscription").field(&backend).finish()
    }
}
