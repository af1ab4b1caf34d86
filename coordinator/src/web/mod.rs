//! `eventor-coord serve`: a read-only web page over a store. The index lists every run of
//! every flow; a run's page shows its flow graph coloured by task states, a lane per host
//! with its tasks on a time line, the failed tasks, and a live tail of the central log.
//! `/metrics` speaks the Prometheus text format. Every asset is embedded in the binary.
//! With `--triggers`, and only then, it also takes events for running runs ([`trigger`]).
//! Only requests that name this server as their `Host` are answered ([`host`]).

mod events;
mod host;
mod metrics;
mod pages;
mod trigger;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use eventor_store::{Store, StoreLocation};
use tokio_util::sync::CancellationToken;

use self::host::AllowedHosts;
use crate::report::{open_store, ReportError};

/// Where `serve` reads and listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub store: StoreLocation,
    pub listen: SocketAddr,
    /// The central logs (and the graphs `run` saved beside them).
    pub logdir: PathBuf,
    /// Names besides IP addresses and `localhost` that requests may give as their `Host`
    /// (`--allow-host`); any other is refused, against DNS rebinding.
    pub allow_hosts: Vec<String>,
    /// `--triggers`: the file of the bearer token that `POST /api/runs/{id}/trigger` needs;
    /// `None`: the server is read-only.
    pub triggers: Option<PathBuf>,
    /// Live feeds open at once (`--max-feeds`); one more is refused with 503.
    pub max_feeds: usize,
}

/// Why the page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Store(#[from] ReportError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the web server stopped")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Token(#[from] trigger::TokenError),
}

impl WebError {
    /// A store that is not there or an address that cannot be had: the user's to fix.
    pub fn is_input_error(&self) -> bool {
        match self {
            WebError::Store(e) => e.is_input_error(),
            WebError::Bind { .. } | WebError::Token(_) => true,
            WebError::Serve(_) => false,
        }
    }
}

/// What every handler shares.
pub(crate) struct App {
    pub store: Store,
    pub logdir: PathBuf,
    /// The run list as JSON, kept current by [`events::watch_runs`] while pages follow it.
    pub runs: tokio::sync::watch::Sender<String>,
    /// The token of `--triggers`; `None`: no trigger is taken.
    pub trigger_token: Option<trigger::TriggerToken>,
    /// Room for live feeds open at once (`--max-feeds`); one more is refused.
    pub feeds: Arc<tokio::sync::Semaphore>,
    /// One store listener per run followed, shared by its pages' feeds: a counter of the
    /// run's writes ([`events::run_changes`]).
    pub run_watchers: std::sync::Mutex<
        std::collections::HashMap<eventor_store::RunKey, tokio::sync::watch::Sender<u64>>,
    >,
}

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    allowed: Arc<AllowedHosts>,
}

impl Server {
    /// Opens the store and binds the address.
    pub async fn bind(config: &ServeConfig) -> Result<Server, WebError> {
        let trigger_token = config
            .triggers
            .as_deref()
            .map(trigger::TriggerToken::load)
            .transpose()?;
        let store = open_store(&config.store).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: config.listen,
                source,
            })?;
        let app = Arc::new(App {
            store,
            logdir: config.logdir.clone(),
            runs: tokio::sync::watch::Sender::new(String::new()),
            trigger_token,
            feeds: Arc::new(tokio::sync::Semaphore::new(config.max_feeds.max(1))),
            run_watchers: Default::default(),
        });
        tokio::spawn(events::watch_runs(Arc::downgrade(&app)));
        let allowed = Arc::new(AllowedHosts::new(&config.allow_hosts));
        Ok(Server {
            listener,
            app,
            allowed,
        })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WebError> {
        let router = router(self.app).layer(axum::middleware::from_fn_with_state(
            self.allowed,
            host::check_host,
        ));
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(WebError::Serve)
    }
}

fn router(app: Arc<App>) -> Router {
    let writes = app.trigger_token.is_some();
    let router = Router::new()
        .route("/", get(pages::index))
        .route("/run/{run_id}/{recovery}", get(pages::run_page))
        .route("/assets/{name}", get(pages::asset))
        .route("/api/runs", get(pages::runs_json))
        .route("/api/run/{run_id}/{recovery}", get(pages::run_json))
        .route("/api/runs/events", get(events::runs_events))
        .route(
            "/api/run/{run_id}/{recovery}/events",
            get(events::run_events),
        )
        .route("/api/run/{run_id}/{recovery}/log", get(events::log_events))
        .route("/metrics", get(metrics::metrics));
    let router = match writes {
        true => router.route("/api/runs/{run_id}/trigger", post(trigger::trigger)),
        false => router,
    };
    router.with_state(app)
}
