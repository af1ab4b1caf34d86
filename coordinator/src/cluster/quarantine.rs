//! Quarantine of misbehaving hosts, as data: a host with `failures` host-class failures
//! within `within` gets no new task for `cooldown`; one that fails again right after (its
//! next host-class failure within one cool-down of the end) goes back in at once for twice
//! as long.
//!
//! Host-class failures are what says the host, not the task, is at fault: its link lost,
//! its agent failing to start when it is brought back, a task that could not start there
//! (class `start`: no space, fork refused, and also a command not found, which the wire
//! cannot tell apart from the host's own trouble).
//!
//! No IO and no clock: the cluster's core (`core.rs`) feeds each host's [`Health`] the
//! failures with the time it was handed, and lifts a quarantine at its end.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How many failures quarantine a host, over what window, and for how long at first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineRule {
    pub failures: u32,
    pub within: Duration,
    pub cooldown: Duration,
}

impl Default for QuarantineRule {
    fn default() -> Self {
        QuarantineRule {
            failures: 3,
            within: Duration::from_secs(10 * 60),
            cooldown: Duration::from_secs(5 * 60),
        }
    }
}

/// Each host's rule: its own (`quarantine:` under the host), else the hosts file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineRules {
    pub default: QuarantineRule,
    pub hosts: HashMap<Arc<str>, QuarantineRule>,
}

impl QuarantineRules {
    /// `host`'s rule.
    pub fn of(&self, host: &str) -> QuarantineRule {
        self.hosts.get(host).copied().unwrap_or(self.default)
    }
}

/// How many of a host's last failures are kept to be shown.
pub const FAILURES_SHOWN: usize = 5;

/// One host-class failure: when (the core's time) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Duration,
    pub reason: String,
}

/// A host's quarantine under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub until: Duration,
    pub cooldown: Duration,
    pub reason: String,
}

/// What one host's failures have made of it.
#[derive(Debug, Default)]
pub struct Health {
    /// The failures counted towards the next quarantine (since the last one began).
    window: VecDeque<Duration>,
    /// The last failures, newest last, for the reports.
    last: VecDeque<Failure>,
    quarantine: Option<Quarantine>,
    /// The quarantine that ended last: its end and its cool-down, while a failure soon
    /// after it would double the cool-down.
    ended: Option<(Duration, Duration)>,
}

impl Health {
    /// The quarantine under way, if any.
    pub fn quarantine(&self) -> Option<&Quarantine> {
        self.quarantine.as_ref()
    }

    /// The last failures, oldest first.
    pub fn last_failures(&self) -> impl Iterator<Item = &Failure> {
        self.last.iter()
    }

    /// Records a host-class failure at `now`; answers the quarantine it starts, if any.
    pub fn fail(
        &mut self,
        rule: &QuarantineRule,
        now: Duration,
        reason: &str,
    ) -> Option<&Quarantine> {
        self.last.push_back(Failure {
            at: now,
            reason: reason.to_string(),
        });
        if self.last.len() > FAILURES_SHOWN {
            self.last.pop_front();
        }
        if self.quarantine.is_some() {
            return None; // in quarantine already: shown, not counted
        }
        if let Some((end, cooldown)) = self.ended.take() {
            if now <= end + cooldown {
                let longer = cooldown.checked_mul(2).unwrap_or(cooldown);
                let why = format!(
                    "failed again within {} of its last quarantine: {reason}",
                    human(cooldown)
                );
                return Some(self.begin(now, longer, why));
            }
        }
        self.window.push_back(now);
        while self
            .window
            .front()
            .is_some_and(|at| *at + rule.within < now)
        {
            self.window.pop_front();
        }
        if self.window.len() < rule.failures.max(1) as usize {
            return None;
        }
        let count = match self.window.len() {
            1 => "1 host failure".to_string(),
            n => format!("{n} host failures"),
        };
        let why = format!("{count} within {}, the last: {reason}", human(rule.within));
        Some(self.begin(now, rule.cooldown, why))
    }

    fn begin(&mut self, now: Duration, cooldown: Duration, reason: String) -> &Quarantine {
        self.window.clear();
        self.quarantine.insert(Quarantine {
            until: now + cooldown,
            cooldown,
            reason,
        })
    }

    /// Ends the quarantine if its time has come; answers whether it did.
    pub fn lift_due(&mut self, now: Duration) -> bool {
        let Some(q) = self.quarantine.take_if(|q| q.until <= now) else {
            return false;
        };
        self.ended = Some((q.until, q.cooldown));
        true
    }
}

/// A duration as people write it (`5m`, `1h 30m`).
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let rule = QuarantineRule::default();
        let mut health = Health::default();
        assert!(health.fail(&rule, secs(0), "lost").is_none());
        assert!(health.fail(&rule, secs(100), "lost").is_none());
        // The first is 601 s old by now: two in the window.
        assert!(health.fail(&rule, secs(601), "lost").is_none());
        let q = health.fail(&rule, secs(602), "lost").cloned().unwrap();
        assert_eq!(q.until, secs(602 + 300));
        assert!(
            q.reason.starts_with("3 host failures within 10m"),
            "{}",
            q.reason
        );
    }

    #[test]
    fn a_failure_soon_after_the_end_doubles_the_cooldown_and_a_late_one_does_not() {
        let rule = QuarantineRule {
            failures: 1,
            within: secs(60),
            cooldown: secs(10),
        };
        let mut health = Health::default();
        assert_eq!(health.fail(&rule, secs(0), "x").unwrap().until, secs(10));
        assert!(!health.lift_due(secs(9)));
        assert!(health.lift_due(secs(10)));
        assert_eq!(health.fail(&rule, secs(20), "x").unwrap().until, secs(40));
        assert!(health.lift_due(secs(40)));
        // 40 s after a 20 s cool-down: back to the rule's.
        assert_eq!(
            health.fail(&rule, secs(61), "x").unwrap().cooldown,
            secs(10)
        );
    }
}
