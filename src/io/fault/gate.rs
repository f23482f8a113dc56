//! Holding an operation part-way, so a test can look at what the rest of
//! the store does meanwhile (for example other writes while an XL value's
//! file waits to be renamed into place), with no timing in the test.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Renames of files whose name ends with a suffix wait here until released.
#[derive(Debug, Default)]
pub(super) struct RenameGate {
    state: Mutex<GateState>,
    opened: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// While set, renames of matching files wait.
    suffix: Option<String>,
    /// Renames waiting now.
    waiting: usize,
}

fn lock(m: &Mutex<GateState>) -> MutexGuard<'_, GateState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RenameGate {
    pub fn hold(&self, suffix: &str) {
        lock(&self.state).suffix = Some(suffix.to_owned());
    }

    pub fn release(&self) {
        lock(&self.state).suffix = None;
        self.opened.notify_all();
    }

    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }

    /// Blocks the calling (blocking-pool) thread while renames of `from`
    /// are held.
    pub fn pass(&self, from: &Path) {
        let held = |st: &GateState| {
            st.suffix
                .as_deref()
                .is_some_and(|s| from.to_string_lossy().ends_with(s))
        };
        let mut st = lock(&self.state);
        if !held(&st) {
            return;
        }
        st.waiting += 1;
        while held(&st) {
            st = self.opened.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.waiting -= 1;
    }
}
