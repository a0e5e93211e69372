//! The wall clock the rule manager, the notifier and the built-in Alertmanager
//! read: wall time derived from tokio's clock, so that a test which pauses and
//! advances tokio time (`#[tokio::test(start_paused = true)]`) moves wall time
//! along with its timers.

use jiff::{SignedDuration, Timestamp};

/// Where "now" comes from: a wall time fixed at one instant of tokio's clock,
/// moving as tokio's clock moves.
#[derive(Debug, Clone)]
pub struct Clock {
    /// Wall time when `start` was taken.
    base: Timestamp,
    /// tokio's instant at `base`.
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock that starts at the system time now.
    pub fn system() -> Clock {
        Clock::starting_at(Timestamp::now())
    }

    /// A clock that reads `base` at this instant of tokio's clock.
    pub fn starting_at(base: Timestamp) -> Clock {
        Clock {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    /// A clock that reads `ms` (Unix milliseconds) at this instant of tokio's
    /// clock; out-of-range values read as the Unix epoch.
    pub fn starting_at_ms(ms: i64) -> Clock {
        Clock::starting_at(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    /// The current wall time.
    pub fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }

    /// The current wall time in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// tokio's instant at which this clock reads `ms` (Unix milliseconds); an
    /// instant in the past (clamped to now) when `ms` has already passed.
    pub fn instant_at_ms(&self, ms: i64) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let wait = ms.saturating_sub(self.now_ms()).max(0) as u64;
        now + std::time::Duration::from_millis(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let c = Clock::starting_at_ms(1_000_000);
        assert_eq!(c.now_ms(), 1_000_000);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(c.now_ms(), 1_001_500);
        let at = c.instant_at_ms(1_002_000);
        tokio::time::sleep_until(at).await;
        assert_eq!(c.now_ms(), 1_002_000);
    }
}
