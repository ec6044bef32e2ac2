//! The retry backoff after a failure, and the wait as the status says it.

use std::time::Duration;

/// Longest retry delay (T-21).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// T-21: the wait after the `attempts`-th failure: `base` × 2^(attempts−1), at most an hour. Failed
/// registry reads (M-01) and downloads retry on the same schedule.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 30) - 1).unwrap_or(0);
    base.saturating_mul(1u32 << exp.min(20)).min(MAX_BACKOFF)
}

/// A wait as a person says it: `45s`, `2m`, `1m30s`, `1h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}
