//! Events a task's command fires in its own run from a cluster host: taken by the agent's
//! trigger socket ([`crate::trigger_socket`]), sent to the prime as
//! `ToCoordinator::Trigger`, answered by its `ToAgent::TriggerAnswer`. A request open when
//! the prime is lost is answered at once ("no coordinator"), so no command waits on a
//! prime that is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use eventor_protocol::ToCoordinator;
use tokio::sync::{mpsc, oneshot};

use super::writer::Outgoing;
use crate::trigger_socket::{Answer, Fire, StatusAnswer};

/// The requests sent to the prime and not answered yet.
#[derive(Debug)]
pub(super) struct PrimeTriggers {
    out: mpsc::Sender<Outgoing>,
    next: AtomicU64,
    open: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    /// Status requests, answered with the run's status or why not.
    asked: Mutex<HashMap<u64, oneshot::Sender<Result<String, String>>>>,
}

const NO_PRIME: &str = "no coordinator: the agent lost its prime";

impl PrimeTriggers {
    pub(super) fn new(out: mpsc::Sender<Outgoing>) -> PrimeTriggers {
        PrimeTriggers {
            out,
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// The prime's answer to request `id`.
    pub(super) fn answer(&self, id: u64, refused: Option<String>) {
        if let Some(waiting) = self.open().remove(&id) {
            let _ = waiting.send(refused);
        }
    }

    /// The prime's answer to status request `id`.
    pub(super) fn answer_status(&self, id: u64, status: Option<String>, refused: Option<String>) {
        if let Some(waiting) = self.asked().remove(&id) {
            let answer = status.ok_or_else(|| refused.unwrap_or_else(|| NO_PRIME.to_string()));
            let _ = waiting.send(answer);
        }
    }

    /// The prime is gone: every open request is refused.
    pub(super) fn prime_lost(&self) {
        for (_, waiting) in self.open().drain() {
            let _ = waiting.send(Some(NO_PRIME.to_string()));
        }
        for (_, waiting) in self.asked().drain() {
            let _ = waiting.send(Err(NO_PRIME.to_string()));
        }
    }

    fn asked(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<String, String>>>> {
        self.asked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Option<String>>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Fire for PrimeTriggers {
    fn status(&self) -> StatusAnswer {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.asked().insert(id, tx);
        let out = self.out.clone();
        Box::pin(async move {
            let ask = Outgoing::Message(ToCoordinator::StatusAsk { id });
            if out.send(ask).await.is_err() {
                return Err(NO_PRIME.to_string());
            }
            rx.await.unwrap_or_else(|_| Err(NO_PRIME.to_string()))
        })
    }

    fn fire(&self, event: String, sequence: String) -> Answer {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.open().insert(id, tx);
        let out = self.out.clone();
        Box::pin(async move {
            let message = ToCoordinator::Trigger {
                id,
                event,
                sequence,
            };
            if out.send(Outgoing::Message(message)).await.is_err() {
                return Err(NO_PRIME.to_string());
            }
            match rx.await {
                Ok(None) => Ok(()),
                Ok(Some(why)) => Err(why),
                Err(_) => Err(NO_PRIME.to_string()),
            }
        })
    }
}
