//! A memory budget: bytes that work in flight may hold at once, taken by
//! charges that give them back when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The budget is spent: nothing was taken; try again once others finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent;

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the memory budget for work in flight is spent")
    }
}

impl std::error::Error for Spent {}

/// Memory for work in flight (request bodies, uploads spooled in memory),
/// across all requests: a ceiling that no number of concurrent requests can
/// push the process past.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    ceiling: u64,
}

impl Budget {
    pub(crate) fn new(ceiling: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            ceiling,
        })
    }

    /// An empty charge that can grow.
    pub(crate) fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Charge {
    /// Takes `n` more bytes, or fails without taking any.
    pub(crate) fn grow(&mut self, n: u64) -> Result<(), Spent> {
        let budget = &self.budget;
        let mut used = budget.used.load(Ordering::Relaxed);
        loop {
            let want = used.saturating_add(n);
            if want > budget.ceiling {
                return Err(Spent);
            }
            match budget
                .used
                .compare_exchange_weak(used, want, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.bytes += n;
        Ok(())
    }

    /// Holds at least `n` bytes in all.
    pub(crate) fn hold(&mut self, n: u64) -> Result<(), Spent> {
        if n > self.bytes {
            self.grow(n - self.bytes)?;
        }
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
