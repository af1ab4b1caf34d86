//! Why `serve` can fail: the store would not open, the handshake failed, the coordinator's
//! stream broke mid-run, or the agent was stopped before it was accepted.

use eventor_protocol::ProtocolError;
use eventor_store::StoreError;

/// What ends [`serve`](super::serve) with an error. The losses the agent is built to survive
/// (the prime closing or tearing the channel, or falling silent) are not errors: they end in
/// [`AgentEnd::PrimeLost`](super::AgentEnd::PrimeLost).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The store given in the options could not be opened, so no task would be durable.
    #[error("cannot open the store {location}")]
    Store {
        /// Where the store is (without its password).
        location: String,
        #[source]
        source: StoreError,
    },

    /// The store the coordinator sent in its welcome is not a store location (the text is
    /// not quoted: it may hold a password).
    #[error("the coordinator sent an unreadable store location")]
    StoreLocation(#[source] eventor_store::LocationError),

    /// Telling the coordinator whether the store it sent opened failed.
    #[error("cannot answer the coordinator's welcome")]
    Welcome(#[source] ProtocolError),

    /// The coordinator refused the agent, speaks another major version, sent something that
    /// is not a handshake reply, or said nothing in time.
    #[error("handshake with the coordinator failed")]
    Handshake(#[source] ProtocolError),

    /// After the handshake, the coordinator's stream went out of step (bytes that are not
    /// a frame, another major version, an oversized frame). Running tasks were finished
    /// and recorded before this was returned.
    #[error("the channel from the coordinator is broken")]
    Stream(#[source] ProtocolError),

    /// Carrying bytes between the coordinator and a surviving agent of the run failed.
    #[error("bridging the coordinator to the surviving agent failed")]
    Bridge(#[source] std::io::Error),

    /// The shutdown token fired before the coordinator accepted the agent.
    #[error("stopped before the coordinator accepted the agent")]
    StoppedBeforeAccept,
}
