//! `Quiet`: a future adapter that polls its future again, in the same turn,
//! when the future woke its own task while being polled, instead of leaving
//! that wake-up to the runtime.
//!
//! Why: tokio's multi-threaded scheduler treats a task woken during its own
//! poll as a task that yielded. It puts it at the back of the worker's queue
//! and wakes a second, parked worker to share the work, which finds none and
//! parks again. The gRPC server's connection tasks do this whenever a call is
//! answered within the connection's turn: the call hands its answer to h2,
//! which wakes the connection's task (the one running) to write it. A peer
//! serving a fan-out `Select` so spent two to three context switches on it
//! instead of one (`docs/bench/2026-12-05-quiet-connections.md`). Under `Quiet`
//! the wake-up marks the poll as woken, the future is polled once more right
//! away (the write happens), and the runtime never sees it.
//!
//! A wake-up from elsewhere (another task, the I/O driver, another thread)
//! that arrives while the future is being polled is absorbed the same way;
//! one that arrives after the poll ended goes to the task's waker as usual,
//! so no wake-up is lost. Polls in one turn are bounded (`REPOLLS_MAX`, and
//! tokio's cooperative budget): a future that keeps waking itself is handed
//! back to the scheduler like any other, so it cannot hold a worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Most polls of the future in one poll of `Quiet`; past it a pending
/// self-wake goes to the scheduler.
const REPOLLS_MAX: usize = 8;

/// Not being polled: a wake-up goes to the task's waker.
const IDLE: u8 = 0;
/// Being polled, not woken yet.
const POLLING: u8 = 1;
/// Being polled and woken meanwhile: poll again before returning.
const POLLING_WOKEN: u8 = 2;

/// Wraps `future` so that its wake-ups during its own polls do not reschedule
/// its task (the module's doc says why).
pub fn quiet<F: Future>(future: F) -> Quiet<F> {
    Quiet {
        future: Box::pin(future),
        waker: None,
    }
}

/// The future `quiet` returns.
pub struct Quiet<F> {
    future: Pin<Box<F>>,
    /// The waker the future is polled with, and the task waker it forwards to;
    /// replaced when the task's waker changes (a moved task).
    waker: Option<(Arc<QuietWaker>, Waker)>,
}

/// The waker the inner future sees.
struct QuietWaker {
    /// `IDLE`, `POLLING` or `POLLING_WOKEN`.
    state: AtomicU8,
    /// The task's own waker.
    task: Waker,
}

impl QuietWaker {
    /// Records a wake-up during a poll, or forwards it.
    fn notify(&self) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            match s {
                POLLING => match self.state.compare_exchange_weak(
                    POLLING,
                    POLLING_WOKEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => s = now,
                },
                POLLING_WOKEN => return,
                _ => {
                    self.task.wake_by_ref();
                    return;
                }
            }
        }
    }
}

impl Wake for QuietWaker {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

impl<F: Future> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let fresh = match &this.waker {
            Some((_, w)) => !w.will_wake(cx.waker()),
            None => true,
        };
        if fresh {
            let shared = Arc::new(QuietWaker {
                state: AtomicU8::new(IDLE),
                task: cx.waker().clone(),
            });
            this.waker = Some((shared.clone(), Waker::from(shared)));
        }
        let (shared, waker) = this.waker.as_ref().expect("set above");
        let mut inner = Context::from_waker(waker);
        for _ in 0..REPOLLS_MAX {
            shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(v) = this.future.as_mut().poll(&mut inner) {
                shared.state.store(IDLE, Ordering::Release);
                return Poll::Ready(v);
            }
            if shared
                .state
                .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
            // Woken while polled. Out of cooperative budget, another poll would
            // only find tokio's resources refusing: let the scheduler run others.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        shared.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wake-ups that reach the task.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself `n` times, once per poll, then is ready with its poll count.
    struct SelfWaking {
        left: usize,
        polls: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.left == 0 {
                return Poll::Ready(self.polls);
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn poll_once<F: Future>(f: &mut Pin<Box<Quiet<F>>>, task: &Arc<Counter>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        f.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_self_wake_is_polled_again_in_the_same_turn_without_waking_the_task() {
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let mut f = Box::pin(quiet(SelfWaking { left: 3, polls: 0 }));
        assert_eq!(poll_once(&mut f, &task), Poll::Ready(4));
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_goes_back_to_the_scheduler() {
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let mut f = Box::pin(quiet(SelfWaking {
            left: usize::MAX,
            polls: 0,
        }));
        assert_eq!(poll_once(&mut f, &task), Poll::Pending);
        // Woken once, so the scheduler polls it again later.
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(f.future.polls, REPOLLS_MAX);
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let mut f = Box::pin(quiet(rx));
        assert!(poll_once(&mut f, &task).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        tx.send(7).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(matches!(poll_once(&mut f, &task), Poll::Ready(Ok(7))));
    }

    #[test]
    fn a_new_task_waker_replaces_the_old_one() {
        let first = Arc::new(Counter(AtomicUsize::new(0)));
        let second = Arc::new(Counter(AtomicUsize::new(0)));
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let mut f = Box::pin(quiet(rx));
        assert!(poll_once(&mut f, &first).is_pending());
        assert!(poll_once(&mut f, &second).is_pending());
        tx.send(7).unwrap();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    /// Receives from `rx` and, when it must wait, dawdles before returning
    /// `Pending`: a wake-up from the sender then often lands while it is still
    /// being polled, the case `Quiet` must not lose.
    struct SlowReceiver {
        rx: tokio::sync::mpsc::Receiver<usize>,
    }

    impl Future for SlowReceiver {
        type Output = Option<usize>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<usize>> {
            let r = self.rx.poll_recv(cx);
            if r.is_pending() {
                for _ in 0..2_000 {
                    std::hint::spin_loop();
                }
            }
            r
        }
    }

    /// Wake-ups from another thread racing with polls on a multi-threaded
    /// runtime: every message must arrive, none may be lost between a poll's
    /// end and the next wake-up.
    #[test]
    fn wakes_racing_with_polls_are_never_lost() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        const MESSAGES: usize = 20_000;
        let (tx, rx) = tokio::sync::mpsc::channel::<usize>(1);
        let got = rt.spawn(quiet(async move {
            let mut rx = SlowReceiver { rx };
            let mut n = 0;
            while let Some(i) = (&mut rx).await {
                assert_eq!(i, n);
                n += 1;
            }
            n
        }));
        let sender = std::thread::spawn(move || {
            for i in 0..MESSAGES {
                tx.blocking_send(i).unwrap();
            }
        });
        let n = rt
            .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), got).await })
            .expect("the receiving task stalled: a wake-up was lost")
            .unwrap();
        sender.join().unwrap();
        assert_eq!(n, MESSAGES);
    }
}
