//! Retries for ARM requests, honouring `Retry-After`, bounded in count *and* in total time.
//!
//! Reads (GET, HEAD and the read-only POST actions) are retried after 408, 429, 5xx and
//! connection failures. A write that is not idempotent (POST start/restart/redeploy, PUT of an
//! extension with a fresh `forceUpdateTag`, PUT of a rule) is re-sent only after an answer that
//! proves Azure did not act: 429, a 503 with `Retry-After`, or a failure before the request left
//! (no connection). After a lost answer (timeout, dropped connection) or any other 5xx nobody
//! can say whether Azure acted: Microsoft's Retry pattern (learn.microsoft.com/azure/
//! architecture/patterns/retry, "Issues and considerations", idempotency) and its transient-fault
//! guidance (…/best-practices/transient-faults) warn that a service may process a request and
//! fail before answering, so retrying an operation that is not idempotent can apply it twice. Such an error is marked [`Unanswered`] and the caller reads
//! the resource to learn what happened instead of sending the write a second time.
//!
//! azure_core 0.21's own retry policy sleeps whatever `Retry-After` says, even an hour, past its
//! own time budget. This one gives up as soon as the next wait would overrun the budget, and
//! says how many retries it made and what Azure asked for.

use azure_core::error::{Error, ErrorKind, HttpError};
use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Policy, PolicyResult, Request, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

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

/// Attached to the error of a write whose answer was lost or was a 5xx: Azure may have acted.
#[derive(Debug)]
pub(crate) struct Unanswered {
    pub last: Error,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no clear answer to a write")
    }
}

impl std::error::Error for Unanswered {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

/// May this request be sent again after an answer that does not prove Azure ignored it?
pub(super) fn replayable(request: &Request) -> bool {
    match request.method() {
        azure_core::Method::Get | azure_core::Method::Head => true,
        azure_core::Method::Post => {
            let path = request.url().path().trim_end_matches('/');
            path.rsplit('/')
                .next()
                .is_some_and(crate::domain::is_reading_action)
        }
        _ => false,
    }
}

/// Did this transport error happen before the request left (no connection was made)?
fn not_sent(error: &Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            return r.is_connect();
        }
        current = e.source();
    }
    false
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

fn unanswered(last: Error) -> Error {
    Error::new(last.kind().clone(), Unanswered { last })
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
        // The request's span: every attempt, wait and answer below logs inside it.
        let span = super::span::request_span(request);
        async move {
            let started = Instant::now();
            let replayable = replayable(request);
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
                        if !replayable {
                            let refused = status == StatusCode::TooManyRequests
                                || (status == StatusCode::ServiceUnavailable && asked.is_some());
                            if !refused {
                                tracing::debug!(%status, "ARM write: ambiguous answer, not re-sent");
                                return Err(unanswered(error));
                            }
                        }
                        (error, asked)
                    }
                    Err(error) if *error.kind() == ErrorKind::Io => {
                        if !replayable && !not_sent(&error) {
                            tracing::debug!("ARM write: the answer was lost, not re-sent");
                            return Err(unanswered(error));
                        }
                        (error, None)
                    }
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
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_replayed_after_an_ambiguous_answer() {
        let base = "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers";
        let cases = [
            ("GET", "/Microsoft.Compute/virtualMachines/web-01", true),
            (
                "POST",
                "/Microsoft.Network/networkInterfaces/nic/effectiveNetworkSecurityGroups",
                true,
            ),
            (
                "POST",
                "/Microsoft.Compute/virtualMachines/web-01/retrieveBootDiagnosticsData",
                true,
            ),
            (
                "POST",
                "/Microsoft.Network/networkInterfaces/nic/effectiveRouteTable",
                true,
            ),
            (
                "POST",
                "/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/ipFlowVerify",
                true,
            ),
            (
                "POST",
                "/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/nextHop",
                true,
            ),
            (
                "POST",
                "/Microsoft.Network/virtualNetworks/vnet/listNetworkManagerEffectiveSecurityAdminRules/",
                true,
            ),
            (
                "DELETE",
                "/Microsoft.Network/routeTables/rt/routes/to-firewall",
                false,
            ),
            (
                "POST",
                "/Microsoft.Compute/virtualMachines/web-01/restart",
                false,
            ),
            (
                "POST",
                "/Microsoft.Compute/virtualMachines/web-01/runCommand",
                false,
            ),
            (
                "POST",
                "/Microsoft.Compute/virtualMachines/web-01/start",
                false,
            ),
            (
                "PUT",
                "/Microsoft.Compute/virtualMachines/web-01/extensions/enablevmaccess",
                false,
            ),
            (
                "PUT",
                "/Microsoft.Network/networkSecurityGroups/n/securityRules/r",
                false,
            ),
        ];
        for (method, path, replay) in cases {
            let method = match method {
                "GET" => azure_core::Method::Get,
                "POST" => azure_core::Method::Post,
                "DELETE" => azure_core::Method::Delete,
                _ => azure_core::Method::Put,
            };
            let url = url::Url::parse(&format!("{base}{path}?api-version=1")).expect("url");
            let request = Request::new(url, method);
            assert_eq!(replayable(&request), replay, "{path}");
        }
    }
}
