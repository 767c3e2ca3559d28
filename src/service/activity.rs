//! What is running: requests and background jobs in flight, and when the
//! last ended. The server's idle exit and SIGTERM drain, and commands that
//! ask whether a sync is under way, read it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::Timer;

/// Counts requests and background jobs in flight, and when the last ended.
pub(crate) struct Activity {
    requests: AtomicUsize,
    jobs: AtomicUsize,
    last_request_end: Mutex<Instant>,
    last_end: Mutex<Instant>,
    /// Closed when the server stops: what only waits (a throttled login)
    /// gives up instead of holding the exit back.
    stopping: (Sender<()>, Receiver<()>),
}

/// Held while a request or job runs.
pub(crate) struct ActivityGuard {
    activity: Arc<Activity>,
    job: bool,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            requests: AtomicUsize::new(0),
            jobs: AtomicUsize::new(0),
            last_request_end: Mutex::new(Instant::now()),
            last_end: Mutex::new(Instant::now()),
            stopping: smol::channel::bounded(1),
        }
    }

    /// Says the server is stopping (see [`Activity::stopped`]).
    pub(crate) fn stop(&self) {
        self.stopping.0.close();
    }

    /// Resolves once the server is stopping.
    pub(crate) async fn stopped(&self) {
        let _ = self.stopping.1.recv().await;
    }

    /// A request: idle exit and SIGTERM wait for it.
    pub(crate) fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.requests.fetch_add(1, Ordering::SeqCst);
        ActivityGuard {
            activity: self.clone(),
            job: false,
        }
    }

    /// Background work: waited for like a request, but it yields to requests
    /// (see [`Activity::quiet`]).
    pub(crate) fn begin_job(self: &Arc<Self>) -> ActivityGuard {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        ActivityGuard {
            activity: self.clone(),
            job: true,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.requests.load(Ordering::SeqCst) + self.jobs.load(Ordering::SeqCst)
    }

    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight() > 0 {
            return None;
        }
        Some(lock(&self.last_end).elapsed())
    }

    /// Waits until nothing (request or background job) has run for `calm`;
    /// returns when the last one ended.
    pub(crate) async fn settled(&self, calm: Duration) -> Instant {
        loop {
            let last = *lock(&self.last_end);
            let since = last.elapsed();
            if self.in_flight() == 0 && since >= calm {
                return last;
            }
            Timer::after(calm.saturating_sub(since).max(Duration::from_millis(100))).await;
        }
    }

    /// Waits until no request has run for `calm`, so background work does not
    /// take a small board's CPU from a sync in progress.
    pub(crate) async fn quiet(&self, calm: Duration) {
        loop {
            let busy = self.requests.load(Ordering::SeqCst) > 0;
            let since = lock(&self.last_request_end).elapsed();
            if !busy && since >= calm {
                return;
            }
            Timer::after(if busy { calm } else { calm - since }).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let a = &self.activity;
        let now = Instant::now();
        *lock(&a.last_end) = now;
        if self.job {
            a.jobs.fetch_sub(1, Ordering::SeqCst);
        } else {
            *lock(&a.last_request_end) = now;
            a.requests.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
