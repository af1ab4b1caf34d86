//! Checking a defined flow without running it (`eventor-coord check`): every name resolved
//! and every reference checked, exactly as a run would before it stores anything.

use super::builder::Eventor;
use super::error::EventorError;

impl Eventor {
    /// Compiles the flow as `run` would (events, steps, associations, pools, pinned hosts
    /// against the hosts file) and throws the result away; nothing is opened or stored.
    pub fn validate(&self) -> Result<(), EventorError> {
        self.compile().map(drop)
    }
}
