//! The agent: runs a cluster host's share of a run for the prime coordinator.
//!
//! The prime starts `eventor-agent` on each host through an SSH exec channel and the two
//! speak the [`eventor_protocol`] over the channel's stdin and stdout. [`serve`] is the
//! agent's whole life on one such channel; the binary only adds flags, logging and signals.
//! Nothing else may write to the channel: a program that embeds `serve` on its own stdout
//! must keep its closures from printing there.
//!
//! # What it does
//!
//! The agent speaks first: a [`Hello`](eventor_protocol::Hello) with its protocol version,
//! build, host name and capabilities ([`CAPABILITIES`], plus [`RECORDS_RESULTS`] when it was
//! given a store of its own). The prime answers with an `Accept` (run id, the host's name in
//! the cluster, the heartbeat interval, limits) or a refusal, which ends `serve` with an
//! error.
//!
//! **The store comes over the channel.** A prime of protocol 1.1 sends `AcceptWithStore`
//! instead: the same welcome plus the store's location and password
//! ([`StoreAccess`](eventor_protocol::StoreAccess)), so credentials never appear on the
//! agent's command line, in its environment or in a log; a prime of 1.4 sends
//! `AcceptWithStoreTls`, the same plus the store's TLS
//! ([`StoreTls`](eventor_protocol::StoreTls): the mode, the name the certificate must
//! match, the CA and client certificate and key as their contents, never files on the
//! host), which wins over the host's own `PGSSL*` and `~/.postgresql`. The agent then opens that store
//! (it replaces one given in [`AgentOptions::store`]) *before it reads any work*: on success
//! it sends `StoreReady`; on failure it sends an `Error` without a key saying why and ends
//! `serve` with [`AgentError::Store`], so an agent that cannot record results says so and
//! takes no work. An agent given a store in its options opens that one before the hello,
//! for the same reason. Then:
//!
//! - `Dispatch` starts a task at once if fewer than the limit are running, else queues it.
//!   The limit is the smaller of [`AgentOptions::max_concurrent`] and the prime's
//!   `max_concurrent_tasks` (0 means the prime sets none). A command runs through the
//!   shared runner ([`crate::command`]): its own process group, the task's variables
//!   (`EVENTOR_RUN_ID`, `…_STEP_NAME`, `…_SEQUENCE`, `…_RECOVERY`, `…_ATTEMPT`,
//!   `…_LOGGER_NAME`, then
//!   the dispatch's `env`, which wins), its `cwd` and `timeout_ms`. A `Closure { step }` runs the
//!   program's closure of that name from [`AgentOptions::closures`] (blocking ones on the
//!   blocking pool, with [`current_task`](crate::task::current_task) set); an unknown name is a
//!   failed task, not a crash.
//! - `Cancel` stops a running task (the command's whole group: SIGTERM, the grace period,
//!   SIGKILL) or answers a queued one as cancelled. A blocking closure cannot be interrupted:
//!   it runs to its end and reports what it returned.
//! - `Shutdown` drains: no new work, queued tasks are answered as cancelled, running tasks
//!   finish, then `serve` returns. A prime that wants tasks stopped says so per task with
//!   `Cancel` (it knows their keys), so no text in `reason` is ever parsed for meaning.
//! - `Heartbeat` only proves the prime alive, as every frame does.
//! - `Lease` (1.3) sets how long running tasks go on once the prime is lost (see below).
//!
//! # Ordering
//!
//! One writer owns the channel; everything else hands it items over one bounded channel, so
//! frames leave in the order they were handed over. A command's `TaskStarted` is handed
//! over (awaited) before its output is read at all, so it precedes every `Output` of the
//! task. `TaskFinished` is handed over only after the runner has returned, when the output
//! readers are done, and after the record of lines dropped at the very end, so it is the
//! last message about its key. Messages of different tasks interleave freely. Each read of
//! a command's output is one `Output` batch (protocol 1.2: the task's key, stream and read
//! time once, the lines joined by `\n`); a prime older than 1.2 gets each line as one `Log`
//! record instead, stream `Stdout` at level `Info` or `Stderr` at `Warn` (the protocol's
//! convention), with the cluster's host name, the task's key and the time the agent read
//! it.
//!
//! # Durable results
//!
//! **The agent is the writer of a remote task's final status; the prime records triggers
//! and starts.** With a store ([`AgentOptions::store`]), each task's end is committed
//! before it is reported: one fenced `active → success|failure` transition of the task's
//! attempt (cancelled and timed-out tasks are failures whose error says why, as in a local
//! run; the result is a closure's JSON or a command's exit code, as a local run stores it).
//! A result thus survives the prime dying the moment after. A fenced commit means another
//! writer decided first (a recovery, say): the store keeps that decision, the agent logs it
//! and reports its own end anyway. Any other store failure is sent as an `Error` for the key
//! just before `TaskFinished`, so the prime knows to record the end itself. Every
//! `TaskFinished` the agent sends is recorded first, including answers to tasks that never
//! ran (cancelled while queued, refused while shutting down).
//!
//! # Losing the prime
//!
//! The prime is gone when its stream ends (cleanly or inside a frame), reading or writing
//! fails, or a write stalls or no frame at all arrives for three heartbeat intervals, and
//! for at least [`AgentOptions::outwait`] (the prime's longest wait) and one more interval. The agent then takes no new work, leaves queued tasks `active` in
//! the store (they never ran: a recovery reruns them), lets the running tasks finish,
//! records them, and returns [`AgentEnd::PrimeLost`]: a clean end, since nothing was lost.
//! With a `Lease`, tasks still running when it runs out (counted from the last frame read)
//! are stopped instead (their groups: SIGTERM, then SIGKILL within the protocol's
//! `LEASE_STOP_GRACE`) and recorded failed, so a prime that waited out the lease may start
//! another attempt.
//!
//! # Re-adoption (1.4)
//!
//! A prime of 1.4 or later makes the agent findable: it listens on a Unix socket named for
//! the run and the host ([`adopt::socket_name`]) in a private directory
//! ([`AgentOptions::den`], 0700, ours, else refused with a warning). Once the prime is lost,
//! the writer stops writing to it and holds every frame for the next one (in memory, then a
//! spill file, up to 64 MiB; past that output lines are dropped and counted, starts and ends
//! never), and an agent that was running tasks then stays for its lease and the stop's
//! grace even after they ended, so a prime that comes within that time gets everything. A
//! prime reaching the host again starts an agent with that socket's name
//! ([`adopt::RESUME_VAR`]); that agent finds the survivor and only carries bytes
//! ([`adopt::bridge`]). The survivor shakes hands as itself (its hello has the `adopted`
//! capability; a prime of another run is turned away; the store it has stays), sends
//! `Adopted` with the attempts whose ends no prime has read, then what it held, in order,
//! and serves on: the lease wait is over, the new prime's cancels and dispatches apply. A
//! prime that comes while the old one still seems alive takes over (the old session is
//! dropped as `Replaced`): only a login as this user reaches the socket, and only a prime
//! that gave the host up starts a bridge.
//!
//! Bytes that are not frames (or another major version) after the handshake are handled
//! the same way, then returned as [`AgentError::Stream`]. A frame that fails to decode but
//! keeps the stream in step is answered with an `Error` and skipped.
//!
//! The agent's own heartbeat follows the protocol's rule: the writer sends one whenever it
//! has written nothing for an interval. An interval of 0 turns off both the heartbeat and
//! the watch for silence (and for stalled writes).
//!
//! The caller's `shutdown` token (the binary cancels it on SIGTERM, SIGINT and SIGHUP) stops
//! everything now: running tasks are cancelled, recorded and reported, then `serve` returns.
//! Either way **`serve` returns only when every task it started has ended**, and a stopped
//! command takes its whole process group with it, so no child of the agent is left running.
//!
//! # Backpressure and memory
//!
//! The outbound channel holds at most [`OUTBOUND_CAPACITY`] items, and an item of output
//! is one read from the command's pipe: at most [`READ_BYTES`](crate::lines::READ_BYTES) of
//! lines, each at most [`MAX_LINE_BYTES`] (longer lines are cut), so a flood costs bounded
//! memory. Output waits for room, so a slow prime slows the command down through its pipe.
//! A prime of 1.2 or later gets each batch as one `Output` message; an older one gets a
//! `Log` per line. Output that cannot be queued at all (the writer is gone) is dropped and
//! counted; the count goes out as one `Stream::Agent` record just before the next batch of
//! that task that gets through, or before its `TaskFinished`. After the prime is lost the
//! writer discards, so nothing ever waits on a dead channel.
//!
//! # What it leaves out
//!
//! - A remote closure cannot fire events (`TaskContext::trigger_event` says the run is
//!   over); a remote command can, through the agent's trigger socket (`triggers.rs`).
//! - Output is not shared fairly between tasks: one flooding task can make another's lines
//!   drop too.
//! - The flow's name is not on the wire, so `EVENTOR_LOGGER_NAME` and a closure's
//!   `logger_name` default to the run id unless the prime sends the variable.
//! - Background children that a command leaves behind when it exits by itself are not
//!   killed (as in a local run); nor can anything be done for the commands of an agent that
//!   is itself killed with SIGKILL.
//! - An agent whose den is unusable (see below) cannot be re-adopted: a lost prime then
//!   ends it once its tasks have, as before 1.4.

pub mod adopt;
mod dispatch;
mod durable;
mod error;
mod held;
mod output;
mod run;
mod triggers;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eventor_protocol::{
    Accept, FrameLimit, FrameReader, FrameWriter, Hello, StoreAccess, StoreTls, ToCoordinator,
    Welcome,
};
use eventor_store::{LocationError, SslMode, Store, StoreLocation, TlsMaterial};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use durable::end_changes;
pub use error::AgentError;

use crate::limit::MaxConcurrent;
use crate::task::StepAction;
use dispatch::{PrimeSession, TaskLoop, SILENT_INTERVALS};
use run::{Tally, TaskEnv, TextCaps};
use writer::{WriteLoss, WriterConfig};

/// What every agent can do, as told in its hello.
pub const CAPABILITIES: &[&str] = &["command", "closure", "cancel", "timeout"];

/// The capability of an agent that records its tasks' final status in the store itself.
pub const RECORDS_RESULTS: &str = "records-results";

/// Items the outbound channel holds before senders wait (or output lines drop).
pub const OUTBOUND_CAPACITY: usize = 512;

pub use crate::command::MAX_LINE_BYTES;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The host name the agent reports in its hello (the prime names the host in the
    /// cluster itself, in its `Accept`).
    pub host_name: String,
    /// Where the agent records each task's final status; `None`: the prime records it.
    pub store: Option<StoreLocation>,
    /// The program's closure steps by name, for `Work::Closure { step }`.
    pub closures: HashMap<String, StepAction>,
    /// Most tasks running at once (the prime's limit applies too); `None`: the prime's.
    pub max_concurrent: MaxConcurrent,
    /// How long a stopped command's group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long to wait for the prime's answer to the hello.
    pub handshake_timeout: Duration,
    /// The least silence (plus one heartbeat interval) before the prime is presumed gone:
    /// by default the longest a prime waits on a silent agent
    /// ([`MAX_LOST_AFTER`](eventor_protocol::MAX_LOST_AFTER)). Of a blip the prime then
    /// decides first, naming it, and a link it kept is never ended by its agent.
    pub outwait: Duration,
    /// The private directory where, once its prime is gone, the agent waits for the next
    /// one (see [`adopt`]); `None`: it cannot be re-adopted.
    pub den: Option<std::path::PathBuf>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            host_name: local_host_name(),
            store: None,
            closures: HashMap::new(),
            max_concurrent: MaxConcurrent::UNLIMITED,
            kill_grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(30),
            outwait: eventor_protocol::MAX_LOST_AFTER,
            den: adopt::default_den(),
        }
    }
}

/// This machine's host name, or `"unknown"`.
pub fn local_host_name() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// How a served channel ended, when it ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEnd {
    /// The prime sent `Shutdown`; running tasks finished.
    Shutdown { reason: String },
    /// The caller's shutdown token fired; running tasks were stopped.
    Stopped,
    /// The prime went away; running tasks finished and were recorded.
    PrimeLost(PrimeLoss),
}

/// How a channel ended, in words (the agent's last log line says it).
impl fmt::Display for AgentEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentEnd::Shutdown { reason } => write!(f, "shut down by the coordinator: {reason}"),
            AgentEnd::Stopped => f.write_str("stopped"),
            AgentEnd::PrimeLost(loss) => write!(f, "lost the coordinator: {loss}"),
        }
    }
}

/// A period that may be none (a heartbeat, a lease), as a log line shows it: `30s` or `none`.
pub(crate) fn describe_period(period: Option<Duration>) -> String {
    period.map_or_else(
        || "none".to_string(),
        |p| humantime::format_duration(p).to_string(),
    )
}

/// How the agent knew the prime was gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimeLoss {
    /// Its stream ended between frames.
    Closed,
    /// Its stream ended inside a frame.
    Torn { message: String },
    /// Reading its stream failed.
    ReadFailed { message: String },
    /// Writing to it failed or stalled.
    WriteFailed { message: String },
    /// No frame arrived for this long.
    Silent { after: Duration },
    /// Its stream went out of step (not frames, another version, an oversized frame).
    Garbled { message: String },
    /// Another coordinator re-adopted the agent.
    Replaced,
}

impl fmt::Display for PrimeLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrimeLoss::Closed => f.write_str("the coordinator closed the channel"),
            PrimeLoss::Torn { message } => write!(f, "the channel broke: {message}"),
            PrimeLoss::ReadFailed { message } => write!(f, "reading failed: {message}"),
            PrimeLoss::WriteFailed { message } => write!(f, "writing failed: {message}"),
            PrimeLoss::Silent { after } => write!(
                f,
                "no word from the coordinator for {}",
                humantime::format_duration(*after)
            ),
            PrimeLoss::Garbled { message } => write!(f, "unreadable stream: {message}"),
            PrimeLoss::Replaced => f.write_str("another coordinator re-adopted the agent"),
        }
    }
}

/// What an agent did, returned when it ends cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSummary {
    /// The run the prime accepted the agent for.
    pub run_id: String,
    /// The host's name in the cluster.
    pub host: String,
    pub end: AgentEnd,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    /// Ends the store did not take (fenced or failed); the prime was told of each.
    pub unrecorded: u64,
    /// Output lines dropped because the channel to the prime was full.
    pub output_lines_dropped: u64,
}

/// Serves one prime over `reader`/`writer` until it says `Shutdown`, goes away, or
/// `shutdown` fires. See the module documentation for the whole story.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    options: AgentOptions,
    shutdown: CancellationToken,
) -> Result<AgentSummary, AgentError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Before the hello: an agent that cannot record results must not take work.
    let own = open_store(options.store.as_ref()).await?;
    let mut reader = FrameReader::new(Box::new(reader) as crate::stdio::Reader);
    let mut writer = FrameWriter::new(Box::new(writer) as crate::stdio::Writer);
    let welcome = handshake(&mut reader, &mut writer, &options, &shutdown).await?;
    let store = match &welcome.store {
        Some(access) => Some(open_granted(access, welcome.tls.as_ref(), &mut writer).await?),
        None => own,
    };
    let accept = welcome.accept;
    let prime = reader.peer_version();
    let plan = Plan::new(&accept, &options);
    // No `host`: the prime that reads this line adds it.
    tracing::info!(
        run_id = %accept.run_id,
        limit = plan.limit,
        heartbeat = %describe_period(plan.heartbeat),
        "accepted by the coordinator"
    );

    let den = match (prime.filter(|v| v.has_adoption()), &options.den) {
        (Some(_), Some(dir)) => listen_for_adoption(dir, &accept).await,
        _ => None,
    };
    let adoption_hello = hello_of(&options, store.is_some(), true);
    let (out, items) = mpsc::channel(OUTBOUND_CAPACITY);
    let triggers = Arc::new(triggers::PrimeTriggers::new(out.clone()));
    let trigger_socket = match (prime.filter(|v| v.has_adoption()), &options.den) {
        (Some(_), Some(dir)) => open_trigger_socket(dir, &accept, triggers.clone()).await,
        _ => None,
    };
    let tally = Arc::new(Tally::default());
    let loss = Arc::new(WriteLoss::default());
    let env = Arc::new(TaskEnv {
        out,
        store: store.map(|store| durable::Recorder::start(store, &accept.host)),
        closures: options.closures,
        kill_grace: options.kill_grace,
        caps: plan.caps,
        tally: tally.clone(),
        trigger_socket: trigger_socket
            .as_ref()
            .map(|socket| Arc::from(socket.path().to_string_lossy().as_ref())),
    });
    let silence = plan
        .heartbeat
        .map(|beat| (beat * SILENT_INTERVALS).max(options.outwait + beat));
    let writer_config = WriterConfig {
        host: accept.host.clone(),
        heartbeat: plan.heartbeat,
        stall_after: silence,
        output_batches: prime.is_some_and(|v| v.has_output_batches()),
        spill: den.as_ref().map(adopt::Den::spill_path),
    };
    let task_loop = TaskLoop::new(PrimeSession {
        reader,
        env,
        run_id: accept.run_id.clone(),
        limit: plan.limit,
        silence,
        write_loss: loss.clone(),
        shutdown,
        den,
        hello: adoption_hello,
        handshake_timeout: options.handshake_timeout,
        triggers,
        trigger_socket,
    });
    // The writer ends when the task loop and every task have dropped their senders.
    let (ended, report) = tokio::join!(
        task_loop.run(),
        writer::run(writer, items, writer_config, loss)
    );
    tracing::debug!(
        frames = report.frames,
        discarded = report.discarded,
        "writer done"
    );
    let end = ended.map_err(AgentError::Stream)?;
    Ok(summary(accept, end, &tally))
}

async fn open_store(location: Option<&StoreLocation>) -> Result<Option<Store>, AgentError> {
    let Some(location) = location else {
        return Ok(None);
    };
    match Store::open(location).await {
        Ok(store) => Ok(Some(store)),
        Err(source) => Err(AgentError::Store {
            location: location.to_string(),
            source,
        }),
    }
}

/// Opens the store the prime sent and tells it the outcome (`StoreReady`, or an `Error`
/// without a key, after which the agent ends).
async fn open_granted<W: AsyncWrite + Unpin>(
    access: &StoreAccess,
    tls: Option<&StoreTls>,
    writer: &mut FrameWriter<W>,
) -> Result<Store, AgentError> {
    let location = granted_location(access, tls)?;
    // The prime prepared this store's schema before it started the agents.
    let opened = Store::open_prepared(&location)
        .await
        .map_err(|source| AgentError::Store {
            location: location.to_string(),
            source,
        });
    let answer = match &opened {
        Ok(_) => ToCoordinator::StoreReady,
        Err(e) => ToCoordinator::Error {
            key: None,
            message: crate::util::error_chain(e),
        },
    };
    writer
        .write_frame(&answer)
        .await
        .map_err(AgentError::Welcome)?;
    let store = opened?;
    tracing::info!(store = %location, "recording results in the coordinator's store");
    Ok(store)
}

/// The sent location with its password and TLS, which win over the host's own sources.
fn granted_location(
    access: &StoreAccess,
    tls: Option<&StoreTls>,
) -> Result<StoreLocation, AgentError> {
    let location = StoreLocation::parse(&access.location).map_err(AgentError::StoreLocation)?;
    let StoreLocation::Postgres(mut pg) = location else {
        return Ok(location);
    };
    if let Some(password) = &access.password {
        pg = pg.with_password(password);
    }
    if let Some(tls) = tls {
        pg = pg.with_tls(tls_material(tls).map_err(AgentError::StoreLocation)?);
    }
    Ok(StoreLocation::Postgres(pg))
}

/// The TLS as the prime resolved it, in the store's terms.
pub fn tls_material(tls: &StoreTls) -> Result<TlsMaterial, LocationError> {
    let mode = SslMode::parse(&tls.mode).ok_or_else(|| LocationError::SslMode(tls.mode.clone()))?;
    Ok(TlsMaterial {
        mode,
        server_name: tls.server_name.clone(),
        root_cert: tls.root_cert.clone(),
        client_cert: tls.client_cert.clone(),
        client_key: tls.client_key.clone(),
    })
}

async fn handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    options: &AgentOptions,
    shutdown: &CancellationToken,
) -> Result<Welcome, AgentError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = hello_of(options, options.store.is_some(), false);
    let timeout = options.handshake_timeout;
    tokio::select! {
        accepted = eventor_protocol::hello(reader, writer, &hello, timeout) => {
            accepted.map_err(AgentError::Handshake)
        }
        _ = shutdown.cancelled() => Err(AgentError::StoppedBeforeAccept),
    }
}

/// The agent's hello: what it can do, whether it records ends, whether it is re-adopted.
fn hello_of(options: &AgentOptions, records: bool, adopted: bool) -> Hello {
    let mut capabilities: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
    if records {
        capabilities.push(RECORDS_RESULTS.to_string());
    }
    if adopted {
        capabilities.push(eventor_protocol::ADOPTED.to_string());
    }
    Hello::new(env!("CARGO_PKG_VERSION"), &options.host_name, capabilities)
}

/// The den where the next prime finds this agent, if it can have one here (a warning says
/// why not: the agent then cannot be re-adopted, and its tasks end with their lease).
async fn listen_for_adoption(dir: &std::path::Path, accept: &Accept) -> Option<adopt::Den> {
    let name = adopt::socket_name(&accept.run_id, &accept.host);
    match adopt::Den::listen(dir, &name).await {
        Ok(den) => Some(den),
        Err(error) => {
            tracing::warn!(error = %error, "this agent cannot be re-adopted by another coordinator");
            None
        }
    }
}

/// The agent's trigger socket, where its tasks' commands fire events in their run (a
/// warning says why there is none).
async fn open_trigger_socket(
    dir: &std::path::Path,
    accept: &Accept,
    triggers: Arc<triggers::PrimeTriggers>,
) -> Option<crate::trigger_socket::TriggerSocket> {
    let name = format!("t-{}", adopt::socket_name(&accept.run_id, &accept.host));
    let opened = match adopt::private_dir(dir) {
        Ok(()) => crate::trigger_socket::TriggerSocket::open(dir, &name, triggers).await,
        Err(error) => Err(error),
    };
    match opened {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::warn!(error = %error, "no trigger socket: commands here cannot fire their run's events");
            None
        }
    }
}

/// What the agent derives from the prime's `Accept` and its own options.
struct Plan {
    limit: usize,
    heartbeat: Option<Duration>,
    caps: TextCaps,
}

impl Plan {
    fn new(accept: &Accept, options: &AgentOptions) -> Plan {
        let theirs = MaxConcurrent::from_wire(accept.limits.max_concurrent_tasks);
        let limit = options
            .max_concurrent
            .min(theirs)
            .get()
            .unwrap_or(usize::MAX);
        // A quarter of the smaller frame cap per text leaves room for the rest of a message.
        let frame = accept
            .limits
            .max_frame_bytes
            .min(FrameLimit::DEFAULT.bytes()) as usize;
        let field = (frame / 4).max(256);
        Plan {
            limit,
            heartbeat: match accept.heartbeat_interval_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            caps: TextCaps {
                line: MAX_LINE_BYTES.min(field),
                field,
            },
        }
    }
}

fn summary(accept: Accept, end: AgentEnd, tally: &Tally) -> AgentSummary {
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    AgentSummary {
        run_id: accept.run_id,
        host: accept.host,
        end,
        succeeded: read(&tally.succeeded),
        failed: read(&tally.failed),
        cancelled: read(&tally.cancelled),
        timed_out: read(&tally.timed_out),
        unrecorded: read(&tally.unrecorded),
        output_lines_dropped: read(&tally.lines_dropped),
    }
}
