//! Whether the database counts as down: one small handle shared by the recorder (which spools
//! events while it is), the drainer (whose probe sets it back), and the answer webhook (which
//! routes from memory at once while it is, instead of waiting for the database on a caller's
//! time).

use std::sync::atomic::{AtomicBool, Ordering};

/// The database counts as down from a failed operation until the drainer's probe reaches it
/// again (or a write succeeds): time alone never sends callers back to a database that failed.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    down: AtomicBool,
}

impl DatabaseHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the database counts as down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Counts the database as down until the drainer's probe reaches it.
    pub fn mark_down(&self) {
        self.down.store(true, Ordering::Relaxed);
    }

    pub fn mark_up(&self) {
        self.down.store(false, Ordering::Relaxed);
    }
}
