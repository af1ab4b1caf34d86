//! Bringing a lost host back: reconnect in the background with backoff, agent started
//! again, until the host answers or the run ends.
//!
//! A lost link is dead for good (its tasks were ended by the loss); what comes back is a
//! new link to the same host, made exactly as the first one was ([`open_links`]: SSH,
//! deploy check, agent start, handshake). Nothing waits for it: while a host is away, a
//! task that may run only there fails at once with the reason (and its retries, if any,
//! come later and may find the host back). One attempt per host at a time; the pause
//! between attempts doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connect::{open_links, ClusterSettings};
use super::link::{HostEvent, HostLink};

/// The pause before the first attempt: a link that flapped is often back by then.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(8);

/// Reconnects lost hosts; each new link is handed to the caller's `on_back`.
pub struct Reconnector {
    /// The run's settings, the same its first links were made with.
    settings: Arc<ClusterSettings>,
    events: mpsc::Sender<HostEvent>,
    /// The token the new links live under (the run's), not cancelled by [`Self::stop`].
    links: CancellationToken,
    /// Ends every attempt under way (a child of `links`, so the run's end ends them too);
    /// replaced after [`Reconnector::cancel_attempts`].
    stop: std::sync::Mutex<CancellationToken>,
    tracker: TaskTracker,
}

impl Reconnector {
    pub fn new(
        settings: Arc<ClusterSettings>,
        events: mpsc::Sender<HostEvent>,
        links: CancellationToken,
    ) -> Reconnector {
        // A host back within its lease may still have the agent that lost us: re-adopt it.
        let settings = Arc::new(ClusterSettings {
            adopt: true,
            ..ClusterSettings::clone(&settings)
        });
        Reconnector {
            settings,
            events,
            stop: std::sync::Mutex::new(links.child_token()),
            links,
            tracker: TaskTracker::new(),
        }
    }

    /// Starts bringing `host` back; `on_back` receives the new link once it is up, and
    /// `on_failed` the host and error of each attempt that failed for another reason than
    /// the network (its agent would not start). The caller makes sure one attempt per host
    /// runs at a time.
    pub fn begin(
        &self,
        host: String,
        on_back: impl FnOnce(HostLink) + Send + 'static,
        on_failed: impl Fn(&str, String) + Send + 'static,
    ) {
        let attempt = Attempt {
            settings: self.settings.clone(),
            events: self.events.clone(),
            links: self.links.clone(),
            stop: self.stop_token(),
        };
        self.tracker.spawn(attempt.run(host, on_back, on_failed));
    }

    fn stop_token(&self) -> CancellationToken {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends the attempts under way; later ones may begin (the prime let go of its hosts
    /// and will bring them back).
    pub fn cancel_attempts(&self) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *stop, self.links.child_token()).cancel();
    }

    /// Ends every attempt under way and waits for them.
    pub async fn stop(&self) {
        self.stop_token().cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// One host's way back.
struct Attempt {
    settings: Arc<ClusterSettings>,
    events: mpsc::Sender<HostEvent>,
    links: CancellationToken,
    stop: CancellationToken,
}

impl Attempt {
    async fn run(
        self,
        host: String,
        on_back: impl FnOnce(HostLink),
        on_failed: impl Fn(&str, String),
    ) {
        let mut pause = FIRST_PAUSE;
        for attempt in 1.. {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return,
            }
            let names = [host.clone()];
            let connect = open_links(&self.settings, &names, self.events.clone(), &self.links);
            let result = tokio::select! {
                mut results = connect => results.pop(),
                _ = self.stop.cancelled() => return,
            };
            match result {
                Some(Ok(link)) => {
                    tracing::info!(host = %host, attempt, "host is back");
                    return on_back(link);
                }
                Some(Err(e)) => {
                    pause = (pause * 2).min(MAX_PAUSE);
                    let error = eventor_agent::util::error_chain(&e);
                    tracing::warn!(host = %host, attempt, next_in = %humantime::format_duration(pause), "host still away: {error}");
                    if !e.is_network() {
                        on_failed(&host, format!("not brought back: {error}"));
                    }
                }
                None => return,
            }
        }
    }
}
