//! Retrying a model request before its first chunk.

use crate::{ChunkStream, LlmError};
use futures::StreamExt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The longest `Retry-After` we wait out. A provider asking for more is
/// telling us to give up for now; the caller hears the error instead of a
/// request that hangs for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How a provider retries a failed request.
///
/// Only failures before the first chunk are retried: once a chunk reached the
/// caller, repeating the request would duplicate output. Retryable failures
/// are those for which [`LlmError::is_retryable`] holds (429, 5xx, transport
/// errors, timeouts). The delay before attempt `n + 1` is
/// `min(max_delay, base_delay * 2^(n-1))` with equal jitter (between half
/// and all of it), or the provider's `Retry-After` in seconds when it sent
/// one (up to 60 s; a longer one fails at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included; `1` disables retries.
    pub max_attempts: u32,
    /// Total attempts when every failure so far was a transport error (the
    /// endpoint could not be reached at all); at least `max_attempts`.
    pub unreachable_attempts: u32,
    /// Delay before the second attempt.
    pub base_delay: Duration,
    /// Upper bound of the backoff delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            unreachable_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            unreachable_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// For an agent calling its own server's LLM gateway: provider errors are
    /// retried by the server already, but a server that cannot be reached
    /// (restarting, failing over) is waited for about a minute, so a server
    /// restart never fails a running task.
    pub fn through_gateway() -> Self {
        RetryPolicy {
            max_attempts: 2,
            unreachable_attempts: 12,
            ..RetryPolicy::default()
        }
    }

    /// The backoff before attempt `failed_attempt + 1`, jitter included.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }
}

/// A random number for jitter. `RandomState` is seeded randomly per instance,
/// which is all the randomness jitter needs, without a `rand` dependency.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish()
}

/// One failed attempt, with the wait the provider asked for.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: LlmError,
    pub(crate) retry_after: Option<Duration>,
}

impl From<LlmError> for Failure {
    fn from(error: LlmError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// Runs `attempt` until it yields a stream whose first item is a chunk (or
/// which ends cleanly), retrying retryable failures per `policy`.
pub(crate) async fn with_retry<F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
) -> Result<ChunkStream, LlmError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ChunkStream, Failure>>,
{
    let mut number = 1u32;
    let mut only_unreachable = true;
    loop {
        let outcome = match attempt().await {
            Ok(stream) => peek_first(stream).await,
            Err(failure) => Err(failure),
        };
        let failure = match outcome {
            Ok(stream) => return Ok(stream),
            Err(failure) => failure,
        };
        only_unreachable &= matches!(failure.error, LlmError::Transport(_));
        let budget = if only_unreachable {
            policy.unreachable_attempts.max(policy.max_attempts)
        } else {
            policy.max_attempts
        };
        if !failure.error.is_retryable() || number >= budget.max(1) {
            return Err(failure.error);
        }
        let delay = match failure.retry_after {
            Some(wait) if wait > MAX_RETRY_AFTER => return Err(failure.error),
            Some(wait) => wait,
            None => policy.backoff(number),
        };
        tracing::warn!(
            attempt = number,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %failure.error,
            "model request failed; retrying"
        );
        tokio::time::sleep(delay).await;
        number += 1;
    }
}

/// Waits for the stream's first item so that a failure before any chunk can
/// be retried; puts the item back in front otherwise.
async fn peek_first(mut stream: ChunkStream) -> Result<ChunkStream, Failure> {
    match stream.next().await {
        Some(Ok(chunk)) => Ok(Box::pin(
            futures::stream::once(async move { Ok(chunk) }).chain(stream),
        )),
        Some(Err(error)) => Err(error.into()),
        None => Ok(Box::pin(futures::stream::empty())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_protocol::llm::ChatChunk;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            unreachable_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    fn chunk() -> ChatChunk {
        serde_json::from_value(serde_json::json!({"id": "c1", "choices": []})).unwrap()
    }

    fn status(code: u16) -> LlmError {
        LlmError::Status {
            status: code,
            body: String::new(),
            retryable: code == 429 || code >= 500,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            unreachable_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.backoff(30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }

    /// An endpoint that cannot be reached gets the longer budget; once it
    /// answered with an error, the ordinary one applies.
    #[tokio::test]
    async fn unreachable_endpoints_get_their_own_budget() {
        let policy = RetryPolicy {
            unreachable_attempts: 6,
            ..fast()
        };
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let failed = with_retry(&policy, || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err::<ChunkStream, _>(Failure::from(LlmError::Transport("refused".into())))
            }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 6);

        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let failed = with_retry(&policy, || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let error = if n == 0 {
                    LlmError::Transport("refused".into())
                } else {
                    status(503)
                };
                Err::<ChunkStream, _>(Failure::from(error))
            }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_retryable_failures_then_succeeds() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stream = with_retry(&fast(), || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Failure::from(status(503)))
                } else {
                    let s: ChunkStream = Box::pin(futures::stream::iter(vec![Ok(chunk())]));
                    Ok(s)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_on_fatal_errors() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let err = with_retry(&fast(), || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<ChunkStream, _>(Failure::from(status(500))) }
        })
        .await
        .err()
        .unwrap();
        assert!(matches!(err, LlmError::Status { status: 500, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let counter = calls.clone();
        let err = with_retry(&fast(), || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<ChunkStream, _>(Failure::from(status(400))) }
        })
        .await
        .err()
        .unwrap();
        assert!(matches!(err, LlmError::Status { status: 400, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_an_error_before_the_first_chunk_but_not_after() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stream = with_retry(&fast(), || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let items = if n == 0 {
                    vec![Err(LlmError::Transport("cut".into()))]
                } else {
                    vec![Ok(chunk()), Err(LlmError::Transport("cut later".into()))]
                };
                let s: ChunkStream = Box::pin(futures::stream::iter(items));
                Ok(s)
            }
        })
        .await
        .unwrap();
        let items: Vec<_> = stream.collect().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(items[0].is_ok());
        assert!(matches!(&items[1], Err(LlmError::Transport(m)) if m == "cut later"));
    }

    #[tokio::test]
    async fn a_long_retry_after_fails_at_once() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let err = with_retry(&fast(), || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<ChunkStream, _>(Failure {
                    error: status(429),
                    retry_after: Some(Duration::from_secs(3600)),
                })
            }
        })
        .await
        .err()
        .unwrap();
        assert!(matches!(err, LlmError::Status { status: 429, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
