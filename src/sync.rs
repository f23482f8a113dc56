//! The only place that names std or loom synchronisation types.
//!
//! Code that loom models (the slab watermark, the registry swap) imports its
//! atomics and locks from here, so `RUSTFLAGS="--cfg loom"` swaps in loom's
//! versions without touching that code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, RwLock};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, RwLock};

#[cfg(not(loom))]
pub(crate) use futures::task::AtomicWaker;
/// A single-waiter waker slot (the backpressure budget's).
#[cfg(loom)]
pub(crate) use loom::future::AtomicWaker;

/// Registers `waker` in `slot` (the two `AtomicWaker`s spell it differently).
pub(crate) fn register_waker(slot: &AtomicWaker, waker: &std::task::Waker) {
    #[cfg(loom)]
    slot.register_by_ref(waker);
    #[cfg(not(loom))]
    slot.register(waker);
}

/// Locks a mutex, ignoring poisoning: every critical section in silt leaves
/// its data consistent before anything that can panic, so a poisoned lock
/// holds valid data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Read-locks an `RwLock`, ignoring poisoning (see [`lock`]).
pub(crate) fn read<T>(m: &RwLock<T>) -> impl std::ops::Deref<Target = T> + '_ {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Write-locks an `RwLock`, ignoring poisoning (see [`lock`]).
pub(crate) fn write<T>(m: &RwLock<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
