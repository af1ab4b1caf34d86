//! The wire protocol between the prime coordinator and its agents.
//!
//! The coordinator starts `eventor-agent` on a cluster host through an SSH exec channel and
//! the two talk over that channel's stdin and stdout: an ordered, reliable byte stream and
//! nothing more. This crate defines what goes down it and how, and nothing else: it knows no
//! SSH, no database and no scheduling.
//!
//! # Frames
//!
//! Every message travels in one frame: a fixed 12-byte header, then the payload.
//!
//! ```text
//!  offset  size  field
//!  0       4     magic, the bytes "EVTR" (45 56 54 52)
//!  4       2     protocol major version, big-endian u16
//!  6       2     protocol minor version, big-endian u16
//!  8       4     payload length in bytes, big-endian u32
//!  12      len   payload: one message, bincode-encoded
//! ```
//!
//! The header's first eight bytes are frozen for every version to come, so any build can
//! read any other build's major version, even one whose payloads it cannot parse.
//!
//! Payloads are [bincode 2](https://docs.rs/bincode/2.0.1) (pinned to `=2.0.1`) through
//! serde with its `standard()` configuration: little-endian, variable-length integers, enum
//! variants by index, strings and sequences as a length then the items. A payload must be
//! consumed exactly; leftover bytes are an error ([`ProtocolError::TrailingBytes`]), since
//! they mean the two ends disagree about a type. All bincode calls live in one private
//! module, `wire`, so the payload codec can be swapped without touching the framing.
//!
//! **The cap.** Each end caps the payload length it accepts ([`FrameLimit`], 16 MiB by
//! default, a power of two from 1 MiB to 1 GiB). The decoder checks the header's length
//! against the cap *before* reserving anything for the payload, so a forged length costs
//! twelve bytes, not gigabytes. Inside the payload, bincode decodes with the cap as its
//! explicit byte limit: every string length is charged against it before the string is
//! allocated, so no allocation exceeds the cap whatever the bytes. (The limit counts decoded
//! sizes: a one-byte varint is charged as the eight-byte integer it becomes, so a payload
//! made mostly of small integers could be refused below the cap. Real messages are mostly
//! text.) The encoder refuses to produce a payload over the cap
//! ([`ProtocolError::MessageTooLarge`]) and writes nothing; the agent learns the
//! coordinator's cap in the handshake ([`Limits::max_frame_bytes`]) and must split or cut
//! longer log text itself.
//!
//! # Handshake
//!
//! ```text
//!  agent                                   coordinator
//!    | -- Hello {protocol, agent_version,  -->  |
//!    |          host, capabilities}             |  decide
//!    | <-- HandshakeReply::Accept {run_id, --   |
//!    |       host, heartbeat_interval_ms,       |
//!    |       limits}                            |
//!    |     or HandshakeReply::Refuse {reason}   |  (then closes)
//!    |     or HandshakeReply::AcceptWithStore   |  (1.1: Accept + StoreAccess)
//!    |     or HandshakeReply::AcceptWithStoreTls|  (1.4: the same + StoreTls)
//!    | -- StoreReady (or Error, then closes) -> |  (1.1, after AcceptWithStore[Tls] only)
//! ```
//!
//! **The store (1.1).** To an agent whose hello says 1.1 or later, the coordinator may answer
//! `HandshakeReply::AcceptWithStore { accept, store }` instead: the same [`Accept`] plus a
//! [`StoreAccess`] (the store's location without a password, and the password the
//! coordinator resolved). The channel is the only private path to the agent, so this is how
//! credentials reach it; never its command line, environment or log (`StoreAccess`'s
//! `Debug` masks the password). The agent opens the store and answers
//! `ToCoordinator::StoreReady` as its first message, or an `Error` without a key and
//! closes; the coordinator waits for that answer before it dispatches anything. An agent of
//! 1.0 gets a plain `Accept` ([`accept`] leaves the store out and reports so in the returned
//! [`Welcome`]). Adding a field to `Accept` would have changed its bytes (a major version);
//! appending a variant to `HandshakeReply` and to `ToCoordinator` is the minor bump the
//! rules below allow, which is why the golden files changed only in the header's minor
//! byte (and gained `accept_with_store` and `store_ready`).
//!
//! **The store's TLS (1.4).** To an agent of 1.4 or later, a coordinator whose store is
//! reached over TLS answers `HandshakeReply::AcceptWithStoreTls { accept, store, tls }`: the
//! same two plus a [`StoreTls`] (the `sslmode` it resolved, the name the server's
//! certificate must match, and the contents of the CA and client certificate files and the
//! key), so certificates and keys reach an agent as its password does, never as files left
//! on its host. Adding a field to `StoreAccess` would have been a major version; a variant
//! appended to `HandshakeReply` is a minor one. An agent before 1.4 gets `AcceptWithStore`
//! without the TLS; the store URL it is sent names the `sslmode`, which such an agent
//! refuses when the mode needs TLS, so no agent connects in plain text to a store that
//! must not be.
//!
//! **Output in batches (1.2).** A command's output reaches the agent a pipe read at a time;
//! [`ToCoordinator::Output`] carries one read's lines ([`OutputBatch`]: the task, stream and
//! time once, the lines joined by `\n`), so a flood costs a frame per 64 KiB instead of one
//! [`LogRecord`] per line. The agent sends it only to a coordinator whose header says 1.2 or
//! later; an older one gets the same lines as `Log` records, one per line. 1.2 also adds
//! [`ToCoordinator::TaskRan`]: the task's command has ended and its slot on the agent is
//! free while its end is recorded, so the coordinator can hand that host its next task
//! without waiting for the store.
//!
//! **Leases (1.3).** A coordinator of 1.3 or later sends [`ToAgent::Lease`] once, right
//! after the handshake: how long the agent keeps running its tasks after it lost its
//! coordinator, counted from the last frame it read. When the lease runs out with no
//! coordinator the agent stops them and records them failed; the coordinator, for its
//! part, starts no other attempt of a lost host's task before the lease (plus a margin) has
//! passed since it last heard from that host. Both sides measure with monotonic clocks, so
//! at most one attempt of a task is alive at any moment. An agent without a lease (an older
//! coordinator) lets its tasks run to their end, as before.
//!
//! **Re-adoption (1.4).** An agent that lost its coordinator waits for the next one on a
//! private Unix socket of its host, for the rest of its lease, holding its tasks' output.
//! A coordinator that reaches the host again (a reconnect, a recovery, a continue) starts
//! the agent with the run's socket name; that agent finds the survivor and only carries
//! bytes between the channel and the socket, so the coordinator's handshake is with the
//! survivor itself: its hello has the [`ADOPTED`] capability and its first message is
//! [`ToCoordinator::Adopted`], the attempts it started whose ends no coordinator has read.
//! Their held output and ends follow in order, then the session goes on as any other. The
//! coordinator takes those attempts as running on that host and starts no other.
//!
//! The agent speaks first, because the coordinator started it and is already listening.
//! [`Hello`] and [`HandshakeReply`] are types of their own rather than variants of the
//! message enums: until the handshake ends, each side expects exactly one message of a
//! known type, and afterwards neither can appear. The two functions [`hello`] (agent) and
//! [`accept`] (coordinator) run the exchange over a [`FrameReader`]/[`FrameWriter`] pair,
//! each with a timeout, so a silent or wedged peer is an error, never a hang.
//!
//! **Major mismatch.** The decoder checks the header's major version before it looks at the
//! payload and reports a difference as [`ProtocolError::VersionMismatch`], worded by role:
//! "agent speaks protocol 2, coordinator 1". The coordinator, on reading such a hello,
//! answers with a refusal in *its* framing and returns the error; the agent's decoder reads
//! that frame's header, sees the other major and returns the same error. Both sides log the
//! same sentence, and neither waits.
//!
//! # Messages
//!
//! After the handshake each direction carries one closed enum: [`ToAgent`] (dispatch,
//! cancel, shutdown, heartbeat, and since 1.3 lease) and [`ToCoordinator`] (task started,
//! task finished, log record, heartbeat, error; since 1.1 store ready; since 1.2 output and
//! task ran; since 1.4 adopted and a task's trigger, answered by the coordinator's trigger
//! answer). Variants are only ever appended, so an older peer's messages keep their
//! indices. Many tasks run at once on one channel, so every message about
//! a task carries its [`TaskKey`] (run, step, sequence, recovery, attempt); nothing relies
//! on which message came before. A retry is a new attempt and so a new key, which keeps a
//! late message from an old attempt from being taken for the new one.
//!
//! # Ordering
//!
//! The channel is one ordered stream, so frames arrive in the order they were written, and a
//! frame arrives whole or not at all. The protocol adds these promises, which the agent keeps
//! by sending everything through one writer:
//!
//! - for one key, `TaskStarted` comes before any `Output` or `Log` of that task, `TaskRan`
//!   (1.2) after its output, and `TaskFinished` comes last, after the task's output has been
//!   drained;
//! - frames of different tasks interleave in any order;
//! - `Cancel` of a key that has finished (or never ran) is ignored; the cancelled task's own
//!   `TaskFinished` with status `Cancelled` is its answer;
//! - each end sends a `Heartbeat` when it has sent nothing for `heartbeat_interval_ms`;
//!   a peer silent for several intervals may be presumed gone. The prime waits at most
//!   [`MAX_LOST_AFTER`] on a silent agent; an agent waits longer than that on a silent prime,
//!   so that of a blip in between the prime decides first, and says why.
//!
//! # Torn frames and other failures
//!
//! A clean end of stream *between* frames is the normal end: [`FrameReader::read_frame`]
//! returns `Ok(None)`. An end of stream *inside* a frame, header or payload, is
//! [`ProtocolError::TornFrame`]: the partial frame is dropped, never delivered, and the
//! channel is dead. The coordinator then treats the agent's running tasks as of unknown
//! outcome, which is what recovery is for. A header that is not ours
//! ([`ProtocolError::BadMagic`], typically a login banner printed on stdout), another major
//! version, or a length over the cap also leaves the stream out of step and ends the
//! channel. A payload that fails to decode has been consumed exactly, so the stream is still
//! in step; [`ProtocolError::is_fatal`] tells the two kinds apart.
//!
//! The decoder never panics and never allocates more than the cap, whatever the bytes; the
//! property tests feed it arbitrary and mutated input to hold it to that.
//!
//! # How versions evolve
//!
//! bincode is not self-describing: the bytes say nothing of field names or types, so the
//! Rust types *are* the format. Hence:
//!
//! - **Minor** (compatible): append a variant at the *end* of a wire enum. A sender uses a
//!   new variant only if the peer's minor version has it (the peer's version is in every
//!   header; see [`ProtocolVersion::common`] and [`FrameReader::peer_version`]); an older
//!   decoder would reject it as an unknown variant. Capabilities are strings so they can
//!   grow without even that.
//! - **Major** (incompatible): anything else. Adding, removing, reordering or retyping a
//!   field, reordering variants, or changing an `Option` into a plain value all change the
//!   bytes. Both ends must then be upgraded together; the handshake says so plainly.
//! - No serde attribute that needs a self-describing format or omits bytes:
//!   `skip_serializing_if` (the reader cannot tell the field was skipped), `flatten`,
//!   `untagged` and internally or adjacently `tag`ged enums (all need `deserialize_any`,
//!   which bincode refuses). And `default` on a field does not make adding it compatible:
//!   the reader still expects its bytes.
//! - `#[serde(skip)]` (unconditional, both ways) adds no bytes, so a field of it is no
//!   version step: [`TaskEnd`]'s `class` is one, a prime-made end's failure class that
//!   never crosses the wire. An agent's end is classed where it is read from its status,
//!   exit code and error ([`TaskEnd::derived_class`]), so the ends of agents of every 1.x
//!   are classed alike.
//!
//! The golden vectors in `tests/golden/` pin the bytes of a few messages, so an accidental
//! change fails a test; an intended one regenerates them (`UPDATE_GOLDEN=1`) together with
//! a version bump.
//!
//! # Use
//!
//! ```
//! use eventor_protocol::{FrameReader, FrameWriter, LogLevel, LogRecord, Stream, ToCoordinator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), eventor_protocol::ProtocolError> {
//! let (agent_end, coordinator_end) = tokio::io::duplex(64 * 1024);
//! let mut agent = FrameWriter::new(agent_end);
//! let mut coordinator = FrameReader::new(coordinator_end);
//!
//! let record = LogRecord {
//!     time: 1_700_000_000_000_000,
//!     level: LogLevel::Info,
//!     host: "worker-1".into(),
//!     task: None,
//!     stream: Stream::Agent,
//!     text: "ready".into(),
//! };
//! agent.write_frame(&ToCoordinator::Log(record.clone())).await?;
//! agent.shutdown().await?;
//!
//! assert_eq!(coordinator.read_frame().await?, Some(ToCoordinator::Log(record)));
//! assert_eq!(coordinator.read_frame::<ToCoordinator>().await?, None); // clean end
//! # Ok(())
//! # }
//! ```
//!
//! [`encode_frame`] and [`decode_frame`] work on a plain buffer, for callers that manage
//! their own I/O.

/// The longest a prime waits on a silent agent before it calls the host lost.
pub const MAX_LOST_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

mod error;
mod failure;
mod frame;
mod handshake;
mod io;
mod limit;
mod messages;
mod wire;

pub use error::{ProtocolError, Role, WireCause};
pub use failure::{
    signal_name, FailureClass, FailureKind, UnknownClass, CANNOT_START, EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND, KILLED_BY_SIGNAL, NO_COORDINATOR,
};
pub use frame::{decode_frame, encode_frame, FrameConfig, FrameHeader, HEADER_LEN, MAGIC};
pub use handshake::{accept, hello, Welcome};
pub use io::{FrameReader, FrameWriter};
pub use limit::FrameLimit;
pub use messages::{
    Accept, Dispatch, EndStatus, HandshakeReply, Heartbeat, Hello, Limits, LogLevel, LogRecord,
    Micros, OutputBatch, ProtocolVersion, Refuse, StoreAccess, StoreTls, Stream, TaskEnd, TaskKey,
    ToAgent, ToCoordinator, WireMessage, Work, ADOPTED, LEASE_STOP_GRACE,
};
