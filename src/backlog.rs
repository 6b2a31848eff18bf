//! Backpressure between an operator that can refuse records downstream (an asynchronous sink's
//! bounded queue) and the sources feeding it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many records an operator holds because the next stage (an asynchronous sink's bounded
/// queue) refused them. Shared by the operator, which sets it, and the sources feeding it, which
/// stop reading while it is not zero: so a slow sink slows the source instead of records piling
/// up without bound or being dropped.
#[derive(Clone, Debug, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// Adds `n` held records.
    pub fn hold(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Removes `n` records that have been handed on.
    pub fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// How many records are held.
    pub fn held(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}
