//! Model 5: shutdown. The writer has sealed two slabs (each holding
//! acknowledged writes) and queued them for a flush worker; `close` then
//! waits for every sealed slab to be flushed while a `flush()` caller waits
//! for the first one. Over the real backpressure budget and flush tracker:
//! both waits return (nothing hangs: loom reports a deadlock otherwise), and
//! each returns only after the slabs it waits for are published.
//!
//! What this does not cover: callers whose writes were not yet acknowledged
//! get `Error::Closed` because the writer task drops their reply channels
//! when it stops; that is tokio's channel semantics, tested in tests/api.rs.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{mpsc, Arc};
use loom::thread;
use silt::backpressure::SealedBudget;
use silt::flushing::FlushTracker;

#[test]
fn close_waits_for_every_sealed_slab_and_never_hangs() {
    loom::model(|| {
        let budget = SealedBudget::new(2);
        let tracker = Arc::new(FlushTracker::new());
        let published: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
        let (tx, rx) = mpsc::channel();

        let worker = {
            let (tracker, published) = (tracker.clone(), published.clone());
            thread::spawn(move || {
                while let Some((id, permit)) = rx.recv().unwrap() {
                    let id: u32 = id;
                    published[id as usize].store(true, Ordering::Release);
                    drop(permit);
                    tracker.done(id);
                }
            })
        };

        // The writer seals slabs 1 and 2 (as `send_to_flush` does).
        loom::future::block_on(async {
            for id in 1..=2u32 {
                let permit = SealedBudget::acquire(&budget).await;
                tracker.started(id);
                tx.send(Some((id, permit))).unwrap();
            }
        });

        // A `flush()` caller that sealed up to slab 1.
        let flusher = {
            let (tracker, published) = (tracker.clone(), published.clone());
            thread::spawn(move || {
                assert!(loom::future::block_on(tracker.wait(1)));
                assert!(published[1].load(Ordering::Acquire), "flush returned early");
            })
        };

        // `close`: wait for everything sealed, then stop the worker.
        assert!(loom::future::block_on(tracker.wait(2)));
        assert!(
            published[1].load(Ordering::Acquire) && published[2].load(Ordering::Acquire),
            "close returned before every sealed slab was flushed"
        );
        tx.send(None).unwrap();
        worker.join().unwrap();
        flusher.join().unwrap();
        assert_eq!(tracker.count(), 0);
        assert_eq!(budget.available(), 2);
    });
}
