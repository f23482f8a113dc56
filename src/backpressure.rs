//! The sealed-slab budget (DESIGN §2 "Backpressure"): at most
//! `max_sealed_slabs` sealed slabs wait for a flush. The writer task awaits
//! a [`Permit`] before it queues a slab; the flush worker (an OS thread)
//! drops it once the slab is published, which wakes the writer.
//!
//! One lock-free counter and one waker: there is only ever one waiter (the
//! writer task), so an `AtomicWaker` is enough, and the whole protocol is
//! small enough for loom to check every interleaving (loom-tests,
//! `backpressure.rs`). The orderings: the count is only changed by
//! read-modify-write operations (so no permit is lost or made twice); the
//! waker is registered *before* the count is checked a second time, so a
//! release that lands between the first check and the registration is seen
//! by the second check, and one that lands after the registration finds the
//! waker (`AtomicWaker` orders `register` against `wake`).

use crate::sync::{register_waker, Arc, AtomicUsize, AtomicWaker, Ordering};
use std::future::poll_fn;
use std::task::{Context, Poll};

/// See the module docs.
#[derive(Debug)]
pub struct SealedBudget {
    available: AtomicUsize,
    waker: AtomicWaker,
}

/// One sealed slab's place in the budget; returned on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<SealedBudget>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.available.fetch_add(1, Ordering::AcqRel);
        self.budget.waker.wake();
    }
}

impl SealedBudget {
    /// A budget of `n` permits.
    pub fn new(n: usize) -> Arc<SealedBudget> {
        Arc::new(SealedBudget {
            available: AtomicUsize::new(n),
            waker: AtomicWaker::new(),
        })
    }

    /// Permits not handed out.
    #[cfg_attr(not(any(loom, test)), allow(dead_code))]
    pub fn available(&self) -> usize {
        self.available.load(Ordering::Acquire)
    }

    fn try_take(&self) -> bool {
        let mut cur = self.available.load(Ordering::Acquire);
        while cur > 0 {
            match self.available.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn poll_acquire(budget: &Arc<SealedBudget>, cx: &mut Context<'_>) -> Poll<Permit> {
        let permit = || Permit {
            budget: budget.clone(),
        };
        if budget.try_take() {
            return Poll::Ready(permit());
        }
        register_waker(&budget.waker, cx.waker());
        // A permit returned between the failed take and the registration
        // woke nobody: look again.
        if budget.try_take() {
            return Poll::Ready(permit());
        }
        Poll::Pending
    }

    /// Waits for a permit of `budget`. One waiter at a time (the writer
    /// task).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a permit is taken only in the poll that returns it, so
    /// a dropped wait holds none.
    pub async fn acquire(budget: &Arc<SealedBudget>) -> Permit {
        poll_fn(|cx| SealedBudget::poll_acquire(budget, cx)).await
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_returned_permit() {
        let budget = SealedBudget::new(1);
        let first = SealedBudget::acquire(&budget).await;
        assert_eq!(budget.available(), 0);
        let mut second = tokio_test::task::spawn(SealedBudget::acquire(&budget));
        assert!(second.poll().is_pending());
        drop(first);
        assert!(second.is_woken());
        let second = match second.poll() {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("a returned permit must be taken"),
        };
        drop(second);
        assert_eq!(budget.available(), 1);
    }
}
