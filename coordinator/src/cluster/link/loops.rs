//! The link's three tasks once the handshake is done: the reader (the agent's frames as
//! [`HostEvent`]s, a silence longer than `lost_after` as a loss), the writer (queued
//! messages out in batches, a heartbeat when quiet) and the stderr forwarder (the agent's
//! stderr as `Log` events).

use eventor_agent::util::error_chain;
use eventor_protocol::{
    FrameReader, FrameWriter, Heartbeat, LogLevel, LogRecord, ProtocolError, Stream, ToAgent,
    ToCoordinator,
};
use eventor_store::now_micros;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::{BoxRead, BoxWrite, Early, StderrSource};
use super::{describe_exit, show, Ctx, HostEvent, Phase, EXIT_WAIT};

/// Messages written in one flush at most.
const WRITE_BATCH: usize = 64;

/// The reader task: frames to events until the agent's output ends or the link stops.
pub(super) async fn read_loop(
    mut reader: FrameReader<BoxRead>,
    ctx: &Ctx,
    stderr_done: &CancellationToken,
) {
    loop {
        let waited = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = tokio::time::timeout(ctx.lost_after, reader.read_frame::<ToCoordinator>()) => r,
        };
        let frame = match waited {
            Ok(frame) => frame,
            Err(_) => {
                let reason = format!("no heartbeat for {}", show(ctx.lost_after));
                return ctx.lose(reason).await;
            }
        };
        match frame {
            Ok(Some(message)) => {
                if !forward(message, ctx).await {
                    return;
                }
            }
            Ok(None) => return output_ended(ctx, None, stderr_done).await,
            Err(e) if !e.is_fatal() => {
                let host = ctx.host();
                let message = format!("dropped a frame: {}", error_chain(&e));
                if !ctx
                    .emit(HostEvent::AgentError {
                        host,
                        key: None,
                        message,
                    })
                    .await
                {
                    return;
                }
            }
            Err(e) => return output_ended(ctx, Some(e), stderr_done).await,
        }
    }
}

/// One agent message as an event; heartbeats only prove life. `false` when the link stops.
async fn forward(message: ToCoordinator, ctx: &Ctx) -> bool {
    let host = ctx.host();
    let event = match message {
        // A late `StoreReady` (it is read during the start) only proves life as well.
        ToCoordinator::Heartbeat(_) | ToCoordinator::StoreReady => return true,
        ToCoordinator::TaskStarted { key, pid } => HostEvent::Started { host, key, pid },
        ToCoordinator::TaskFinished { key, end } => HostEvent::Finished { host, key, end },
        ToCoordinator::Log(mut record) => {
            // The link, not the agent, knows which host this is.
            record.host.clone_from(&host);
            HostEvent::Log { host, record }
        }
        ToCoordinator::Output(batch) => HostEvent::Output { host, batch },
        ToCoordinator::TaskRan { key } => HostEvent::Ran { host, key },
        ToCoordinator::Error { key, message } => HostEvent::AgentError { host, key, message },
        ToCoordinator::Trigger {
            id,
            event,
            sequence,
        } => HostEvent::Trigger {
            host,
            id,
            event,
            sequence,
        },
        ToCoordinator::StatusAsk { id } => HostEvent::StatusAsk { host, id },
        // Read during the start when it belongs there; anywhere else it is out of place.
        ToCoordinator::Adopted { .. } => HostEvent::AgentError {
            host,
            key: None,
            message: "an adoption report after the start: ignored".to_string(),
        },
    };
    ctx.emit(event).await
}

/// The agent's output ended (cleanly between frames when `error` is `None`). Expected after
/// our shutdown; otherwise the link is lost, with the reason the exit status gives.
async fn output_ended(ctx: &Ctx, error: Option<ProtocolError>, stderr_done: &CancellationToken) {
    if error.is_none() && ctx.shared.phase.reached(Phase::ShutdownSent) {
        ctx.shared.phase.advance(Phase::EndedClean);
        return;
    }
    // Let the exit status and the agent's last stderr lines (its panic, say) arrive first,
    // so they are in the log before `Lost`.
    let mut exit = ctx.shared.exit.clone();
    let _ = tokio::time::timeout(EXIT_WAIT, async {
        let _ = exit.wait_for(Option::is_some).await;
        stderr_done.cancelled().await;
    })
    .await;
    let ended = match exit.borrow().as_ref() {
        Some(status) => describe_exit(status),
        None => "agent closed its output".to_string(),
    };
    let reason = match error {
        Some(e) => format!("{} ({ended})", error_chain(&e)),
        None => ended,
    };
    ctx.lose(reason).await;
}

/// The writer task: queued messages out, a heartbeat whenever it has been quiet.
pub(super) async fn write_loop(
    mut writer: FrameWriter<BoxWrite>,
    mut queue: mpsc::Receiver<ToAgent>,
    ctx: Ctx,
    heartbeat: Duration,
) {
    let mut beat = 0u64;
    loop {
        let first = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            message = queue.recv() => match message {
                Some(message) => message,
                // The link handle is gone; its drop cancels `stop` as well.
                None => return,
            },
            _ = tokio::time::sleep(heartbeat) => {
                beat += 1;
                ToAgent::Heartbeat(Heartbeat { seq: beat - 1, sent_at: now_micros() })
            }
        };
        let closing = queue_batch(&mut writer, first, &mut queue, &ctx).await;
        if !flush(&mut writer, &ctx, closing).await || closing {
            return;
        }
    }
}

/// Encodes `first` and whatever else is queued (up to a batch) into the writer's buffer.
/// `true` when a `Shutdown` was among them: nothing may follow it.
async fn queue_batch(
    writer: &mut FrameWriter<BoxWrite>,
    first: ToAgent,
    queue: &mut mpsc::Receiver<ToAgent>,
    ctx: &Ctx,
) -> bool {
    let mut next = Some(first);
    let mut count = 0;
    while let Some(message) = next.take() {
        let closing = matches!(message, ToAgent::Shutdown { .. });
        if closing {
            ctx.shared.phase.advance(Phase::ShutdownSent);
        }
        if let Err(e) = writer.queue_frame(&message) {
            // Nothing was written (the message alone is too large): that task cannot run.
            let host = ctx.host();
            let key = message.key().cloned();
            let message = format!("cannot send a message to the agent: {}", error_chain(&e));
            ctx.emit(HostEvent::AgentError { host, key, message }).await;
        }
        count += 1;
        if closing {
            return true;
        }
        if count < WRITE_BATCH {
            next = queue.try_recv().ok();
        }
    }
    false
}

/// Writes the buffer out (and, when `closing`, sends EOF), bounded by `lost_after`.
/// `false` when the link is lost or stopped.
async fn flush(writer: &mut FrameWriter<BoxWrite>, ctx: &Ctx, closing: bool) -> bool {
    let write = async {
        writer.flush().await?;
        if closing {
            writer.shutdown().await?;
        }
        Ok::<_, ProtocolError>(())
    };
    let result = tokio::select! {
        _ = ctx.stop.cancelled() => return false,
        r = tokio::time::timeout(ctx.lost_after, write) => r,
    };
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            ctx.lose(format!("writing to the agent: {}", error_chain(&e)))
                .await;
            false
        }
        Err(_) => {
            let stalled = format!("writing to the agent stalled for {}", show(ctx.lost_after));
            ctx.lose(stalled).await;
            false
        }
    }
}

/// The stderr task: the agent's stderr lines as `Log` records (stream `Agent`), the lines
/// seen during the handshake first.
pub(super) async fn forward_stderr(
    mut stderr: StderrSource,
    early: Early,
    ctx: Ctx,
    done: CancellationToken,
) {
    for line in early.0 {
        if !ctx.emit(stderr_event(&ctx, line)).await {
            return done.cancel();
        }
    }
    loop {
        let line = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            line = stderr.next_line() => line,
        };
        let Some(line) = line else { break };
        if !ctx.emit(stderr_event(&ctx, line)).await {
            break;
        }
    }
    let dropped = stderr.dropped_lines();
    if dropped > 0 {
        let note = format!("{dropped} lines of the agent's stderr were dropped (not read in time)");
        ctx.emit(stderr_event(&ctx, note)).await;
    }
    done.cancel();
}

fn stderr_event(ctx: &Ctx, text: String) -> HostEvent {
    let host = ctx.host();
    let (level, text) = agent_line(text);
    let record = LogRecord {
        time: now_micros(),
        level,
        host: host.clone(),
        task: None,
        stream: Stream::Agent,
        text,
    };
    HostEvent::Log { host, record }
}

/// An agent's stderr line as its level and text: the agent writes `LEVEL message fields`
/// (no time: the prime stamps the line); anything else (a panic, a shell's complaint) is a
/// warning as it stands.
pub(super) fn agent_line(line: String) -> (LogLevel, String) {
    let trimmed = line.trim_start();
    let (word, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
    let level = match word {
        "ERROR" => LogLevel::Error,
        "WARN" => LogLevel::Warn,
        "INFO" => LogLevel::Info,
        "DEBUG" => LogLevel::Debug,
        "TRACE" => LogLevel::Trace,
        _ => return (LogLevel::Warn, line),
    };
    (level, rest.trim_start().to_string())
}
