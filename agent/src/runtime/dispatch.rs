//! The agent's main loop: reads the prime's frames, admits tasks up to the limit (the rest
//! wait in a queue), stops them on request, watches the prime's liveness, and drains when
//! the prime says `Shutdown`, goes away, or the caller stops the agent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use eventor_protocol::{
    Dispatch, FrameReader, FrameWriter, Hello, ProtocolError, TaskKey, ToAgent, ToCoordinator,
    LEASE_STOP_GRACE,
};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::adopt::Den;
use super::run::{self, Stop, StopReason, TaskEnv, TaskEvent};
use super::triggers::PrimeTriggers;
use super::writer::{Outgoing, Resumed, WriteLoss};
use super::{AgentEnd, PrimeLoss};
use crate::util::{error_chain, sleep_until};
use eventor_protocol::TaskEnd;

/// Dispatches beyond this many waiting ones are answered at once instead of queued: the
/// prime should not send more than the limit it was given, and a runaway one must not make
/// the agent hoard them.
const MAX_QUEUED: usize = 10_000;

/// Room for task ends not yet taken in by the loop.
const EVENT_CAPACITY: usize = 64;

/// A silent prime is presumed gone after this many heartbeat intervals.
pub(super) const SILENT_INTERVALS: u32 = 3;

/// The session with the prime the task loop serves: what it is given.
pub(super) struct PrimeSession {
    pub reader: FrameReader<crate::stdio::Reader>,
    pub env: Arc<TaskEnv>,
    pub run_id: String,
    /// Tasks running at once.
    pub limit: usize,
    /// No frame for this long: the prime is gone. `None`: never presumed.
    pub silence: Option<Duration>,
    pub write_loss: Arc<WriteLoss>,
    pub shutdown: CancellationToken,
    /// Where the next prime finds this agent once this one is gone; `None`: it cannot.
    pub den: Option<Den>,
    /// The hello a re-adopting prime gets (with the `adopted` capability).
    pub hello: Hello,
    pub handshake_timeout: Duration,
    /// The events this host's commands fire, on their way to the prime.
    pub triggers: Arc<PrimeTriggers>,
    /// Where those commands reach the agent; served while the loop runs.
    pub trigger_socket: Option<crate::trigger_socket::TriggerSocket>,
}

/// Where the loop is.
enum Phase {
    Serving,
    /// No new work; ends when the running tasks have.
    Draining(AgentEnd),
}

/// What woke the loop: the closed set of inputs it reacts to.
enum Wake {
    Frame(Result<Option<ToAgent>, ProtocolError>),
    TaskRan(TaskKey),
    TaskDone(TaskKey),
    WriteLost,
    Silent,
    /// The lease ran out with no coordinator.
    LeaseOut,
    /// A prime came for the agent (through its bridge).
    Adopt(std::io::Result<UnixStream>),
    /// Nobody came for what the agent held: it may end.
    LingerOut,
    Stop,
}

/// The agent's main loop over one session with its prime: the running and queued tasks.
pub(super) struct TaskLoop {
    session: PrimeSession,
    /// Every task started and not yet reported, with its stop handle.
    running: HashMap<TaskKey, Stop>,
    /// The tasks whose work is still running: what the limit counts. A task whose command
    /// has exited is no longer busy while its end is recorded.
    busy: HashSet<TaskKey>,
    queue: VecDeque<Dispatch>,
    tracker: TaskTracker,
    events_tx: mpsc::Sender<TaskEvent>,
    events_rx: mpsc::Receiver<TaskEvent>,
    phase: Phase,
    reading: bool,
    last_frame: Instant,
    /// How long tasks run on without a coordinator (`ToAgent::Lease`); `None`: to their end.
    lease: Option<Duration>,
    /// When the lease runs out: set when the prime is lost, cleared once acted on.
    lease_end: Option<Instant>,
    /// Until when an agent without a prime waits to hand what it holds to the next one.
    linger_until: Option<Instant>,
    write_lost: bool,
    stopped: bool,
    broken: Option<ProtocolError>,
}

impl TaskLoop {
    pub(super) fn new(session: PrimeSession) -> TaskLoop {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        TaskLoop {
            session,
            running: HashMap::new(),
            busy: HashSet::new(),
            queue: VecDeque::new(),
            tracker: TaskTracker::new(),
            events_tx,
            events_rx,
            phase: Phase::Serving,
            reading: true,
            last_frame: Instant::now(),
            lease: None,
            lease_end: None,
            linger_until: None,
            write_lost: false,
            stopped: false,
            broken: None,
        }
    }

    /// Serves until drained; every task it started has ended when this returns. A broken
    /// stream is returned as the error, after the drain.
    pub(super) async fn run(mut self) -> Result<AgentEnd, ProtocolError> {
        while !self.drained() {
            let wake = self.next_wake().await;
            self.handle(wake).await;
        }
        // No command asks any more, and none waits for an answer that cannot come.
        self.session.trigger_socket = None;
        self.session.triggers.prime_lost();
        self.tracker.close();
        self.tracker.wait().await;
        match (self.broken, self.phase) {
            (Some(error), _) => Err(error),
            (None, Phase::Draining(end)) => Ok(end),
            // The loop ends only when draining; this arm only satisfies the compiler.
            (None, Phase::Serving) => Ok(AgentEnd::Stopped),
        }
    }

    fn drained(&self) -> bool {
        matches!(self.phase, Phase::Draining(_))
            && self.running.is_empty()
            && self.linger_until.is_none()
    }

    /// Whether a prime may take this agent over now: it can be found, and it was not told
    /// to stop or shut down.
    fn adoptable(&self) -> bool {
        let open = matches!(
            self.phase,
            Phase::Serving | Phase::Draining(AgentEnd::PrimeLost(_))
        );
        self.session.den.is_some() && open && !self.stopped
    }

    async fn next_wake(&mut self) -> Wake {
        let watch_silence = self.reading && matches!(self.phase, Phase::Serving);
        let deadline = self
            .session
            .silence
            .filter(|_| watch_silence)
            .map(|silence| self.last_frame + silence);
        let linger = self.linger_until.filter(|_| self.running.is_empty());
        let adoptable = self.adoptable();
        let den = self.session.den.as_ref();
        tokio::select! {
            biased;
            _ = self.session.shutdown.cancelled(), if !self.stopped => Wake::Stop,
            Some(event) = self.events_rx.recv() => match event {
                TaskEvent::Ran { key } => Wake::TaskRan(key),
                TaskEvent::Finished { key } => Wake::TaskDone(key),
            },
            _ = self.session.write_loss.lost(), if !self.write_lost => Wake::WriteLost,
            frame = self.session.reader.read_frame::<ToAgent>(), if self.reading => Wake::Frame(frame),
            _ = sleep_until(deadline) => Wake::Silent,
            _ = sleep_until(self.lease_end) => Wake::LeaseOut,
            stream = async { den.expect("adoptable").accept().await }, if adoptable => Wake::Adopt(stream),
            _ = sleep_until(linger), if linger.is_some() => Wake::LingerOut,
        }
    }

    async fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Frame(Ok(Some(message))) => {
                self.last_frame = Instant::now();
                self.on_message(message).await;
            }
            Wake::Frame(Ok(None)) => self.on_end_of_stream().await,
            Wake::Frame(Err(error)) => self.on_read_error(error).await,
            Wake::TaskRan(key) => {
                self.busy.remove(&key);
                self.fill();
            }
            Wake::TaskDone(key) => {
                self.busy.remove(&key);
                self.running.remove(&key);
                self.fill();
            }
            Wake::WriteLost => {
                self.write_lost = true;
                let message = self.session.write_loss.reason();
                self.lose_prime(PrimeLoss::WriteFailed { message }).await;
            }
            Wake::Silent => {
                let after = self.session.silence.unwrap_or_default();
                self.lose_prime(PrimeLoss::Silent { after }).await;
            }
            Wake::LeaseOut => self.on_lease_out(),
            Wake::Adopt(Ok(stream)) => self.on_adopt(stream).await,
            Wake::Adopt(Err(error)) => {
                tracing::warn!(error = %error, "accepting a coordinator failed");
            }
            Wake::LingerOut => {
                tracing::warn!("no coordinator came for the tasks' held ends and output");
                self.linger_until = None;
            }
            Wake::Stop => self.on_stop(),
        }
    }

    async fn on_message(&mut self, message: ToAgent) {
        match message {
            ToAgent::Dispatch(dispatch) => self.on_dispatch(dispatch).await,
            ToAgent::Cancel { key } => self.on_cancel(key),
            ToAgent::Shutdown { reason } => self.on_shutdown(reason),
            // Arriving was the point: `last_frame` is already updated.
            ToAgent::Heartbeat(_) => {}
            ToAgent::Lease { lease_ms } => self.lease = Some(Duration::from_millis(lease_ms)),
            ToAgent::TriggerAnswer { id, refused } => self.session.triggers.answer(id, refused),
            ToAgent::StatusAnswer {
                id,
                status,
                refused,
            } => self.session.triggers.answer_status(id, status, refused),
        }
    }

    async fn on_dispatch(&mut self, dispatch: Dispatch) {
        let key = &dispatch.key;
        if key.run_id != self.session.run_id {
            let message = format!(
                "dispatch for run {}, but this agent serves run {}: not run",
                key.run_id, self.session.run_id
            );
            return self.report_error(Some(key.clone()), message).await;
        }
        if self.running.contains_key(key) || self.queue.iter().any(|d| d.key == *key) {
            let message = "a task with this key is already running or waiting: dispatch ignored";
            return self
                .report_error(Some(key.clone()), message.to_string())
                .await;
        }
        if !matches!(self.phase, Phase::Serving) {
            let why = "the agent is shutting down and takes no new work";
            return self.finish_unstarted(dispatch.key, why.to_string());
        }
        if self.busy.len() < self.session.limit {
            return self.start(dispatch);
        }
        if self.queue.len() >= MAX_QUEUED {
            let why = format!("the agent's queue is full ({MAX_QUEUED} tasks waiting)");
            return self.finish_unstarted(dispatch.key, why);
        }
        self.queue.push_back(dispatch);
    }

    fn on_cancel(&mut self, key: TaskKey) {
        if let Some(stop) = self.running.get(&key) {
            stop.stop(StopReason::Cancelled("cancelled by the coordinator".into()));
        } else if let Some(at) = self.queue.iter().position(|d| d.key == key) {
            self.queue.remove(at);
            let why = "cancelled by the coordinator before it started";
            self.finish_unstarted(key, why.to_string());
        } else {
            // The protocol's rule: a cancel of a finished (or unknown) task is ignored.
            tracing::debug!(task = %key, "cancel of a task that is not here");
        }
    }

    /// `Shutdown` drains: running tasks finish (the prime cancels any it wants stopped
    /// first), waiting ones are answered as cancelled. Frames are still read, for cancels.
    fn on_shutdown(&mut self, reason: String) {
        tracing::info!(%reason, running = self.running.len(), "the coordinator asked the agent to shut down");
        if matches!(self.phase, Phase::Serving) {
            self.phase = Phase::Draining(AgentEnd::Shutdown { reason });
            self.cancel_queued("the agent is shutting down");
        }
    }

    /// The caller's stop (a signal to the agent): every task is stopped, not awaited.
    fn on_stop(&mut self) {
        self.stopped = true;
        self.reading = false;
        tracing::info!(
            running = self.running.len(),
            "the agent was stopped: stopping its tasks"
        );
        for stop in self.running.values() {
            stop.stop(StopReason::Cancelled("the agent was stopped".into()));
        }
        self.cancel_queued("the agent was stopped");
        if matches!(self.phase, Phase::Serving) {
            self.phase = Phase::Draining(AgentEnd::Stopped);
        }
    }

    async fn on_end_of_stream(&mut self) {
        self.reading = false;
        // After `Shutdown` the prime closing its end is the expected goodbye.
        self.lose_prime(PrimeLoss::Closed).await;
    }

    async fn on_read_error(&mut self, error: ProtocolError) {
        let text = error_chain(&error);
        match error {
            ProtocolError::TornFrame { .. } => {
                self.reading = false;
                self.lose_prime(PrimeLoss::Torn { message: text }).await;
            }
            ProtocolError::Io(_) => {
                self.reading = false;
                self.lose_prime(PrimeLoss::ReadFailed { message: text })
                    .await;
            }
            // One frame lost, the stream still in step: say so and go on.
            error if !error.is_fatal() => {
                tracing::warn!(error = %text, "ignored a frame from the coordinator");
                self.report_error(None, format!("ignored a frame: {text}"))
                    .await;
            }
            error => {
                tracing::error!(error = %text, "the coordinator's stream is out of step");
                self.report_error(None, format!("the agent cannot read on: {text}"))
                    .await;
                self.reading = false;
                self.lose_prime(PrimeLoss::Garbled { message: text }).await;
                self.broken = Some(error);
            }
        }
    }

    /// The prime is gone: no new work; running tasks run on for the lease (to their end
    /// without one) and record their results. Waiting tasks never ran, so they are left
    /// `active` in the store, which is what a recovery reruns.
    async fn lose_prime(&mut self, why: PrimeLoss) {
        self.reading = false;
        if !matches!(self.phase, Phase::Serving) {
            return;
        }
        // A next prime may come within the lease: nothing more to this one, what comes now is
        // held for the next. (Without a lease nobody will come: the agent writes on, in case
        // the prime only closed its end.)
        if self.session.den.is_some() && self.lease.is_some() {
            let _ = self.session.env.out.send(Outgoing::Hold).await;
        }
        self.session.triggers.prime_lost();
        // Counted from the last frame read, as the prime counts from the last it read.
        self.lease_end = self.lease.map(|lease| self.last_frame + lease);
        // Ends and output of running tasks wait for a prime as long as one may come.
        let holds = self.session.den.is_some() && !self.running.is_empty();
        self.linger_until = self
            .lease_end
            .filter(|_| holds)
            .map(|end| end + LEASE_STOP_GRACE);
        tracing::warn!(
            why = %why,
            running = self.running.len(),
            abandoned = self.queue.len(),
            lease = %super::describe_period(self.lease),
            "the coordinator is gone: the running tasks run on for the lease, then the agent exits"
        );
        for dispatch in self.queue.drain(..) {
            tracing::warn!(task = %dispatch.key, "not started: left active in the store for recovery");
        }
        self.phase = Phase::Draining(AgentEnd::PrimeLost(why));
    }

    /// No coordinator came back within the lease: every running task is stopped (its
    /// group: SIGTERM, then SIGKILL within the protocol's lease grace) and recorded failed,
    /// so a coordinator that waited out the lease may start another attempt.
    fn on_lease_out(&mut self) {
        let Some(lease) = self.lease_end.take().and(self.lease) else {
            return;
        };
        tracing::warn!(
            running = self.running.len(),
            "no coordinator for {}: stopping the running tasks",
            humantime::format_duration(lease)
        );
        for stop in self.running.values() {
            stop.stop(StopReason::LeaseOut(lease));
        }
    }

    /// A prime came through the den: the handshake as the agent it already is (with the
    /// `adopted` capability), then the writer hands it `Adopted` and what was held, and the
    /// loop serves it. A prime of another run, or a failed handshake, is turned away.
    async fn on_adopt(&mut self, stream: UnixStream) {
        let (read, write) = stream.into_split();
        let mut reader = FrameReader::new(Box::new(read) as crate::stdio::Reader);
        let mut writer = FrameWriter::new(Box::new(write) as crate::stdio::Writer);
        let timeout = self.session.handshake_timeout;
        let welcome = match eventor_protocol::hello(
            &mut reader,
            &mut writer,
            &self.session.hello,
            timeout,
        )
        .await
        {
            Ok(welcome) => welcome,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "a coordinator's re-adoption failed");
                return;
            }
        };
        if welcome.accept.run_id != self.session.run_id {
            tracing::warn!(run = %welcome.accept.run_id, "a coordinator of another run came: turned away");
            return;
        }
        // The store is already open: the one this agent records in stays.
        if welcome.store.is_some() {
            if let Err(error) = writer.write_frame(&ToCoordinator::StoreReady).await {
                tracing::warn!(error = %error_chain(&error), "a coordinator's re-adoption failed");
                return;
            }
        }
        if matches!(self.phase, Phase::Serving) {
            self.lose_prime(PrimeLoss::Replaced).await;
        }
        let loss = Arc::new(WriteLoss::default());
        let resumed = Resumed {
            sink: writer,
            loss: loss.clone(),
        };
        if self
            .session
            .env
            .out
            .send(Outgoing::Resume(resumed))
            .await
            .is_err()
        {
            return;
        }
        tracing::info!(running = self.running.len(), "re-adopted by a coordinator");
        self.session.reader = reader;
        self.session.write_loss = loss;
        self.write_lost = false;
        self.reading = true;
        self.last_frame = Instant::now();
        self.lease_end = None;
        self.linger_until = None;
        self.phase = Phase::Serving;
    }

    fn start(&mut self, dispatch: Dispatch) {
        let stop = Stop::default();
        self.running.insert(dispatch.key.clone(), stop.clone());
        self.busy.insert(dispatch.key.clone());
        let run = run::run_task(
            self.session.env.clone(),
            dispatch,
            stop,
            self.events_tx.clone(),
        );
        self.tracker.spawn(run);
    }

    /// Starts waiting tasks while there is room and the agent is serving.
    fn fill(&mut self) {
        while matches!(self.phase, Phase::Serving) && self.busy.len() < self.session.limit {
            let Some(dispatch) = self.queue.pop_front() else {
                return;
            };
            self.start(dispatch);
        }
    }

    fn cancel_queued(&mut self, why: &str) {
        let queued: Vec<Dispatch> = self.queue.drain(..).collect();
        for dispatch in queued {
            self.finish_unstarted(dispatch.key, format!("{why} before the task started"));
        }
    }

    /// Answers a dispatch that will not run: recorded and reported like any other end.
    fn finish_unstarted(&mut self, key: TaskKey, why: String) {
        let env = self.session.env.clone();
        self.tracker.spawn(async move {
            run::finish(&env, &key, TaskEnd::cancelled(why)).await;
        });
    }

    /// (`&mut`: the loop holds a reader that need not be `Sync`, and the future must be
    /// `Send`.)
    async fn report_error(&mut self, key: Option<TaskKey>, message: String) {
        let error = ToCoordinator::Error { key, message };
        let out = self.session.env.out.clone();
        let _ = out.send(Outgoing::Message(error)).await;
    }
}
