//! Waiting for a condition in tests, instead of hand-written poll loops.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are checked.
const EVERY: Duration = Duration::from_millis(100);

/// Polls `check` until it answers `Some`, and answers that; panics naming
/// `what` when `limit` passes first.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// Polls a synchronous condition until it holds; panics naming `what` when
/// `limit` passes first.
pub async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    eventually(what, limit, || std::future::ready(check().then_some(()))).await
}
