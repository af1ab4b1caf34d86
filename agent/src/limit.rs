//! How many tasks may run at once: one type for every place a limit is spelled (the config
//! file's `-1`, the API's "none", the wire's `0`).

use std::num::NonZeroUsize;

/// At most this many tasks at once, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxConcurrent(Option<NonZeroUsize>);

impl MaxConcurrent {
    /// No limit.
    pub const UNLIMITED: MaxConcurrent = MaxConcurrent(None);

    /// At most `n` at once; `0` means no limit (as the wire and the original say).
    pub fn at_most(n: usize) -> MaxConcurrent {
        MaxConcurrent(NonZeroUsize::new(n))
    }

    /// The config file's number: below 1 means no limit, as in the original.
    pub fn from_config(n: i64) -> MaxConcurrent {
        MaxConcurrent::at_most(usize::try_from(n).unwrap_or(0))
    }

    /// The limit as the wire carries it: `0` for none.
    pub fn to_wire(self) -> u32 {
        self.get()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The limit from the wire (`0`: none).
    pub fn from_wire(n: u32) -> MaxConcurrent {
        MaxConcurrent::at_most(n as usize)
    }

    /// The number, if there is a limit.
    pub fn get(self) -> Option<usize> {
        self.0.map(NonZeroUsize::get)
    }

    /// Whether one more may start while `running` run.
    pub fn allows(self, running: usize) -> bool {
        self.get().is_none_or(|n| running < n)
    }

    /// The tighter of two limits.
    pub fn min(self, other: MaxConcurrent) -> MaxConcurrent {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => MaxConcurrent::at_most(a.min(b)),
            (a, b) => MaxConcurrent::at_most(a.or(b).unwrap_or(0)),
        }
    }
}
