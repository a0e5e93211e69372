//! The async runtime both Raft type configurations run on: openraft's tokio
//! runtime, except that the ticks of every Raft of the process fall on common
//! instants.
//!
//! openraft runs a tick task per Raft that sleeps one tick (1.5 heartbeat
//! intervals) at a time, and wakes even while its ticks are switched off (a WAL
//! group led by its owner, `WalGroup::set_timers`). A node is a voter of the
//! meta group and of RF WAL groups, so it had RF + 1 such tasks, each waking the
//! process at its own phase. Here a tick's deadline is moved to the nearest whole
//! multiple of its own length since one instant of the process (`EPOCH`): ticks
//! of the same length (the meta group's and the WAL groups' at the defaults)
//! all fall on the same instants and one wake-up of the process serves them.
//! A tick moves by at most half its length, and only its first one does: once
//! on the grid it stays there. The phase is the process's own, so the nodes of a
//! cluster still tick at unrelated instants and their elections stay spread.
//!
//! openraft 0.9 calls `sleep_until` only in its tick loop; its other waits
//! (`sleep`, `timeout`) are tokio's own, unchanged.

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// Waits shorter than this are left where they are: they are not ticks worth
/// lining up (a WAL group's heartbeat interval may be as short as 10 ms).
const ALIGN_FROM: Duration = Duration::from_millis(50);

/// The instant every tick grid of the process starts from.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// `deadline`, `length` from `now`, moved to the nearest whole multiple of
/// `length` since `epoch` (`length` rounded to milliseconds: the tick loop asks
/// for "now + interval" a moment after it read the clock).
fn aligned(epoch: Instant, now: Instant, deadline: Instant) -> Instant {
    let length = deadline.saturating_duration_since(now);
    let grid = (length.as_micros() as u64).div_ceil(1000);
    if length < ALIGN_FROM || deadline < epoch {
        return deadline;
    }
    let since = deadline.duration_since(epoch).as_millis() as u64;
    let slots = (since + grid / 2) / grid;
    epoch + Duration::from_millis(slots * grid)
}

/// openraft's `TokioRuntime` with ticks on common instants (see the module).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickAlignedRuntime;

impl AsyncRuntime for TickAlignedRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <TokioRuntime as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        let now = Instant::now();
        let epoch = *EPOCH.get_or_init(|| now);
        TokioRuntime::sleep_until(aligned(epoch, now, deadline))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        TokioRuntime::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::aligned;
    use std::time::Duration;
    use tokio::time::Instant;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ticks_of_one_length_meet_on_its_multiples_and_stay_there() {
        let epoch = Instant::now();
        // Two tick loops of 600 ms started at unrelated instants.
        let (a, b) = (epoch + ms(130), epoch + ms(410));
        let a1 = aligned(epoch, a, a + ms(600));
        let b1 = aligned(epoch, b, b + ms(600));
        assert_eq!(a1, epoch + ms(600), "730 ms goes back to 600");
        assert_eq!(b1, epoch + ms(1200), "1010 ms goes on to 1200");
        // Woken a little late, the next tick is the next multiple: no drift.
        let a2 = aligned(epoch, a1 + ms(3), a1 + ms(3) + ms(600));
        assert_eq!(a2, epoch + ms(1200), "the two loops now tick together");
        let a3 = aligned(epoch, a2 + ms(1), a2 + ms(601));
        let b2 = aligned(epoch, b1 + ms(2), b1 + ms(602));
        assert_eq!((a3, b2), (epoch + ms(1800), epoch + ms(1800)));
        // Asked for a hair under the interval (the loop read the clock first).
        let b0 = b1 + ms(2);
        let b2_short = aligned(epoch, b0 + Duration::from_micros(20), b0 + ms(600));
        assert_eq!(b2_short, epoch + ms(1800));
    }

    #[test]
    fn short_waits_and_waits_before_the_epoch_are_left_alone() {
        let epoch = Instant::now() + ms(1000);
        let now = epoch + ms(7);
        assert_eq!(aligned(epoch, now, now + ms(15)), now + ms(15));
        let early = epoch - ms(500);
        assert_eq!(aligned(epoch, early, early + ms(300)), early + ms(300));
    }

    #[test]
    fn a_tick_moves_by_at_most_half_its_length() {
        let epoch = Instant::now();
        for start in (0..3000).step_by(37) {
            let now = epoch + ms(start);
            for len in [50, 60, 225, 600, 1500] {
                let want = now + ms(len);
                let got = aligned(epoch, now, want);
                let moved = if got > want { got - want } else { want - got };
                assert!(moved <= ms(len / 2), "{start} + {len}: moved {moved:?}");
                assert!(got > now, "{start} + {len}: not in the future");
            }
        }
    }
}
