//! One tracing span per ARM request, so every log line of a request (its pacing, its retries,
//! the answer) says which request it was and, once Azure has answered, Azure's own ids for it:
//! `x-ms-request-id` and `x-ms-correlation-request-id` ("Azure Resource Manager request
//! headers", which Azure support asks for). The span names the method and the route as a
//! template, never a URL's query (a SAS signature would be a secret) nor a name. It opens inside
//! whatever span the front end opened for the person's command (`crate::telemetry`).

use azure_core::headers::HeaderName;
use azure_core::Request;
use tracing::field::Empty;

/// The span of one request, all its attempts included; the retry policy, the outermost of
/// ours, runs the request inside it.
pub(crate) fn request_span(request: &Request) -> tracing::Span {
    tracing::info_span!(
        "arm",
        method = request.method().as_ref(),
        route = %route_template(request.url()),
        status = Empty,
        request_id = Empty,
        correlation_id = Empty,
    )
}

/// Called by the transport with each answer, inside the request's span: records Azure's ids
/// and status on it (the last attempt's win), logs the answer at DEBUG and counts it in
/// `crate::metrics` by method, route template and status.
pub(crate) fn answered(request: &Request, response: &azure_core::Response) {
    let span = tracing::Span::current();
    let header = |name: &'static str| {
        response
            .headers()
            .get_optional_str(&HeaderName::from_static(name))
            .map(str::to_owned)
    };
    let status = u16::from(response.status());
    span.record("status", status);
    if let Some(id) = header("x-ms-request-id") {
        span.record("request_id", id.as_str());
    }
    if let Some(id) = header("x-ms-correlation-request-id") {
        span.record("correlation_id", id.as_str());
    }
    tracing::debug!(status, "ARM answered");
    crate::metrics::arm_answered(
        request.method().as_ref(),
        &route_template(request.url()),
        status,
    );
}

/// Called by the transport when an attempt got no answer: counted with the status `none`.
pub(crate) fn unanswered(request: &Request) {
    crate::metrics::arm_unanswered(request.method().as_ref(), &route_template(request.url()));
}

/// `/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}/start`:
/// ARM paths alternate a type and a name, except `providers/<namespace>`; names become `{}`.
pub(crate) fn route_template(url: &url::Url) -> String {
    let mut out = String::new();
    let mut segments = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    while let Some(kind) = segments.next() {
        out.push('/');
        out.push_str(kind);
        let next = segments.next();
        match next {
            Some(namespace) if kind.eq_ignore_ascii_case("providers") => {
                out.push('/');
                out.push_str(namespace);
            }
            Some(_) => out.push_str("/{}"),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_types_and_hide_names_and_queries() {
        let route = |u: &str| route_template(&url::Url::parse(u).unwrap());
        assert_eq!(
            route("https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01/start?api-version=2024-07-01"),
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}/start"
        );
        assert_eq!(
            route("https://management.azure.com/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/operations/abc?sig=secret"),
            "/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{}"
        );
        assert_eq!(route("https://management.azure.com/"), "");
    }
}
