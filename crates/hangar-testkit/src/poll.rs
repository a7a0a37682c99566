//! Waiting for a condition in tests, instead of hand-written poll loops.
//!
//! - [`eventually`] / [`until`]: the condition answers `Option` / `bool`;
//!   a timeout names what was awaited.
//! - [`eventually_ok`] / [`until_ok`]: the condition answers `Result`; a
//!   timeout also shows the last `Err` seen (what the state was instead), so
//!   a failure says more than "timed out".
//! - [`within`]: the same with a chosen interval, answering the timeout as
//!   an error, for helpers that answer `Result`.
//!
//! Conditions are checked every 100 ms (unless chosen), first at once; the
//! last check runs at or after the limit, so a condition that holds by then
//! is never missed.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often conditions are checked.
const EVERY: Duration = Duration::from_millis(100);

/// Polls `check` until it answers `Some`, and answers that; panics naming
/// `what` when `limit` passes first.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
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
    // Not through `eventually`: a sync check keeps the future `Send` (an
    // `AsyncFnMut`'s is not provably so), for use in spawned tasks.
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// Polls `check` until it answers `Ok`, and answers that; when `limit`
/// passes first, panics naming `what` and the last `Err` seen:
/// `timed out after 10s waiting for <what>; last seen: <err>`.
pub async fn eventually_ok<T, E: Debug>(
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    match within(what, limit, EVERY, check).await {
        Ok(v) => v,
        Err(timeout) => panic!("{timeout}"),
    }
}

/// [`eventually_ok`] for a synchronous check (its future is `Send`, unlike
/// an `AsyncFnMut`'s, for use in spawned tasks).
pub async fn until_ok<T, E: Debug>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("{}", timed_out(what, limit, &last)),
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

/// Polls `check` every `every` until it answers `Ok`, and answers that;
/// when `limit` passes first, answers the timeout (naming `what` and the
/// last `Err` seen) as an error instead of panicking: for helpers that
/// answer `Result`. A check that must stop early (the process it waits on
/// died) answers `Ok` with that error as its value.
pub async fn within<T, E: Debug>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(TimedOut(timed_out(what, limit, &last)));
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// `Ok` when `items` is empty, else `Err(items)`: for [`until_ok`], so a
/// timeout shows what was left.
pub fn empty<T>(items: Vec<T>) -> Result<(), Vec<T>> {
    if items.is_empty() { Ok(()) } else { Err(items) }
}

/// A condition that did not hold in time: what was awaited and the last
/// value seen instead.
pub struct TimedOut(String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The message itself, so `unwrap` and `{:?}` show it plainly.
impl Debug for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// What a timeout that saw `last` at the end says.
fn timed_out(what: &str, limit: Duration, last: &dyn Debug) -> String {
    format!("timed out after {limit:?} waiting for {what}; last seen: {last:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The panic message of a future, which must panic.
    async fn panic_of(f: impl Future<Output = ()>) -> String {
        let payload = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(f))
            .await
            .expect_err("should have timed out");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_timeout_names_what_and_the_last_value_seen() {
        let msg = panic_of(async {
            let n = AtomicU32::new(0);
            until_ok("three runs", Duration::from_millis(250), || {
                let seen = n.fetch_add(1, Ordering::SeqCst) + 1;
                if seen > 1000 {
                    Ok(())
                } else {
                    Err(format!("{seen} runs"))
                }
            })
            .await;
        })
        .await;
        assert!(
            msg.starts_with("timed out after 250ms waiting for three runs; last seen: \""),
            "{msg}"
        );
        // The last value, not the first: checked at once, then every 100 ms
        // until the limit, so at least three times.
        assert!(!msg.contains("\"1 runs\""), "{msg}");
        assert!(msg.ends_with(" runs\""), "{msg}");
    }

    #[tokio::test]
    async fn eventually_ok_answers_the_first_ok() {
        let n = AtomicU32::new(0);
        let got = eventually_ok("the third check", Duration::from_secs(5), async || {
            let seen = n.fetch_add(1, Ordering::SeqCst) + 1;
            if seen == 3 { Ok(seen) } else { Err(seen) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn within_answers_the_timeout_with_the_last_value() {
        let err = within(
            "ready",
            Duration::ZERO,
            Duration::from_millis(1),
            async || Err::<(), _>("status 503"),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0ns waiting for ready; last seen: \"status 503\""
        );
    }

    #[tokio::test]
    async fn eventually_and_until_still_name_what() {
        let msg = panic_of(async {
            until("never", Duration::from_millis(10), || false).await;
        })
        .await;
        assert_eq!(msg, "timed out after 10ms waiting for never");
        let n = AtomicU32::new(0);
        let got = eventually("a value", Duration::from_secs(5), async || {
            let seen = n.fetch_add(1, Ordering::SeqCst);
            (seen == 1).then_some(seen)
        })
        .await;
        assert_eq!(got, 1);
    }
}
