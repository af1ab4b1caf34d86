//! Times and durations of the store (microseconds since the epoch) as people read them.

use std::time::{Duration, UNIX_EPOCH};

use eventor_store::Micros;

/// RFC 3339 in UTC, to the second: `2026-12-01T04:39:58Z`.
pub fn timestamp(at: Micros) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// RFC 3339 in UTC with microseconds (for JSON).
pub fn timestamp_micros(at: Micros) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_micros(at).to_string()
}

/// A span between two times, short: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn span(from: Micros, to: Micros) -> String {
    let micros = to.saturating_sub(from).max(0);
    let ms = micros / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}
