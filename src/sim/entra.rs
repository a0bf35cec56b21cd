//! Entra ID as the simulator plays it: the v2.0 token endpoint (client secret or a federated
//! client assertion), the managed-identity endpoints of a VM (IMDS) and of App Service, and the
//! access tokens they issued with their expiry, which ARM checks on every request.
//!
//! Shapes and error codes, with their sources:
//! - `POST /{tenant}/oauth2/v2.0/token`, `grant_type=client_credentials` with `client_secret`, or
//!   with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//!   `client_assertion` (Microsoft identity platform, "OAuth 2.0 client credentials flow", third
//!   case: access token request with a federated credential; azure_identity 0.21's
//!   `federated_credentials_flow::perform` sends the same form). A stale assertion is refused
//!   `invalid_client` AADSTS700024 ("Client assertion is not within its valid time range", as
//!   quoted in Azure/login#180 and AzureAD/microsoft-authentication-library-for-java#984), an
//!   unknown one AADSTS700211 ("No matching federated identity record found for presented
//!   assertion issuer", Azure/azure-workload-identity#1200).
//! - IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…[&client_id=…]`
//!   with `Metadata: true` (Microsoft Learn, "How to use managed identities for Azure resources on
//!   an Azure VM to acquire an access token"); numbers in its answer are strings.
//! - App Service: `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&client_id=…]` with
//!   `X-IDENTITY-HEADER: {IDENTITY_HEADER}` (Microsoft Learn, "Use managed identities for App
//!   Service and Azure Functions"; Azure.Identity's `AppServiceV2019ManagedIdentitySource`).
//! - ARM refuses an expired token 401 `ExpiredAuthenticationToken`, "The access token expiry UTC
//!   time '…' is earlier than current UTC time '…'." (as quoted in
//!   microsoft/vscode-azureappservice#2457 and microsoft/foundry-dev-tools#461), and a token for
//!   another resource 401 `InvalidAuthenticationTokenAudience`, naming the four audiences it
//!   allows (Azure-Samples/active-directory-dotnetcore-daemon-v2#145,
//!   JetBrains/azure-tools-for-intellij#16); the simulator also allows its own URL.

use super::{lock, now_rfc3339, random_u64, random_uuid, rfc3339, Reply, Shared};
use axum::http::HeaderMap;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The jwt-bearer assertion type of the federated-credential grant.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which managed identities the simulated VM or app has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedIdentities {
    /// A system-assigned identity (used when a request names no `client_id`).
    pub system_assigned: bool,
    /// Client ids of user-assigned identities.
    pub user_assigned: Vec<String>,
}

impl Default for ManagedIdentities {
    fn default() -> Self {
        ManagedIdentities {
            system_assigned: true,
            user_assigned: Vec::new(),
        }
    }
}

/// Tokens issued and the federated token Entra trusts.
pub(super) struct Entra {
    /// Access token → when it expires.
    tokens: Mutex<HashMap<String, Expiry>>,
    federated: Mutex<Federated>,
    /// App Service's `IDENTITY_HEADER` value.
    identity_header: String,
}

#[derive(Clone)]
struct Expiry {
    at: Instant,
    utc: OffsetDateTime,
    /// The resource the token was issued for (the scope without `/.default`).
    audience: String,
    /// The client (application) id it was issued to, as a real token's `appid` claim says;
    /// ARM authorises the request as that principal.
    client_id: String,
}

/// The audiences ARM accepts, in the order its error message lists them.
const ARM_AUDIENCES: [&str; 4] = [
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
];

#[derive(Default)]
struct Federated {
    /// The federated token as the kubelet last projected it, and when.
    current: Option<(String, OffsetDateTime)>,
    /// Earlier tokens → (issued, expired at rotation).
    retired: HashMap<String, (OffsetDateTime, OffsetDateTime)>,
    /// How many tokens were issued (the current one is number `generation`).
    generation: u64,
}

/// Whether ARM accepts a bearer token.
pub(super) enum Bearer {
    /// Issued to this client id.
    Valid(String),
    Unknown,
    Expired {
        expiry: OffsetDateTime,
    },
    WrongAudience {
        audience: String,
    },
}

impl Entra {
    pub(super) fn new() -> Entra {
        Entra {
            tokens: Mutex::new(HashMap::new()),
            federated: Mutex::new(Federated::default()),
            identity_header: format!("{:016x}{:016x}", random_u64(), random_u64()),
        }
    }

    pub(super) fn issued(&self) -> Vec<String> {
        lock(&self.tokens).keys().cloned().collect()
    }

    pub(super) fn identity_header(&self) -> String {
        self.identity_header.clone()
    }

    /// A new federated token; the previous one expires now, as the kubelet rotates a projected
    /// service-account token before it expires.
    pub(super) fn rotate_federated(&self) -> String {
        let now = OffsetDateTime::now_utc();
        let mut federated = lock(&self.federated);
        federated.generation += 1;
        let token = format!(
            "eyJhbGciOiJSUzI1NiJ9.sim-federated-{}.{:016x}{:016x}",
            federated.generation,
            random_u64(),
            random_u64()
        );
        if let Some((old, issued)) = federated.current.replace((token.clone(), now)) {
            federated.retired.insert(old, (issued, now));
        }
        token
    }

    /// Whether ARM at `arm_url` accepts `token`.
    pub(super) fn check(&self, token: &str, arm_url: &str) -> Bearer {
        match lock(&self.tokens).get(token) {
            None => Bearer::Unknown,
            Some(expiry) if expiry.at <= Instant::now() => Bearer::Expired { expiry: expiry.utc },
            Some(expiry)
                if !ARM_AUDIENCES.contains(&expiry.audience.as_str())
                    && expiry.audience.trim_end_matches('/') != arm_url =>
            {
                Bearer::WrongAudience {
                    audience: expiry.audience.clone(),
                }
            }
            Some(expiry) => Bearer::Valid(expiry.client_id.clone()),
        }
    }

    fn issue(
        &self,
        lifetime: Duration,
        audience: &str,
        client_id: &str,
    ) -> (String, OffsetDateTime) {
        let token = format!(
            "sim.{:016x}{:016x}{:016x}",
            random_u64(),
            random_u64(),
            random_u64()
        );
        let utc = OffsetDateTime::now_utc() + lifetime;
        let expiry = Expiry {
            at: Instant::now() + lifetime,
            utc,
            audience: audience.to_owned(),
            client_id: client_id.to_owned(),
        };
        lock(&self.tokens).insert(token.clone(), expiry);
        (token, utc)
    }
}

/// The 401 ARM answers for an expired token.
pub(super) fn expired_token(shared: &Shared, expiry: OffsetDateTime) -> Reply {
    let message = format!(
        "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
        arm_time(expiry),
        arm_time(OffsetDateTime::now_utc())
    );
    Reply::arm_error(401, "ExpiredAuthenticationToken", &message).header(
        "WWW-Authenticate",
        format!(
            "Bearer authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"The access token has expired.\"",
            shared.url
        ),
    )
}

/// The 401 ARM answers for a token issued for another resource.
pub(super) fn wrong_audience(shared: &Shared, audience: &str) -> Reply {
    let allowed: Vec<String> = ARM_AUDIENCES.iter().map(|a| format!("'{a}'")).collect();
    let message = format!(
        "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences {}.",
        allowed.join(",")
    );
    Reply::arm_error(401, "InvalidAuthenticationTokenAudience", &message).header(
        "WWW-Authenticate",
        format!(
            "Bearer authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"The access token has been obtained for wrong audience or resource.\"",
            shared.url
        ),
    )
}

/// ARM's timestamps in its messages: "6/15/2026 8:22:51 AM".
fn arm_time(at: OffsetDateTime) -> String {
    let (hour, half) = match at.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{} {hour}:{:02}:{:02} {half}",
        u8::from(at.month()),
        at.day(),
        at.year(),
        at.minute(),
        at.second()
    )
}

/// Entra's error JSON (`error`, `error_description` with the AADSTS code, trace and correlation
/// ids, `error_codes`...).
fn aad_error(shared: &Shared, status: u16, error: &str, code: u32, text: &str) -> Reply {
    let trace = random_uuid();
    let correlation = random_uuid();
    let now = now_rfc3339();
    Reply::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}"),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("{}/error?code={code}", shared.url),
        }),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token` with the client-credentials grant.
pub(super) fn token(shared: &Shared, body: &[u8], lifetime: Duration) -> Reply {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let refuse = |status, error, code, text: &str| aad_error(shared, status, error, code, text);
    if field("grant_type") != Some("client_credentials") {
        return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type. The simulator supports only 'client_credentials'.");
    }
    let Some(client_id) = field("client_id") else {
        return refuse(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    // A v2.0 scope is `{resource}/.default` for the client-credentials grant.
    let Some(audience) = field("scope")
        .and_then(|scope| scope.split_whitespace().next())
        .map(|scope| scope.strip_suffix("/.default").unwrap_or(scope).to_owned())
    else {
        return refuse(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let grant = if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return refuse(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            );
        }
        let federated = lock(&shared.entra.federated);
        match &federated.current {
            Some((current, _)) if current == assertion => {
                format!("federated:{}", federated.generation)
            }
            _ => {
                let refusal = match federated.retired.get(assertion) {
                    Some((issued, expired)) => refuse(
                        401,
                        "invalid_client",
                        700024,
                        &format!(
                            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                            now_rfc3339(),
                            rfc3339(*issued),
                            rfc3339(*expired)
                        ),
                    ),
                    None => refuse(
                        401,
                        "invalid_client",
                        700211,
                        &format!(
                            "No matching federated identity record found for presented assertion issuer '{}/oidc/'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
                            shared.url
                        ),
                    ),
                };
                drop(federated);
                shared.count_grant("refused:federated");
                return refusal;
            }
        }
    } else if let Some(secret) = field("client_secret") {
        // With `[[principal]]`s, each signs in with its own secret; without, the world's one.
        let expected = {
            let world = shared.world.lock();
            if world.principals.is_empty() {
                Some(world.client_secret.clone())
            } else {
                world
                    .principals
                    .iter()
                    .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
                    .map(|p| p.client_secret.clone())
            }
        };
        let Some(expected) = expected else {
            shared.count_grant("refused:client_secret");
            return refuse(
                400,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{client_id}' was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
            );
        };
        if secret != expected {
            shared.count_grant("refused:client_secret");
            return refuse(
                401,
                "invalid_client",
                7000215,
                &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
            );
        }
        "client_secret".to_owned()
    } else {
        return refuse(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    shared.count_grant(&grant);
    let (access_token, _) = shared.entra.issue(lifetime, &audience, client_id);
    let secs = lifetime.as_secs();
    Reply::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": secs,
            "ext_expires_in": secs,
            "access_token": access_token,
        }),
    )
}

/// The two managed-identity endpoints the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/metadata/identity/oauth2/token` (a VM's IMDS).
    Imds,
    /// `/msi/token` (App Service's `IDENTITY_ENDPOINT`).
    AppService,
}

impl Endpoint {
    pub(super) fn of(method: &str, path: &str) -> Option<Endpoint> {
        if !method.eq_ignore_ascii_case("GET") {
            return None;
        }
        match path {
            "/metadata/identity/oauth2/token" => Some(Endpoint::Imds),
            "/msi/token" => Some(Endpoint::AppService),
            _ => None,
        }
    }
}

/// A managed-identity token request.
pub(super) fn managed_identity(
    shared: &Shared,
    endpoint: Endpoint,
    query: Option<&str>,
    headers: &HeaderMap,
    lifetime: Duration,
    identities: &ManagedIdentities,
) -> Reply {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bad = |status: u16, error: &str, description: &str| {
        Reply::json(
            status,
            &json!({"error": error, "error_description": description}),
        )
    };
    let name = match endpoint {
        Endpoint::Imds => "imds",
        Endpoint::AppService => "app_service",
    };
    match endpoint {
        Endpoint::Imds if header("metadata") != Some("true") => {
            return bad(
                400,
                "invalid_request",
                "Required metadata header not specified",
            )
        }
        Endpoint::AppService
            if header("x-identity-header") != Some(&shared.entra.identity_header) =>
        {
            return bad(
                401,
                "unauthorized",
                "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
            )
        }
        _ => {}
    }
    if param("api-version").is_none() {
        return bad(
            400,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = param("resource").filter(|r| !r.is_empty()) else {
        return bad(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let client_id = match param("client_id") {
        Some(id) if identities.user_assigned.iter().any(|u| u == id) => id.to_owned(),
        Some(_) => return bad(400, "invalid_request", "Identity not found"),
        None if identities.system_assigned => "system-assigned".to_owned(),
        None => match identities.user_assigned.as_slice() {
            [only] => only.clone(),
            [] => return bad(400, "invalid_request", "Identity not found"),
            _ => return bad(400, "invalid_request", "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"),
        },
    };
    shared.count_grant(&format!("{name}:{client_id}"));
    let (access_token, expires_on) = shared.entra.issue(lifetime, resource, &client_id);
    let secs = lifetime.as_secs().to_string();
    Reply::json(
        200,
        &json!({
            "access_token": access_token,
            "client_id": client_id,
            "expires_in": secs,
            "ext_expires_in": secs,
            "expires_on": expires_on.unix_timestamp().to_string(),
            "not_before": OffsetDateTime::now_utc().unix_timestamp().to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}
