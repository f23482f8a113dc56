//! Which sealed slabs are still being flushed, and waiting until they are
//! not: `Db::flush`, `Db::sync` (Buffered and None) and `close` wait here
//! for every slab up to a file id; each flush worker reports here when its
//! slab is published (or its flush failed).
//!
//! One mutex holds both the set of ids and the wakers of the waiting tasks,
//! so "check, else register" in [`FlushTracker::wait`] and "remove, then
//! wake everyone registered" in [`FlushTracker::done`] cannot interleave
//! into a lost wake-up (checked by loom, loom-tests `shutdown.rs`).

use crate::sync::{lock, Mutex};
use std::collections::BTreeSet;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// See the module docs.
#[derive(Debug, Default)]
pub struct FlushTracker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    flushing: BTreeSet<u32>,
    waiters: Vec<Waker>,
    /// The writer is gone: nothing more will be flushed, stop waiting.
    shut: bool,
}

impl FlushTracker {
    pub fn new() -> FlushTracker {
        FlushTracker::default()
    }

    /// Slab `file_id` was handed to a flush worker.
    pub fn started(&self, file_id: u32) {
        lock(&self.state).flushing.insert(file_id);
    }

    /// Slab `file_id` is published (or its flush failed); wakes the waiters
    /// to look again.
    pub fn done(&self, file_id: u32) {
        let waiters = {
            let mut st = lock(&self.state);
            st.flushing.remove(&file_id);
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The writer stopped (closed, dropped or panicked): every wait returns
    /// now; the caller then reports the store's state.
    pub fn shut(&self) {
        let waiters = {
            let mut st = lock(&self.state);
            st.shut = true;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Slabs being flushed.
    pub fn count(&self) -> usize {
        lock(&self.state).flushing.len()
    }

    /// Resolves once no slab with a file id `<= upto` is being flushed
    /// (`true`), or the tracker is shut with some still pending (`false`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits (a waker it left is woken once, harmlessly).
    pub async fn wait(&self, upto: u32) -> bool {
        poll_fn(|cx| {
            let mut st = lock(&self.state);
            if st.flushing.first().is_none_or(|&first| first > upto) {
                return Poll::Ready(true);
            }
            if st.shut {
                return Poll::Ready(false);
            }
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
