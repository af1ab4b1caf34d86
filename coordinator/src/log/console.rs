//! Task output on a console: either an `eventor::output` tracing event per line (the
//! default, for a program's own subscriber), or the central log's formatted lines written
//! straight to a writer in chunks by a thread of its own ([`ConsoleOutput::Direct`], what
//! `eventor-coord run` uses).
//!
//! The direct echo is fed by the central log's writer task: each batch is formatted once,
//! written to the file, and its bytes copied into a chunk that goes to the console thread
//! when it holds [`CHUNK`] bytes or the writer flushes. A chunk is one `write` to the
//! console; the thread hands emptied chunks back for reuse. The channel of chunks is
//! bounded, so a slow console slows the run (as a slow disk does) and nothing is dropped.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes of formatted lines gathered before they go to the console in one write.
pub(super) const CHUNK: usize = 64 * 1024;
/// Chunks queued ahead of the console thread.
const CHUNKS_AHEAD: usize = 4;

/// How a run shows its tasks' output lines on a console (the central log, when there is
/// one, gets them either way).
#[derive(Clone, Default)]
pub enum ConsoleOutput {
    /// Each line as an `INFO` event of the `eventor::output` target with the fields `host`,
    /// `step`, `sequence` and `stream`, the line as its message: shown by whatever
    /// subscriber the program installed (or by none). The default. An event per line costs
    /// about 2 µs with a formatting subscriber: for heavy output, prefer `Direct`.
    #[default]
    Events,
    /// Each line written as the central log writes it
    /// (`TIME HOST STEP[SEQ] STREAM TEXT`), in chunks of many lines, to the echo's writer;
    /// no `eventor::output` events. Works with or without a central log.
    Direct(ConsoleEcho),
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleOutput::Events => f.write_str("Events"),
            ConsoleOutput::Direct(_) => f.write_str("Direct(..)"),
        }
    }
}

/// Where [`ConsoleOutput::Direct`] writes: a maker of the writer, called once per opening
/// of the run's log on the console thread (a writer need not be `Sync`).
#[derive(Clone)]
pub struct ConsoleEcho {
    make: Arc<dyn Fn() -> Box<dyn Write + Send> + Send + Sync>,
}

impl ConsoleEcho {
    /// Echo to what `make` returns (it is flushed after every chunk).
    pub fn new<W, F>(make: F) -> ConsoleEcho
    where
        W: Write + Send + 'static,
        F: Fn() -> W + Send + Sync + 'static,
    {
        ConsoleEcho {
            make: Arc::new(move || Box::new(make())),
        }
    }

    /// Echo to the process's stderr.
    pub fn stderr() -> ConsoleEcho {
        ConsoleEcho::new(std::io::stderr)
    }
}

impl std::fmt::Debug for ConsoleEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleEcho").finish_non_exhaustive()
    }
}

/// The writer task's end of a direct echo: the chunk being filled, and the thread.
pub(super) struct Console {
    chunk: Vec<u8>,
    full: Option<mpsc::Sender<Vec<u8>>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: JoinHandle<()>,
}

impl Console {
    /// Starts the console thread (on the runtime's blocking pool). Needs a tokio runtime.
    pub(super) fn start(echo: &ConsoleEcho) -> Console {
        let (full, mut chunks) = mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD);
        let (give_back, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_AHEAD + 1);
        let make = echo.make.clone();
        let thread = tokio::task::spawn_blocking(move || {
            let mut out = make();
            // A console that fails (a closed stderr: `2>&1 | head`) is written no more, but
            // its chunks are still taken, so the run goes on.
            let mut broken = false;
            while let Some(mut chunk) = chunks.blocking_recv() {
                if !broken {
                    broken = out.write_all(&chunk).and_then(|()| out.flush()).is_err();
                }
                chunk.clear();
                let _ = give_back.try_send(chunk);
            }
        });
        Console {
            chunk: Vec::with_capacity(CHUNK),
            full: Some(full),
            empty,
            thread,
        }
    }

    /// Adds formatted lines; hands a full chunk to the thread (waiting for room).
    pub(super) async fn push(&mut self, lines: &[u8]) {
        self.chunk.extend_from_slice(lines);
        if self.chunk.len() >= CHUNK {
            self.send().await;
        }
    }

    /// Hands what was gathered to the thread.
    pub(super) async fn send(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.chunk, next);
        if let Some(full) = &self.full {
            if full.send(chunk).await.is_err() {
                // The thread is gone (it panicked in the writer): echo no more.
                self.full = None;
            }
        }
    }

    /// Hands over the rest and waits until the thread wrote it all and ended.
    pub(super) async fn finish(mut self) {
        self.send().await;
        drop(self.full.take());
        let _ = self.thread.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer into shared memory, counting its writes.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            inner.0.extend_from_slice(buf);
            inner.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn chunks_arrive_whole_in_order_in_few_writes() {
        let shared = Shared::default();
        let writer = shared.clone();
        let mut console = Console::start(&ConsoleEcho::new(move || writer.clone()));
        let mut expected = Vec::new();
        for i in 0..100_000 {
            let line = format!("line {i}\n");
            expected.extend_from_slice(line.as_bytes());
            console.push(line.as_bytes()).await;
        }
        console.finish().await;
        let (bytes, writes) = shared.0.lock().unwrap().clone();
        assert_eq!(bytes, expected);
        assert!(writes <= expected.len() / CHUNK + 1, "{writes} writes");
    }

    #[tokio::test]
    async fn a_failing_console_does_not_stop_the_producer() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut console = Console::start(&ConsoleEcho::new(|| Closed));
        for _ in 0..10 * CHUNKS_AHEAD {
            console.push(&[b'x'; CHUNK]).await;
        }
        console.finish().await;
    }
}
