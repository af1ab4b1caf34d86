//! Failures by kind: the class of a task's failed end (`exit:3`, `signal:SIGKILL`,
//! `timeout`, `host_lost`, `start`, `store`, `interrupted`), which the store records, the
//! reports show and a step's `retry_on` chooses by.
//!
//! The class travels on no wire: an agent's end is classed where it is read, from what
//! every protocol version already carries (its status, exit code and error), so an older
//! agent's ends are classed like a new one's. Ends made on the prime (a lost host, an
//! interrupt) carry their class from where they are made (`TaskEnd::host_lost`,
//! `TaskEnd::interrupted`); `TaskEnd::failure_class` reads the rest (in `messages.rs`,
//! which this module does not know).

use std::fmt;
use std::str::FromStr;

/// The words an agent's end starts with when its command could not be started (its
/// spawn failed: no space, fork refused, no such directory).
pub const CANNOT_START: &str = "cannot start ";
/// The words an agent's end starts with when its command died of a signal.
pub const KILLED_BY_SIGNAL: &str = "killed by signal ";
/// The words an agent's end starts with when its lease ran out with no prime.
pub const NO_COORDINATOR: &str = "no coordinator for ";

/// The exit code of a shell that found no such command (POSIX).
pub const EXIT_NOT_FOUND: i32 = 127;
/// The exit code of a shell that found the command but could not execute it (POSIX).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// What kind of failure ended a task, without its detail: what `retry_on` names and
/// `/metrics` counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The command exited with a non-zero code (or a closure returned an error).
    Exit,
    /// The command died of a signal.
    Signal,
    /// Its time limit passed.
    Timeout,
    /// Its host was lost (or could not be reached) while it ran or waited to.
    HostLost,
    /// It could not start: not found, not executable, no space, fork refused.
    Start,
    /// Its end could not be recorded. No end is made so today (an agent that cannot record
    /// an end hands it to the prime, and a prime whose store fails ends the run), but
    /// `retry_on` and the reports know the word.
    Store,
    /// The run was interrupted or stopped it.
    Interrupted,
}

impl FailureKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Exit,
        FailureKind::Signal,
        FailureKind::Timeout,
        FailureKind::HostLost,
        FailureKind::Start,
        FailureKind::Store,
        FailureKind::Interrupted,
    ];

    /// Its one word, as `retry_on`, the store and `/metrics` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Exit => "exit",
            FailureKind::Signal => "signal",
            FailureKind::Timeout => "timeout",
            FailureKind::HostLost => "host_lost",
            FailureKind::Start => "start",
            FailureKind::Store => "store",
            FailureKind::Interrupted => "interrupted",
        }
    }

    /// The kind spelled `word`, if any.
    pub fn parse(word: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a failed end: its kind with the detail that matters (the exit code, the
/// signal's name). Spelled `exit:3`, `signal:SIGKILL`, or the kind's word alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// A non-zero exit with its code; without one, a closure that returned an error.
    Exit(Option<i32>),
    Signal(String),
    Timeout,
    HostLost,
    Start,
    Store,
    Interrupted,
}

impl FailureClass {
    pub fn kind(&self) -> FailureKind {
        match self {
            FailureClass::Exit(_) => FailureKind::Exit,
            FailureClass::Signal(_) => FailureKind::Signal,
            FailureClass::Timeout => FailureKind::Timeout,
            FailureClass::HostLost => FailureKind::HostLost,
            FailureClass::Start => FailureKind::Start,
            FailureClass::Store => FailureKind::Store,
            FailureClass::Interrupted => FailureKind::Interrupted,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::Exit(Some(code)) => write!(f, "exit:{code}"),
            FailureClass::Signal(name) => write!(f, "signal:{name}"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// A stored class that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure class `{0}`")]
pub struct UnknownClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownClass;

    fn from_str(text: &str) -> Result<FailureClass, UnknownClass> {
        let unknown = || UnknownClass(text.to_string());
        if let Some(code) = text.strip_prefix("exit:") {
            return code
                .parse()
                .map(|c| FailureClass::Exit(Some(c)))
                .map_err(|_| unknown());
        }
        if let Some(name) = text.strip_prefix("signal:") {
            return Ok(FailureClass::Signal(name.to_string()));
        }
        Ok(match FailureKind::parse(text).ok_or_else(unknown)? {
            FailureKind::Timeout => FailureClass::Timeout,
            FailureKind::HostLost => FailureClass::HostLost,
            FailureKind::Start => FailureClass::Start,
            FailureKind::Store => FailureClass::Store,
            FailureKind::Interrupted => FailureClass::Interrupted,
            FailureKind::Exit => FailureClass::Exit(None),
            FailureKind::Signal => return Err(unknown()),
        })
    }
}

/// The name of the Linux signal numbered `number` (`SIGKILL`), or `SIG` and the number for
/// one without a common name.
pub fn signal_name(number: &str) -> String {
    // Only the leading digits: the error may go on (`; last stderr: …`).
    let digits: &str = {
        let number = number.trim_start();
        let end = number
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(number.len());
        &number[..end]
    };
    let name = match digits.parse::<i32>() {
        Ok(1) => "SIGHUP",
        Ok(2) => "SIGINT",
        Ok(3) => "SIGQUIT",
        Ok(4) => "SIGILL",
        Ok(5) => "SIGTRAP",
        Ok(6) => "SIGABRT",
        Ok(7) => "SIGBUS",
        Ok(8) => "SIGFPE",
        Ok(9) => "SIGKILL",
        Ok(10) => "SIGUSR1",
        Ok(11) => "SIGSEGV",
        Ok(12) => "SIGUSR2",
        Ok(13) => "SIGPIPE",
        Ok(14) => "SIGALRM",
        Ok(15) => "SIGTERM",
        Ok(24) => "SIGXCPU",
        Ok(25) => "SIGXFSZ",
        _ => return format!("SIG{digits}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_reads_back_as_it_is_written() {
        for text in [
            "exit",
            "exit:75",
            "exit:-1",
            "signal:SIGTERM",
            "timeout",
            "host_lost",
            "start",
            "store",
            "interrupted",
        ] {
            assert_eq!(text.parse::<FailureClass>().unwrap().to_string(), text);
        }
        for bad in ["exit:x", "signal", "lost", ""] {
            assert!(bad.parse::<FailureClass>().is_err(), "{bad}");
        }
    }
}
