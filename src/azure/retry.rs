//! Retries for every ARM request: 408, 429 and 5xx and connection failures, honouring
//! `Retry-After`, bounded in count *and* in total time.
//!
//! azure_core 0.21's own retry policy sleeps whatever `Retry-After` says, even an hour, past its
//! own time budget. This one gives up as soon as the next wait would overrun the budget, and
//! says how many retries it made and what Azure asked for.

use azure_core::error::{Error, ErrorKind, HttpError};
use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Policy, PolicyResult, Request, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct ArmRetry {
    pub max_retries: u32,
    pub max_elapsed: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// Attached to the final error when retrying stopped, so callers can tell a person what to do.
#[derive(Debug)]
pub(crate) struct GaveUp {
    pub retries: u32,
    pub retry_after: Option<Duration>,
    pub last: Error,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gave up after {} retries", self.retries)
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

const RETRY_STATUSES: [StatusCode; 6] = [
    StatusCode::RequestTimeout,
    StatusCode::TooManyRequests,
    StatusCode::InternalServerError,
    StatusCode::BadGateway,
    StatusCode::ServiceUnavailable,
    StatusCode::GatewayTimeout,
];

fn retry_after(headers: &Headers) -> Option<Duration> {
    let get = |name: &'static str| headers.get_optional_str(&HeaderName::from_static(name));
    if let Some(ms) = get("retry-after-ms").or_else(|| get("x-ms-retry-after-ms")) {
        return ms.trim().parse::<u64>().ok().map(Duration::from_millis);
    }
    let value = get("retry-after")?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // An HTTP date: wait until then.
    let when = azure_core::date::parse_rfc1123(value).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(if when > now {
        Duration::try_from(when - now).unwrap_or_default()
    } else {
        Duration::ZERO
    })
}

impl ArmRetry {
    fn backoff(&self, retries: u32) -> Duration {
        let factor = 2u32.saturating_pow(retries.min(16));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

#[async_trait::async_trait]
impl Policy for ArmRetry {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let mut attempt = request.clone();
            let (error, wait_at_least) = match next[0].send(ctx, &mut attempt, &next[1..]).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let asked = retry_after(response.headers());
                    let http = HttpError::new(response).await;
                    let kind =
                        ErrorKind::http_response(status, http.error_code().map(str::to_string));
                    let error = Error::new(kind, http);
                    if !RETRY_STATUSES.contains(&status) {
                        return Err(error);
                    }
                    (error, asked)
                }
                Err(error) if *error.kind() == ErrorKind::Io => (error, None),
                Err(error) => return Err(error),
            };
            let delay = wait_at_least.unwrap_or_default().max(self.backoff(retries));
            if retries >= self.max_retries || started.elapsed() + delay > self.max_elapsed {
                let kind = error.kind().clone();
                tracing::debug!(retries, ?wait_at_least, "ARM request: giving up");
                return Err(Error::new(
                    kind,
                    GaveUp {
                        retries,
                        retry_after: wait_at_least,
                        last: error,
                    },
                ));
            }
            tracing::debug!(retries, ?delay, "ARM request: retrying");
            retries += 1;
            tokio::time::sleep(delay).await;
        }
    }
}
