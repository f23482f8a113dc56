//! Model 3: backpressure with `max_sealed_slabs = 1`. The writer (awaiting
//! in `block_on`, as the writer task does) seals three slabs; a flush worker
//! thread publishes each one and drops its permit. The writer must wait
//! while the worker holds the only permit and resume when it is returned:
//! no lost wake-up (loom reports a deadlock if the writer sleeps forever),
//! never two slabs out at once, every permit back at the end.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{mpsc, Arc};
use loom::thread;
use silt::backpressure::SealedBudget;

#[test]
fn writer_waits_for_the_flush_and_resumes() {
    loom::model(|| {
        let budget = SealedBudget::new(1);
        let out = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let worker = {
            let out = out.clone();
            thread::spawn(move || {
                let mut flushed = 0;
                // `None` ends the run (loom's channel has no disconnect).
                while let Some(permit) = rx.recv().unwrap() {
                    // "Publishing" the slab, then returning its permit.
                    out.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                    flushed += 1;
                }
                flushed
            })
        };
        loom::future::block_on(async {
            for _ in 0..3 {
                let permit = SealedBudget::acquire(&budget).await;
                let now = out.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= 1, "{now} sealed slabs out with a budget of 1");
                tx.send(Some(permit)).unwrap();
            }
        });
        tx.send(None).unwrap();
        assert_eq!(worker.join().unwrap(), 3);
        assert_eq!(budget.available(), 1, "a permit was lost");
    });
}
