//! Reconnect delays: exponential from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] with jitter.

use rand::Rng;
use std::time::Duration;

/// First reconnect delay (before jitter).
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff with "equal jitter": each delay is half the
/// exponential step plus a random part of the other half, so agents that lost
/// the server together do not come back in lockstep.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = BACKOFF_MIN
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half_ms = u64::try_from(step.as_millis() / 2).unwrap_or(u64::MAX);
        Duration::from_millis(half_ms + rand::rng().random_range(0..=half_ms))
    }

    /// Back to the shortest delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(50) && first <= BACKOFF_MIN,
            "{first:?}"
        );
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX, "{d:?}");
        }
        let d = b.next_delay();
        assert!(d >= BACKOFF_MAX / 2, "{d:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
