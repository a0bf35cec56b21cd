//! Long-running operations, polled by hand.
//!
//! The 0.21 clients' own polling expects a `provisioningState` in the Location body and then
//! re-GETs the original URL, which breaks operations whose final 200 on the Location URL *is* the
//! result (effectiveNetworkSecurityGroups, runCommand, ipFlowVerify) and returns too early for
//! bodiless POSTs (start, restart, redeploy). So callers `.send()` and hand the first response here.

use super::{Arm, ArmError};
use azure_core::headers::HeaderName;
use std::time::{Duration, Instant};

/// What the first response of a long-running operation tells us to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub async_operation: Option<url::Url>,
    pub location: Option<url::Url>,
    pub retry_after: Option<Duration>,
}

fn header_url(headers: &azure_core::headers::Headers, name: &'static str) -> Option<url::Url> {
    headers
        .get_optional_str(&HeaderName::from_static(name))
        .and_then(|v| url::Url::parse(v).ok())
}

fn retry_after(headers: &azure_core::headers::Headers) -> Option<Duration> {
    headers
        .get_optional_str(&HeaderName::from_static("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl Pending {
    pub fn from_headers(headers: &azure_core::headers::Headers) -> Pending {
        Pending {
            async_operation: header_url(headers, "azure-asyncoperation"),
            location: header_url(headers, "location"),
            retry_after: retry_after(headers),
        }
    }
}

#[derive(serde::Deserialize)]
struct OperationStatus {
    status: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Arm {
    /// Follow an operation to its end. Returns the final body from the Location URL, if the
    /// operation has one (effective NSGs, Run Command), else an empty body.
    pub(crate) async fn follow(
        &self,
        status: u16,
        body: bytes::Bytes,
        pending: Pending,
        what: &str,
    ) -> Result<bytes::Bytes, ArmError> {
        let timeout = self.settings.operation_timeout;
        self.follow_within(status, body, pending, what, timeout, Duration::ZERO)
            .await
    }

    /// [`Arm::follow`], giving up after `timeout` with [`ArmError::Timeout`], and never polling
    /// sooner than `floor` after the last poll, whatever `Retry-After` says.
    pub(crate) async fn follow_within(
        &self,
        status: u16,
        body: bytes::Bytes,
        pending: Pending,
        what: &str,
        timeout: Duration,
        floor: Duration,
    ) -> Result<bytes::Bytes, ArmError> {
        if status == 200 && pending.async_operation.is_none() && pending.location.is_none() {
            return Ok(body);
        }
        let deadline = Instant::now() + timeout;
        let mut wait = pending.retry_after;
        if let Some(url) = &pending.async_operation {
            loop {
                self.pause(wait, floor, deadline, timeout, what).await?;
                let (_, headers, body) = self.get_raw(url, what).await?;
                let op: OperationStatus =
                    serde_json::from_slice(&body).map_err(|e| ArmError::Malformed {
                        what: format!("{what}: operation status"),
                        detail: e.to_string(),
                    })?;
                match op.status.as_str() {
                    "Succeeded" => break,
                    "Failed" | "Canceled" | "Cancelled" => {
                        let (code, message) = op
                            .error
                            .map(|e| {
                                let body = serde_json::json!({ "error": e }).to_string();
                                super::parse_error_body(body.as_bytes())
                            })
                            .unwrap_or((None, None));
                        return Err(ArmError::OperationFailed {
                            status: op.status.to_lowercase(),
                            code: code.unwrap_or_else(|| "OperationFailed".into()),
                            message: message.unwrap_or_else(|| format!("{what} did not complete")),
                        });
                    }
                    _ => wait = retry_after(&headers),
                }
            }
            // The operation is done; a Location (if any) holds the result.
            return match &pending.location {
                Some(location) => {
                    let (status, _, body) = self.get_raw(location, what).await?;
                    Ok(if status == 200 {
                        body
                    } else {
                        bytes::Bytes::new()
                    })
                }
                None => Ok(bytes::Bytes::new()),
            };
        }
        if let Some(url) = &pending.location {
            loop {
                self.pause(wait, floor, deadline, timeout, what).await?;
                let (status, headers, body) = self.get_raw(url, what).await?;
                match status {
                    202 => wait = retry_after(&headers),
                    204 => return Ok(bytes::Bytes::new()),
                    _ => return Ok(body),
                }
            }
        }
        // 202 without anywhere to poll: accepted, nothing more to learn.
        Ok(body)
    }

    async fn pause(
        &self,
        wait: Option<Duration>,
        floor: Duration,
        deadline: Instant,
        timeout: Duration,
        what: &str,
    ) -> Result<(), ArmError> {
        let wait = wait.unwrap_or(self.settings.poll_interval).max(floor);
        if Instant::now() + wait > deadline {
            return Err(ArmError::Timeout {
                what: format!("{what} (operation still running)"),
                after: timeout,
            });
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// An authenticated GET of a URL ARM handed us (poll URLs carry their own api-version).
    pub(crate) async fn get_raw(
        &self,
        url: &url::Url,
        what: &str,
    ) -> Result<(u16, azure_core::headers::Headers, bytes::Bytes), ArmError> {
        self.check_arm_url(url, what)?;
        let mut request = azure_core::Request::new(url.clone(), azure_core::Method::Get);
        request.insert_header(azure_core::headers::AUTHORIZATION, self.bearer().await?);
        let response = self
            .pipeline
            .send(&azure_core::Context::new(), &mut request)
            .await
            .map_err(|e| self.map_err(e, what))?;
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await.map_err(|e| self.map_err(e, what))?;
        Ok((u16::from(status), headers, body))
    }
}

impl Arm {
    /// A URL Azure handed us (or one read back from the database) is followed with the ARM
    /// token only on the ARM endpoint's own host and port, and only over https unless the
    /// endpoint itself is plain http on loopback (the simulator).
    pub(crate) fn check_arm_url(&self, url: &url::Url, what: &str) -> Result<(), ArmError> {
        if on_arm_endpoint(url, &self.settings.endpoint) {
            return Ok(());
        }
        Err(ArmError::UntrustedUrl {
            what: what.to_string(),
            host: format!(
                "{}://{}",
                url.scheme(),
                url.host_str().unwrap_or("(no host)")
            ),
        })
    }
}

/// May `url` be sent the ARM token? Only on the endpoint's own scheme, host and port, and over
/// https unless the endpoint is plain http on loopback.
fn on_arm_endpoint(url: &url::Url, endpoint: &url::Url) -> bool {
    let host = |u: &url::Url| u.host_str().map(str::to_ascii_lowercase);
    let same_place = host(url) == host(endpoint)
        && url.port_or_known_default() == endpoint.port_or_known_default()
        && url.scheme() == endpoint.scheme();
    same_place && (url.scheme() == "https" || (url.scheme() == "http" && is_loopback(endpoint)))
}

/// May a blob be downloaded from `url` (a SAS URL Azure named)? Over https, or plain http when
/// ARM itself is plain http on loopback (the simulator).
pub(crate) fn blob_url_allowed(url: &str, endpoint: &url::Url) -> bool {
    url::Url::parse(url)
        .is_ok_and(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(endpoint)))
}

/// Is this URL's host the local machine (where plain http is fine)?
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).expect("a URL")
    }

    #[test]
    fn the_arm_token_goes_only_to_the_arm_endpoint() {
        let azure = url("https://management.azure.com");
        let sim = url("http://127.0.0.1:8080");
        let cases = [
            (
                &azure,
                "https://management.azure.com/subscriptions/s/operations/1",
                true,
            ),
            (&azure, "https://MANAGEMENT.azure.com:443/x", true),
            (
                &azure,
                "https://evil.example/subscriptions/s/operations/1",
                false,
            ),
            (&azure, "http://management.azure.com/x", false),
            (&azure, "https://management.azure.com:8443/x", false),
            (&sim, "http://127.0.0.1:8080/x", true),
            (&sim, "http://127.0.0.1:9999/x", false),
            (&sim, "http://localhost:8080/x", false),
            (
                &url("http://arm.internal:8080"),
                "http://arm.internal:8080/x",
                false,
            ),
        ];
        for (endpoint, candidate, allowed) in cases {
            assert_eq!(
                on_arm_endpoint(&url(candidate), endpoint),
                allowed,
                "{endpoint} {candidate}"
            );
        }
    }

    #[test]
    fn blobs_only_over_https_outside_the_simulator() {
        let azure = url("https://management.azure.com");
        assert!(blob_url_allowed(
            "https://x.blob.core.windows.net/b/s.bmp?sig=1",
            &azure
        ));
        assert!(!blob_url_allowed(
            "http://x.blob.core.windows.net/b/s.bmp?sig=1",
            &azure
        ));
        assert!(!blob_url_allowed("not a url", &azure));
        assert!(blob_url_allowed(
            "http://127.0.0.1:1/_blob/x",
            &url("http://127.0.0.1:1")
        ));
    }
}
