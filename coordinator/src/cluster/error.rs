//! Why a run could not reach its cluster: hosts that did not come up, or a program that
//! could not make itself their agent.

use super::link::LinkError;
use super::local_agent::LocalAgentError;

/// Why a run's cluster could not be reached. Nothing ran on it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// These hosts could not be reached, each with its own link error (in the order of the
    /// hosts). An error has one `source`, and here there are several, so the message lists
    /// every host's chain (`; ` between hosts) and the errors stay whole in the variant.
    #[error("{}", chains(.0))]
    Unreachable(Vec<LinkError>),
    /// A program serving as its own agent could not find its own binary to start there.
    #[error("cannot find this program's path")]
    ProgramPath(#[source] std::io::Error),
    /// The program to install on `deploy: auto` hosts could not be read.
    #[error(transparent)]
    Program(#[from] LocalAgentError),
    /// The store's TLS files could not be read to hand them to the agents.
    #[error("cannot set up the store's TLS for the agents")]
    StoreTls(#[source] eventor_store::TlsSetupError),
}

impl ClusterError {
    /// Whether a host's set-up is wrong (an unknown host, a key, a host key, a refused
    /// login): the user's input to fix, exit 2.
    pub fn is_set_up(&self) -> bool {
        matches!(self, ClusterError::Unreachable(failures) if failures.iter().any(LinkError::is_set_up))
    }
}

/// Each host's error with its causes, as one line.
fn chains(errors: &[LinkError]) -> String {
    let each: Vec<String> = errors
        .iter()
        .map(|e| eventor_agent::util::error_chain(e))
        .collect();
    each.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_hosts_are_each_named_with_their_causes() {
        let unknown = |host: &str| LinkError::UnknownHost { host: host.into() };
        let cancelled = |host: &str| LinkError::Cancelled { host: host.into() };
        let error = ClusterError::Unreachable(vec![unknown("node9"), cancelled("node2")]);
        let (node9, node2) = (unknown("node9"), cancelled("node2"));
        assert_eq!(error.to_string(), format!("{node9}; {node2}"));
        let source = std::error::Error::source(&error);
        assert!(source.is_none(), "no cause printed twice");
    }
}
