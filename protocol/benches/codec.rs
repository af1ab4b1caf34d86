//! Throughput of log-record frames on one core: encode, decode, and both, in records/s and
//! MB/s of frame bytes. Run with `cargo bench -p eventor-protocol --bench codec`.
//!
//! Log forwarding must never wait on the codec; the target is at least one million small
//! records a second each way. Without `--bench` (e.g. `cargo test --benches`) it runs a few
//! iterations only, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use eventor_protocol::{
    decode_frame, encode_frame, FrameConfig, LogLevel, LogRecord, Stream, TaskKey, ToCoordinator,
};

/// Records per batch: enough to amortise buffer growth, small enough to stay in cache.
const BATCH: usize = 1024;

fn record(i: u64) -> ToCoordinator {
    ToCoordinator::Log(LogRecord {
        time: 1_700_000_000_000_000 + i as i64,
        level: LogLevel::Info,
        host: "worker-07".into(),
        task: Some(TaskKey {
            run_id: "0193b1f2-7c4e-7a10-9d3e-5b2c1a0f9e88".into(),
            step: "build".into(),
            sequence: "12".into(),
            recovery: 0,
            attempt: 1,
        }),
        stream: Stream::Stdout,
        // 80 bytes: a typical compiler or test-runner line.
        text: format!("{:<80}", format!("test suite::case_{i} ... ok")),
    })
}

struct Timing {
    records: u64,
    bytes: u64,
    wall: Duration,
    cpu: Option<Duration>,
}

impl Timing {
    fn row(&self, name: &str) {
        let rate = |secs: f64| {
            format!(
                "{:>10.0} records/s {:>7.1} MB/s {:>5.0} ns/record",
                self.records as f64 / secs,
                self.bytes as f64 / secs / 1e6,
                secs * 1e9 / self.records as f64,
            )
        };
        let cpu = self
            .cpu
            .map_or("n/a".to_string(), |cpu| rate(cpu.as_secs_f64()));
        println!(
            "{name:<14} cpu {cpu}   wall {}",
            rate(self.wall.as_secs_f64())
        );
    }
}

/// Time this thread has spent on a CPU (Linux), so other load on the machine does not
/// count against the codec: "on one core" means CPU time, not wall time.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Runs `batch` (which handles `BATCH` records and returns the frame bytes it touched)
/// until `budget` has passed.
fn measure(budget: Duration, mut batch: impl FnMut() -> usize) -> Timing {
    let (mut records, mut bytes) = (0, 0);
    let (start, cpu_start) = (Instant::now(), thread_cpu_time());
    while start.elapsed() < budget {
        bytes += batch() as u64;
        records += BATCH as u64;
    }
    let cpu = thread_cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    Timing {
        records,
        bytes,
        wall: start.elapsed(),
        cpu,
    }
}

/// By reference, as `FrameWriter::queue_frame` does: the agent's path.
fn encode_batch(msgs: &[ToCoordinator], buf: &mut BytesMut) -> usize {
    buf.clear();
    for msg in msgs {
        encode_frame(msg, buf, &FrameConfig::default()).expect("encodes");
    }
    buf.len()
}

/// Decodes every frame in `buf`, as `FrameReader::read_frame` does, and checks there were
/// `BATCH` of them and nothing left over: a decoder that stopped early (or never started)
/// would otherwise look very fast.
fn decode_all(buf: &mut BytesMut) {
    let config = FrameConfig::default();
    let mut decoded = 0;
    while let Some(frame) = decode_frame::<ToCoordinator>(buf, &config).expect("decodes") {
        black_box(frame);
        decoded += 1;
    }
    assert_eq!(decoded, BATCH, "decoded {decoded} of {BATCH} frames");
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
}

fn decode_batch(frames: &[u8]) -> usize {
    decode_all(&mut BytesMut::from(frames));
    frames.len()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_millis(if full { 2000 } else { 20 });

    let msgs: Vec<ToCoordinator> = (0..BATCH as u64).map(record).collect();
    let mut buf = BytesMut::with_capacity(BATCH * 256);
    let frame_bytes = encode_batch(&msgs, &mut buf);
    let frames = buf.clone().freeze();
    println!(
        "log-record frames: {} bytes each ({} payload), {} per batch, one core",
        frame_bytes / BATCH,
        frame_bytes / BATCH - eventor_protocol::HEADER_LEN,
        BATCH
    );

    // `--only NAME` runs one row, e.g. under a profiler.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("encode") {
        measure(budget, || encode_batch(&msgs, &mut buf)).row("encode");
    }
    if wanted("decode") {
        measure(budget, || decode_batch(&frames)).row("decode");
    }
    if !wanted("encode+decode") {
        return;
    }
    measure(budget, || {
        let n = encode_batch(&msgs, &mut buf);
        decode_all(&mut buf);
        n
    })
    .row("encode+decode");
}
