//! Progress of a long operation, counted from many threads and reported as (done, total).

use std::sync::atomic::{AtomicU64, Ordering};

/// Where the library reports progress: called with (done, total), from any thread.
pub type Report<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Adds up work done on many threads and reports the running total.
pub struct Counter<'a> {
    done: AtomicU64,
    total: u64,
    report: Report<'a>,
}

impl<'a> Counter<'a> {
    pub fn new(total: u64, report: Report<'a>) -> Self {
        Counter {
            done: AtomicU64::new(0),
            total,
            report,
        }
    }

    /// Records `n` more units done.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        (self.report)(done, self.total);
    }
}
