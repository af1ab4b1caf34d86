//! The handshake, one async function per side, each bounded by a timeout.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ProtocolError, Role};
use crate::io::{FrameReader, FrameWriter};
use crate::messages::{Accept, HandshakeReply, Hello, Refuse, StoreAccess, StoreTls};

/// What an accepted agent is told: the [`Accept`], and since 1.1 the store it records in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub accept: Accept,
    /// The store and its password; `None` when the coordinator sent none (or could not:
    /// the agent's version predates it).
    pub store: Option<StoreAccess>,
    /// Since 1.4, the TLS the store is reached with; `None` when none was sent (no store,
    /// or an agent before 1.4, whose store URL still says the `sslmode`).
    pub tls: Option<StoreTls>,
}

impl From<Accept> for Welcome {
    fn from(accept: Accept) -> Welcome {
        Welcome {
            accept,
            store: None,
            tls: None,
        }
    }
}

/// The agent's side: sends `hello`, then waits for the coordinator's answer.
///
/// Returns the coordinator's [`Welcome`]; a refusal is [`ProtocolError::Refused`], a
/// coordinator of another major version is [`ProtocolError::VersionMismatch`] (read from
/// the reply's header, whatever its payload), silence is [`ProtocolError::Timeout`].
pub async fn hello<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    hello: &Hello,
    timeout: Duration,
) -> Result<Welcome, ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    within(timeout, "handshake reply from the coordinator", async {
        writer.write_frame(hello).await?;
        match reader.read_frame::<HandshakeReply>().await? {
            Some(HandshakeReply::Accept(accept)) => Ok(accept.into()),
            Some(HandshakeReply::AcceptWithStore { accept, store }) => Ok(Welcome {
                accept,
                store: Some(store),
                tls: None,
            }),
            Some(HandshakeReply::AcceptWithStoreTls { accept, store, tls }) => Ok(Welcome {
                accept,
                store: Some(store),
                tls: Some(tls),
            }),
            Some(HandshakeReply::Refuse(Refuse { reason })) => {
                Err(ProtocolError::Refused { reason })
            }
            None => Err(ProtocolError::Closed {
                peer: Role::Coordinator,
                expected: "its handshake reply",
            }),
        }
    })
    .await
}

/// The coordinator's side: waits for the agent's [`Hello`], asks `decide` whether to take
/// the agent, and sends the answer.
///
/// `decide` returns the [`Welcome`] to send, or the reason to refuse. A store goes only to
/// an agent of 1.1 or later ([`HandshakeReply::AcceptWithStore`]); for an older one it is
/// left out, and the returned welcome says so (`store: None`). Its TLS goes only to an
/// agent of 1.4 or later ([`HandshakeReply::AcceptWithStoreTls`]); an older one gets the
/// store without it (`tls: None`), and its store URL's `sslmode` then makes it refuse a
/// mode that needs TLS rather than connect without. A refusal is sent and
/// then returned as [`ProtocolError::Refused`]. An agent of another major version gets a
/// refusal too (its own decoder reports the mismatch from the header) and the call returns
/// [`ProtocolError::VersionMismatch`].
pub async fn accept<R, W, F>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    timeout: Duration,
    decide: F,
) -> Result<(Hello, Welcome), ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: FnOnce(&Hello) -> Result<Welcome, String>,
{
    within(timeout, "hello from the agent", async {
        let hello = read_hello(reader, writer).await?;
        match decide(&hello) {
            Ok(welcome) => {
                let sent = welcome_for(&hello, welcome);
                writer.write_frame(&reply_of(&sent)).await?;
                Ok((hello, sent))
            }
            Err(reason) => Err(refuse(writer, reason).await),
        }
    })
    .await
}

/// The welcome as an agent of `hello`'s version can take it.
fn welcome_for(hello: &Hello, welcome: Welcome) -> Welcome {
    match (&welcome.store, &welcome.tls) {
        (Some(_), _) if !hello.protocol.has_store_access() => welcome.accept.into(),
        (Some(_), Some(_)) if !hello.protocol.has_store_tls() => Welcome {
            tls: None,
            ..welcome
        },
        // TLS without a store means nothing.
        (None, Some(_)) => welcome.accept.into(),
        _ => welcome,
    }
}

fn reply_of(welcome: &Welcome) -> HandshakeReply {
    let accept = welcome.accept.clone();
    match (&welcome.store, &welcome.tls) {
        (None, _) => HandshakeReply::Accept(accept),
        (Some(store), None) => HandshakeReply::AcceptWithStore {
            accept,
            store: store.clone(),
        },
        (Some(store), Some(tls)) => HandshakeReply::AcceptWithStoreTls {
            accept,
            store: store.clone(),
            tls: tls.clone(),
        },
    }
}

/// Reads the agent's hello, refusing an agent whose major version differs (by header or,
/// should the two ever disagree, by the hello itself).
async fn read_hello<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> Result<Hello, ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ours = writer.config().version.major;
    let hello = match reader.read_frame::<Hello>().await {
        Ok(Some(hello)) => hello,
        Ok(None) => {
            return Err(ProtocolError::Closed {
                peer: Role::Agent,
                expected: "its hello",
            })
        }
        Err(e @ ProtocolError::VersionMismatch { .. }) => return Err(refuse_with(writer, e).await),
        Err(e) => return Err(e),
    };
    if hello.protocol.major != ours {
        let e = ProtocolError::version_mismatch(Role::Coordinator, ours, hello.protocol.major);
        return Err(refuse_with(writer, e).await);
    }
    Ok(hello)
}

/// Sends a refusal carrying `error`'s text, then returns `error`.
async fn refuse_with<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    error: ProtocolError,
) -> ProtocolError {
    send_refusal(writer, error.to_string()).await;
    error
}

/// Sends a refusal with `reason`, then returns it as [`ProtocolError::Refused`].
async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    reason: String,
) -> ProtocolError {
    send_refusal(writer, reason.clone()).await;
    ProtocolError::Refused { reason }
}

/// Best effort: the channel is being dropped either way, and an agent of another major
/// version learns of it from the frame header even if the payload never arrives whole.
async fn send_refusal<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, reason: String) {
    let reply = HandshakeReply::Refuse(Refuse { reason });
    let _ = writer.write_frame(&reply).await;
}

/// Runs `step`, turning silence beyond `timeout` into [`ProtocolError::Timeout`].
async fn within<T>(
    timeout: Duration,
    waiting_for: &'static str,
    step: impl Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(timeout, step)
        .await
        .unwrap_or(Err(ProtocolError::Timeout {
            waiting_for,
            after: timeout,
        }))
}
