//! Our own `TokenCredential`s, for a bot that runs for weeks. azure_identity 0.21 reads the
//! workload-identity token file once (AKS rotates it about hourly, so the bot stops signing in a
//! few hours later), asks a VM's IMDS only for the system-assigned identity, and refreshes a
//! token 20 seconds before it expires. Here:
//!
//! - [`EntraApp`]: the client-credentials grant against
//!   `{AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token` with a client secret, or with the
//!   federated token of `AZURE_FEDERATED_TOKEN_FILE` as `client_assertion`
//!   (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`), the file
//!   read afresh for every token request (Microsoft identity platform, "OAuth 2.0 client
//!   credentials flow", access token request with a federated credential; the same form as
//!   azure_identity 0.21's `federated_credentials_flow`).
//! - [`ManagedIdentity`]: a VM's IMDS (`GET …/metadata/identity/oauth2/token?api-version=2018-02-01
//!   &resource=…&client_id=…`, header `Metadata: true`; `AZURE_POD_IDENTITY_AUTHORITY_HOST`
//!   replaces `http://169.254.169.254` as in the Python and Go SDKs) or App Service's
//!   (`IDENTITY_ENDPOINT?api-version=2019-08-01&resource=…&client_id=…`, header
//!   `X-IDENTITY-HEADER: {IDENTITY_HEADER}`), with `AZURE_CLIENT_ID` naming a user-assigned
//!   identity.
//! - [`Refreshing`]: caches each token and fetches the next one 5 minutes before it expires (at
//!   half its life when it lives less than 10 minutes), one fetch at a time; callers keep using
//!   the cached token while it is still valid, and a failed early refresh keeps it too.
//!
//! No secret (client secret, federated token, access token, `IDENTITY_HEADER`) reaches a log or
//! an error text: errors carry Entra ID's error code and the first line of its description.

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use azure_core::error::{Error, ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// Reads an environment variable (the process's, or a test's map).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where a VM's IMDS answers unless `AZURE_POD_IDENTITY_AUTHORITY_HOST` says otherwise.
const IMDS_HOST: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

/// Fetches a new token (no caching).
#[async_trait::async_trait]
pub(crate) trait Fetch: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, scopes: &[&str]) -> azure_core::Result<AccessToken>;
}

/// When to fetch the next token: 5 minutes before `expires_on`, or at half the lifetime when it
/// is shorter than 10 minutes.
fn refresh_at(fetched: OffsetDateTime, expires_on: OffsetDateTime) -> OffsetDateTime {
    let lifetime = expires_on - fetched;
    let early = time::Duration::minutes(5).min(lifetime / 2_i32);
    expires_on - early.max(time::Duration::ZERO)
}

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    refresh_at: OffsetDateTime,
    /// Past this the token is not handed out: a little before `expires_on`, for clock skew and
    /// the request's own time on the wire.
    usable_until: OffsetDateTime,
}

impl Cached {
    fn new(token: AccessToken, fetched: OffsetDateTime) -> Cached {
        let refresh_at = refresh_at(fetched, token.expires_on);
        let margin = ((token.expires_on - fetched) / 4_i32).min(time::Duration::seconds(30));
        Cached {
            usable_until: token.expires_on - margin.max(time::Duration::ZERO),
            refresh_at,
            token,
        }
    }
}

/// A [`Fetch`] with a token cache per scope list: the credential the clients hold.
#[derive(Debug)]
pub(crate) struct Refreshing<F> {
    source: F,
    cache: Mutex<HashMap<Vec<String>, Cached>>,
    /// Held while a token is fetched; holds why the last fetch failed, if it did. Callers that
    /// waited for a failed fetch share its error instead of queueing one fetch each behind an
    /// endpoint that is down.
    fetching: tokio::sync::Mutex<Option<String>>,
    /// Fetches finished so far.
    fetched: AtomicU64,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("expires_on", &self.token.expires_on)
            .finish_non_exhaustive()
    }
}

impl<F: Fetch> Refreshing<F> {
    pub(crate) fn new(source: F) -> Refreshing<F> {
        Refreshing {
            source,
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(None),
            fetched: AtomicU64::new(0),
        }
    }

    fn cached(&self, key: &[String]) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

#[async_trait::async_trait]
impl<F: Fetch> TokenCredential for Refreshing<F> {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let key: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let now = OffsetDateTime::now_utc();
        let cached = self.cached(&key);
        if let Some(c) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (mut fetching, waited_for) = match self.fetching.try_lock() {
            Ok(guard) => (guard, None),
            // Someone is fetching: a token still valid will do meanwhile.
            Err(_) => match cached.filter(|c| now < c.usable_until) {
                Some(c) => return Ok(c.token.clone()),
                None => {
                    let before = self.fetched.load(Ordering::SeqCst);
                    (self.fetching.lock().await, Some(before))
                }
            },
        };
        // A fetch that finished while we waited for the lock is as good as ours.
        let now = OffsetDateTime::now_utc();
        let cached = self.cached(&key);
        if let Some(c) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        if let (Some(before), Some(failure)) = (waited_for, fetching.as_ref()) {
            if self.fetched.load(Ordering::SeqCst) != before {
                return Err(credential_error(failure.clone()));
            }
        }
        let result = self.source.fetch(scopes).await;
        self.fetched.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(token) => {
                *fetching = None;
                let entry = Cached::new(token.clone(), OffsetDateTime::now_utc());
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, entry);
                Ok(token)
            }
            Err(error) => {
                *fetching = Some(error.to_string());
                match cached.filter(|c| OffsetDateTime::now_utc() < c.usable_until) {
                    Some(c) => {
                        tracing::warn!(error = %error, "could not refresh the Azure token early; using the current one until it expires");
                        Ok(c.token.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

/// How an app registration proves who it is.
pub(crate) enum ClientAuth {
    Secret(SecretString),
    /// A federated token, read from this file at every token request.
    FederatedTokenFile(PathBuf),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Secret(_) => f.write_str("Secret(<redacted>)"),
            ClientAuth::FederatedTokenFile(path) => {
                f.debug_tuple("FederatedTokenFile").field(path).finish()
            }
        }
    }
}

/// An app registration's client-credentials grant (client secret or workload identity).
#[derive(Debug)]
pub(crate) struct EntraApp {
    http: reqwest::Client,
    token_url: url::Url,
    client_id: String,
    auth: ClientAuth,
}

/// Why the environment does not describe a credential rdp-doctor can use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialSetupError {
    #[error("AZURE_TENANT_ID is empty or not a tenant id or domain")]
    TenantId,
    #[error("{var} is not a URL: {source}")]
    NotUrl {
        var: &'static str,
        source: url::ParseError,
    },
    #[error("{var} is not a usable URL: {source}")]
    Unusable {
        var: &'static str,
        source: url::ParseError,
    },
    #[error("{0} is set but AZURE_TENANT_ID or AZURE_CLIENT_ID is missing")]
    Incomplete(&'static str),
}

impl EntraApp {
    pub(crate) fn new(
        http: reqwest::Client,
        authority_host: &url::Url,
        tenant_id: &str,
        client_id: &str,
        auth: ClientAuth,
    ) -> Result<EntraApp, CredentialSetupError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !valid(tenant_id) {
            return Err(CredentialSetupError::TenantId);
        }
        let token_url = authority_host
            .join(&format!("/{tenant_id}/oauth2/v2.0/token"))
            .map_err(|source| CredentialSetupError::Unusable {
                var: "AZURE_AUTHORITY_HOST",
                source,
            })?;
        Ok(EntraApp {
            http,
            token_url,
            client_id: client_id.to_owned(),
            auth,
        })
    }
}

#[async_trait::async_trait]
impl Fetch for EntraApp {
    async fn fetch(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        // What is sent as proof, kept so it can be cut out of any error text.
        let proof = match &self.auth {
            ClientAuth::Secret(secret) => secret.clone(),
            ClientAuth::FederatedTokenFile(path) => {
                let assertion = tokio::fs::read_to_string(path).await.map_err(|e| {
                    credential_error(format!(
                        "workload identity: cannot read AZURE_FEDERATED_TOKEN_FILE {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?;
                if assertion.trim().is_empty() {
                    return Err(credential_error(format!(
                        "workload identity: AZURE_FEDERATED_TOKEN_FILE {} is empty",
                        path.display()
                    )));
                }
                SecretString::from(assertion.trim().to_owned())
            }
        };
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("client_id", &self.client_id)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("grant_type", "client_credentials");
            match &self.auth {
                ClientAuth::Secret(_) => form.append_pair("client_secret", proof.expose_secret()),
                ClientAuth::FederatedTokenFile(_) => form
                    .append_pair(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .append_pair("client_assertion", proof.expose_secret()),
            };
            form.finish()
        };
        let what = match self.auth {
            ClientAuth::Secret(_) => "client secret (AZURE_CLIENT_SECRET)",
            ClientAuth::FederatedTokenFile(_) => {
                "workload identity (the federated token of AZURE_FEDERATED_TOKEN_FILE)"
            }
        };
        let response = self
            .http
            .post(self.token_url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| request_error(what, &e))?;
        token_from(response, what, &proof, Expiry::InSeconds).await
    }
}

/// A managed identity's token endpoint: a VM's IMDS or App Service's `IDENTITY_ENDPOINT`.
pub(crate) struct ManagedIdentity {
    http: reqwest::Client,
    endpoint: url::Url,
    api_version: &'static str,
    /// The header that proves the request comes from inside the VM or app.
    header: (&'static str, SecretString),
    /// A user-assigned identity (`AZURE_CLIENT_ID`); without one, the system-assigned identity.
    client_id: Option<String>,
    what: &'static str,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("what", &self.what)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentity {
    /// A VM's IMDS at `host` (`http://169.254.169.254` on Azure).
    pub(crate) fn imds(
        http: reqwest::Client,
        host: &str,
        client_id: Option<String>,
    ) -> Result<ManagedIdentity, CredentialSetupError> {
        let endpoint = url::Url::parse(&format!("{}{IMDS_PATH}", host.trim_end_matches('/')))
            .map_err(|source| CredentialSetupError::Unusable {
                var: "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                source,
            })?;
        Ok(ManagedIdentity {
            http,
            endpoint,
            api_version: "2018-02-01",
            header: ("Metadata", SecretString::from("true")),
            client_id,
            what: "managed identity (IMDS)",
        })
    }

    /// App Service's or Azure Functions' `IDENTITY_ENDPOINT` with its `IDENTITY_HEADER`.
    pub(crate) fn app_service(
        http: reqwest::Client,
        endpoint: &str,
        identity_header: SecretString,
        client_id: Option<String>,
    ) -> Result<ManagedIdentity, CredentialSetupError> {
        let endpoint =
            url::Url::parse(endpoint).map_err(|source| CredentialSetupError::Unusable {
                var: "IDENTITY_ENDPOINT",
                source,
            })?;
        Ok(ManagedIdentity {
            http,
            endpoint,
            api_version: "2019-08-01",
            header: ("X-IDENTITY-HEADER", identity_header),
            client_id,
            what: "managed identity (App Service IDENTITY_ENDPOINT)",
        })
    }
}

#[async_trait::async_trait]
impl Fetch for ManagedIdentity {
    async fn fetch(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let [scope] = scopes else {
            return Err(credential_error(format!(
                "{}: exactly one scope is supported",
                self.what
            )));
        };
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("api-version", self.api_version)
                .append_pair("resource", resource);
            if let Some(client_id) = &self.client_id {
                query.append_pair("client_id", client_id);
            }
        }
        let response = self
            .http
            .get(url)
            .header(self.header.0, self.header.1.expose_secret())
            .send()
            .await
            .map_err(|e| request_error(self.what, &e))?;
        token_from(response, self.what, &self.header.1, Expiry::OnUnixTime).await
    }
}

/// Which field says when a token expires.
enum Expiry {
    /// Entra ID's `expires_in` (seconds from now).
    InSeconds,
    /// The managed-identity endpoints' `expires_on` (Unix time, as a string), else `expires_in`.
    OnUnixTime,
}

/// A number Azure sends either as a JSON number or as a string.
fn number(value: Option<&serde_json::Value>) -> Option<i64> {
    match value? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

async fn token_from(
    response: reqwest::Response,
    what: &str,
    proof: &SecretString,
    expiry: Expiry,
) -> azure_core::Result<AccessToken> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| request_error(what, &e))?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        return Err(refusal(what, status.as_u16(), &json, proof));
    }
    let token = json
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty());
    let now = OffsetDateTime::now_utc();
    let expires_on = match expiry {
        Expiry::OnUnixTime => number(json.get("expires_on"))
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .or_else(|| number(json.get("expires_in")).map(|s| now + time::Duration::seconds(s))),
        Expiry::InSeconds => {
            number(json.get("expires_in")).map(|s| now + time::Duration::seconds(s))
        }
    };
    match (token, expires_on) {
        (Some(token), Some(expires_on)) => {
            Ok(AccessToken::new(Secret::new(token.to_owned()), expires_on))
        }
        _ => Err(credential_error(format!(
            "{what}: the token endpoint answered {status} without an access token and its expiry"
        ))),
    }
}

/// Entra ID's (or a managed-identity endpoint's) refusal as one line: the HTTP status, the
/// `error` code, and the first line of `error_description` (which starts with the AADSTS code),
/// with the proof that was sent cut out should it ever be echoed.
fn refusal(what: &str, status: u16, json: &serde_json::Value, proof: &SecretString) -> Error {
    let text = |name: &str| json.get(name).and_then(serde_json::Value::as_str);
    let code = text("error").unwrap_or("no error code");
    let description = text("error_description")
        .or_else(|| text("message"))
        .and_then(|d| d.lines().next())
        .unwrap_or("")
        .trim();
    let proof = proof.expose_secret();
    // Short proofs (IMDS's `Metadata: true`) are no secret, and cutting them would garble text.
    let description = if proof.len() >= 8 {
        description.replace(proof, "<redacted>")
    } else {
        description.to_owned()
    };
    let description = super::redact(&description);
    credential_error(format!(
        "{what}: the token endpoint refused ({status} {code}): {description}"
    ))
}

fn request_error(what: &str, error: &reqwest::Error) -> Error {
    let cause = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection refused or host unreachable"
    } else {
        "the request failed"
    };
    // reqwest's own text names the URL; ours names only what was asked.
    credential_error(format!(
        "{what}: could not reach the token endpoint ({cause})"
    ))
}

fn credential_error(message: String) -> Error {
    Error::message(ErrorKind::Credential, message)
}

/// Tries each credential in order until one gives a token, then sticks to that one (as
/// DefaultAzureCredential does): managed identity, then the Azure CLI.
#[derive(Debug)]
pub(crate) struct Chain {
    sources: Vec<Arc<dyn TokenCredential>>,
    chosen: OnceLock<usize>,
}

impl Chain {
    pub(crate) fn new(sources: Vec<Arc<dyn TokenCredential>>) -> Chain {
        Chain {
            sources,
            chosen: OnceLock::new(),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        if let Some(source) = self.chosen.get().and_then(|i| self.sources.get(*i)) {
            return source.get_token(scopes).await;
        }
        let mut failures = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            match source.get_token(scopes).await {
                Ok(token) => {
                    let _ = self.chosen.set(i);
                    return Ok(token);
                }
                Err(error) => failures.push(super::redact(&error.to_string())),
            }
        }
        Err(credential_error(format!(
            "no usable Azure credential: {}",
            failures.join("; ")
        )))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        for source in &self.sources {
            source.clear_cache().await?;
        }
        Ok(())
    }
}

/// The environment's credential, first that applies: a client secret
/// (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), workload identity
/// (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`), App Service's managed
/// identity (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), then a VM's managed identity (IMDS), falling
/// back to the Azure CLI. `AZURE_CLIENT_ID` names the user-assigned managed identity.
/// `imds_http` should give up connecting quickly: off Azure nothing answers 169.254.169.254.
pub(crate) fn from_env(
    env: Env<'_>,
    http: reqwest::Client,
    imds_http: reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, CredentialSetupError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let authority = || -> Result<url::Url, CredentialSetupError> {
        let host = var("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned());
        url::Url::parse(&host).map_err(|source| CredentialSetupError::NotUrl {
            var: "AZURE_AUTHORITY_HOST",
            source,
        })
    };
    let app = |auth: ClientAuth,
               needs: &'static str|
     -> Result<Arc<dyn TokenCredential>, CredentialSetupError> {
        let (Some(tenant), Some(client)) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID")) else {
            return Err(CredentialSetupError::Incomplete(needs));
        };
        let app = EntraApp::new(http.clone(), &authority()?, &tenant, &client, auth)?;
        Ok(Arc::new(Refreshing::new(app)))
    };
    if let Some(secret) = var("AZURE_CLIENT_SECRET") {
        return app(
            ClientAuth::Secret(SecretString::from(secret)),
            "AZURE_CLIENT_SECRET",
        );
    }
    if let Some(file) = var("AZURE_FEDERATED_TOKEN_FILE") {
        return app(
            ClientAuth::FederatedTokenFile(PathBuf::from(file)),
            "AZURE_FEDERATED_TOKEN_FILE",
        );
    }
    let client_id = var("AZURE_CLIENT_ID");
    if let (Some(endpoint), Some(header)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
        let identity =
            ManagedIdentity::app_service(http, &endpoint, SecretString::from(header), client_id)?;
        return Ok(Arc::new(Refreshing::new(identity)));
    }
    let host = var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS_HOST.to_owned());
    let imds = ManagedIdentity::imds(imds_http, &host, client_id)?;
    Ok(Arc::new(Chain::new(vec![
        Arc::new(Refreshing::new(imds)),
        Arc::new(azure_identity::AzureCliCredential::new()),
    ])))
}

/// How long to wait for IMDS to accept a connection before trying the Azure CLI.
pub(crate) const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_refreshed_five_minutes_early_or_at_half_life() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let hour = t0 + time::Duration::hours(1);
        assert_eq!(refresh_at(t0, hour), hour - time::Duration::minutes(5));
        let short = t0 + time::Duration::seconds(4);
        assert_eq!(refresh_at(t0, short), t0 + time::Duration::seconds(2));
        // An already expired token is due at once.
        assert_eq!(refresh_at(t0, t0), t0);
    }
}
