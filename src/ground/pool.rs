//! The hop to the blocking pool: where SQLite, zstd and PBKDF2 run, so that
//! no connection task waits behind them.

/// Runs blocking work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    smol::unblock(work).await
}
