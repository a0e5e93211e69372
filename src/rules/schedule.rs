//! When a rule group evaluates: Prometheus's `Group.run` schedule. The first
//! evaluation is one interval after the group's aligned time before now
//! (`Group::eval_timestamp`); after it a ticker runs at the interval, and a tick
//! that comes while the group is still evaluating waits, while any further ones
//! are dropped (as Go's `time.Ticker` drops them). At each tick the evaluation
//! timestamp moves on by one interval plus the intervals missed, which are
//! counted in `prometheus_rule_group_iterations_missed_total`.
//!
//! Wall time comes from a `Clock` that follows tokio's clock, so tests drive the
//! schedule with tokio's paused clock.

use crate::clock::Clock;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// One group's evaluation times.
pub struct Schedule {
    clock: Clock,
    interval_ms: i64,
    /// The timestamp of the evaluation last returned (or, before the first, the
    /// first one).
    eval_ms: i64,
    ticker: Option<Interval>,
}

/// One scheduled evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The evaluation timestamp (Unix ms), aligned to the group's phase.
    pub ts_ms: i64,
    /// Intervals skipped before this one because the group fell behind.
    pub missed: u64,
}

impl Schedule {
    /// The schedule of a group whose aligned time at or before now is
    /// `aligned_ms` (from `Group::eval_timestamp`).
    pub fn new(clock: Clock, interval_ms: i64, aligned_ms: i64) -> Schedule {
        let interval_ms = interval_ms.max(1);
        Schedule {
            clock,
            interval_ms,
            eval_ms: aligned_ms + interval_ms,
            ticker: None,
        }
    }

    /// Waits for the next evaluation and returns it.
    pub async fn next(&mut self) -> Tick {
        let period = std::time::Duration::from_millis(self.interval_ms as u64);
        match &mut self.ticker {
            None => {
                // The first evaluation: wait until its time, then start the ticker.
                tokio::time::sleep_until(self.clock.instant_at_ms(self.eval_ms)).await;
                let mut t = tokio::time::interval_at(Instant::now() + period, period);
                t.set_missed_tick_behavior(MissedTickBehavior::Skip);
                self.ticker = Some(t);
                Tick {
                    ts_ms: self.eval_ms,
                    missed: 0,
                }
            }
            Some(t) => {
                t.tick().await;
                let since = self.clock.now_ms() - self.eval_ms;
                let missed = (since / self.interval_ms - 1).max(0);
                self.eval_ms += (missed + 1) * self.interval_ms;
                Tick {
                    ts_ms: self.eval_ms,
                    missed: missed as u64,
                }
            }
        }
    }
}
