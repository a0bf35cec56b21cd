//! ARM failures as a closed set a caller can branch on, each with a one-line message for a
//! person that carries Azure's error code and never a secret (no tokens, no SAS URLs, no client
//! secret: messages are built here from status, code and Azure's message only).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArmError {
    /// Entra ID refused the credential (wrong secret, unknown app, expired secret...).
    #[error("Azure sign-in failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    SignIn {
        code: Option<String>,
        message: String,
    },
    /// 401 from ARM itself (a token it does not accept).
    #[error("Azure rejected the access token (HTTP 401, {code}): {message}")]
    Unauthenticated { code: String, message: String },
    /// 403, e.g. `AuthorizationFailed`, whose message names the missing action.
    #[error("Azure denied access (HTTP 403, {code}): {message}")]
    Forbidden { code: String, message: String },
    #[error("Azure says it does not exist (HTTP 404, {code}): {message}")]
    NotFound { code: String, message: String },
    #[error("Azure refused because of a conflict (HTTP 409, {code}): {message}")]
    Conflict { code: String, message: String },
    #[error("Azure kept throttling (HTTP 429, {code}) after {retries} retries; wait {} and try again", retry_after.map(|d| format!("{}s", d.as_secs().max(1))).unwrap_or_else(|| "a minute".into()))]
    Throttled {
        code: String,
        retries: u32,
        retry_after: Option<Duration>,
    },
    #[error("Azure answered HTTP {status} ({code}): {message}")]
    Http {
        status: u16,
        code: String,
        message: String,
    },
    #[error("no answer from Azure within {}s ({what})", after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("could not reach Azure: {0}")]
    Network(String),
    #[error("Azure sent a response rdp-doctor could not read ({what}): {detail}")]
    Malformed { what: String, detail: String },
    /// A long-running operation ended `Failed` or `Canceled`.
    #[error("the Azure operation {status} ({code}): {message}")]
    OperationFailed {
        status: String,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Config(String),
    /// A write whose answer was lost (timeout, dropped connection) or was a 5xx: Azure may
    /// have accepted it. It was not sent again; read the resource to learn what happened.
    /// An operation or blob URL outside the places rdp-doctor trusts with a request.
    #[error("refused to follow a URL for {what}: it points at {host}, not at the ARM endpoint over https; nothing was sent there")]
    UntrustedUrl { what: String, host: String },
    #[error("Azure may have accepted the request ({what}), but its answer was lost: {cause}")]
    Unanswered { what: String, cause: Box<ArmError> },
}

impl ArmError {
    /// Azure's error code, where there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::SignIn { code, .. } => code.as_deref(),
            ArmError::Unauthenticated { code, .. }
            | ArmError::Forbidden { code, .. }
            | ArmError::NotFound { code, .. }
            | ArmError::Conflict { code, .. }
            | ArmError::Throttled { code, .. }
            | ArmError::Http { code, .. }
            | ArmError::OperationFailed { code, .. } => Some(code),
            ArmError::Unanswered { cause, .. } => cause.code(),
            _ => None,
        }
    }

    /// Build from an HTTP status and an error body in any of ARM's shapes: the standard
    /// `{"error": {"code", "message"}}`, Resource Health's flat `{"code", "message"}`, or text.
    pub fn from_status(status: u16, body: &[u8], retries: u32) -> ArmError {
        let (code, message) = parse_error_body(body);
        let code = code.unwrap_or_else(|| format!("HTTP{status}"));
        let message = message.unwrap_or_else(|| "no error message".into());
        from_parts(status, code, message, retries, None)
    }

    /// Did Azure perhaps act on a write that failed like this (see [`ArmError::Unanswered`])?
    pub fn is_unanswered(&self) -> bool {
        matches!(self, ArmError::Unanswered { .. })
    }

    /// Map an error from the azure_core pipeline (which already retried what it could).
    pub fn from_azure(error: &azure_core::Error, what: &str, timeout: Duration) -> ArmError {
        if let Some(unanswered) = error.downcast_ref::<super::retry::Unanswered>() {
            return ArmError::Unanswered {
                what: what.to_string(),
                cause: Box::new(ArmError::from_azure(&unanswered.last, what, timeout)),
            };
        }
        use azure_core::error::ErrorKind;
        match error.kind() {
            ErrorKind::HttpResponse { status, error_code } => {
                let status = u16::from(*status);
                let (code, message) = match error.as_http_error() {
                    Some(http) => (
                        http.error_code().map(str::to_string),
                        http.error_message().map(str::to_string),
                    ),
                    None => (None, None),
                };
                let code = code
                    .or_else(|| error_code.clone())
                    .unwrap_or_else(|| format!("HTTP{status}"));
                let message = message.unwrap_or_else(|| format!("no error message ({what})"));
                let (retries, retry_after) = gave_up(error);
                from_parts(status, code, message, retries, retry_after)
            }
            ErrorKind::Credential => sign_in_error(error),
            ErrorKind::DataConversion => ArmError::Malformed {
                what: what.to_string(),
                detail: first_line(&redact(&chain_text(error))),
            },
            ErrorKind::Io => {
                if chain_has_timeout(error) {
                    ArmError::Timeout {
                        what: what.to_string(),
                        after: timeout,
                    }
                } else {
                    ArmError::Network(format!("{what}: {}", network_cause(error)))
                }
            }
            _ => ArmError::Network(format!(
                "{what}: {}",
                first_line(&redact(&chain_text(error)))
            )),
        }
    }
}

fn from_parts(
    status: u16,
    code: String,
    message: String,
    retries: u32,
    retry_after: Option<Duration>,
) -> ArmError {
    let message = first_line(&message);
    match status {
        401 => ArmError::Unauthenticated { code, message },
        403 => ArmError::Forbidden { code, message },
        404 => ArmError::NotFound { code, message },
        409 => ArmError::Conflict { code, message },
        429 => ArmError::Throttled {
            code,
            retries,
            retry_after,
        },
        _ => ArmError::Http {
            status,
            code,
            message,
        },
    }
}

/// `(code, message)` from an ARM error body of any shape.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return (None, (!text.is_empty()).then(|| first_line(text)));
    };
    let pick = |v: &serde_json::Value, key: &str| -> Option<String> {
        v.get(key)
            .or_else(|| v.get(capitalised(key)))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    let nested = value.get("error").or_else(|| value.get("Error"));
    match nested {
        Some(inner) if inner.is_object() => (pick(inner, "code"), pick(inner, "message")),
        // Entra ID's token errors: {"error": "invalid_client", "error_description": "..."}
        Some(serde_json::Value::String(code)) => {
            (Some(code.clone()), pick(&value, "error_description"))
        }
        _ => (pick(&value, "code"), pick(&value, "message")),
    }
}

fn capitalised(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// How many retries the retry policy made and what Azure last asked us to wait.
fn gave_up(error: &(dyn std::error::Error + 'static)) -> (u32, Option<Duration>) {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(g) = e.downcast_ref::<super::retry::GaveUp>() {
            return (g.retries, g.retry_after);
        }
        if let Some(inner) = e
            .downcast_ref::<azure_core::Error>()
            .and_then(|a| a.downcast_ref::<super::retry::GaveUp>())
        {
            return (inner.retries, inner.retry_after);
        }
        current = e.source();
    }
    (0, None)
}

fn chain_has_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return true;
            }
        }
        current = e.source();
    }
    false
}

fn network_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_connect() {
                return "connection refused or host unreachable".into();
            }
        }
        current = e.source();
    }
    "the connection failed".into()
}

fn sign_in_error(error: &azure_core::Error) -> ArmError {
    // oauth2 keeps Entra's error body out of its Display; search the Debug form for the codes
    // (only the codes are extracted; this text is never shown).
    let text = format!("{} {error:?}", chain_text(error));
    let code = [
        "invalid_client",
        "unauthorized_client",
        "invalid_request",
        "invalid_grant",
    ]
    .into_iter()
    .find(|c| text.contains(c))
    .map(str::to_string);
    let aadsts = regex::Regex::new(r"AADSTS\d+")
        .ok()
        .and_then(|re| re.find(&text).map(|m| m.as_str().to_string()));
    // Our own credentials (`credential.rs`) write safe one-line texts that name the variable
    // to check; the client-secret hint below would mislead for them.
    let ours = [
        "AZURE_FEDERATED_TOKEN_FILE",
        "managed identity",
        "no usable Azure credential",
    ]
    .iter()
    .any(|marker| text.contains(marker));
    let message = match (code.as_deref(), aadsts) {
        (Some("invalid_client"), Some(sts)) if text.contains("AZURE_FEDERATED_TOKEN_FILE") => format!(
            "Entra ID rejected the federated token of AZURE_FEDERATED_TOKEN_FILE ({sts}). Check that the file is the one the cluster keeps rotating and that the app registration's federated credential matches its issuer, subject and audience"
        ),
        _ if ours => first_line(&super::redact(&error.to_string())),
        (Some("invalid_client"), Some(sts)) => format!(
            "Entra ID rejected the client credentials ({sts}). Check AZURE_CLIENT_SECRET is the secret's value (not its ID) and has not expired, and that AZURE_CLIENT_ID and AZURE_TENANT_ID match the app registration"
        ),
        (Some("invalid_client"), None) => "Entra ID rejected the client credentials. Check AZURE_CLIENT_SECRET, AZURE_CLIENT_ID and AZURE_TENANT_ID".to_string(),
        (_, Some(sts)) => format!("Entra ID refused to issue a token ({sts})"),
        _ if text.contains("error sending request")
            || text.contains("failed to execute")
            || text.contains("could not reach the token endpoint") =>
        {
            "could not reach the Entra ID token endpoint (AZURE_AUTHORITY_HOST)".to_string()
        }
        _ => "no usable Azure credential: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or use a managed identity, workload identity or `az login`".to_string(),
    };
    ArmError::SignIn { code, message }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    // Long enough for an `AuthorizationFailed` on a VM in a long-named resource group: its
    // scope, the part a person acts on, comes late in the message.
    const MAX: usize = 500;
    if line.chars().count() > MAX {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// Remove anything that looks like a URL query (SAS signatures, tokens) from free text.
pub fn redact(text: &str) -> String {
    let Ok(re) = regex::Regex::new(r"(https?://[^\s?]+)\?[^\s)]*") else {
        return text.to_string();
    };
    re.replace_all(text, "$1?<redacted>").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_shape() {
        type Case<'a> = (&'a [u8], (Option<&'a str>, Option<&'a str>));
        let cases: [Case; 5] = [
            (
                br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#,
                (Some("ResourceNotFound"), Some("gone")),
            ),
            (
                br#"{"code":"MissingSubscriptionRegistration","message":"register","details":null}"#,
                (Some("MissingSubscriptionRegistration"), Some("register")),
            ),
            (
                br#"{"error":"invalid_client","error_description":"AADSTS7000215: bad"}"#,
                (Some("invalid_client"), Some("AADSTS7000215: bad")),
            ),
            (b"upstream exploded\nmore", (None, Some("upstream exploded"))),
            (b"", (None, None)),
        ];
        for (body, (code, message)) in cases {
            let (c, m) = parse_error_body(body);
            assert_eq!((c.as_deref(), m.as_deref()), (code, message));
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"error":{"code":"AuthorizationFailed","message":"does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read'"}}"#;
        let error = ArmError::from_status(403, body, 0);
        assert!(matches!(error, ArmError::Forbidden { .. }));
        assert!(error
            .to_string()
            .contains("Microsoft.Compute/virtualMachines/read"));
        assert!(matches!(
            ArmError::from_status(409, b"{}", 0),
            ArmError::Conflict { .. }
        ));
        assert_eq!(ArmError::from_status(500, b"{}", 0).code(), Some("HTTP500"));
    }

    #[test]
    fn sas_queries_are_redacted() {
        assert_eq!(
            redact("GET https://x.blob/a.bmp?sv=1&sig=SECRET failed"),
            "GET https://x.blob/a.bmp?<redacted> failed"
        );
    }
}
