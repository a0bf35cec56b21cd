//! The only module that speaks Azure Resource Manager: SDK clients, credentials, retries,
//! long-running operations, VM resolution and boot-diagnostics downloads.
//!
//! **Architecture Invariant:** no other module names an `azure_*` SDK type. What leaves this
//! module is our own plain data (`diagnose` facts, [`VmRef`]) or an [`ArmError`].
//!
//! **Architecture Invariant:** secrets stay inside. The client secret lives in the credential,
//! bearer tokens in request headers, and boot-diagnostics SAS URLs only in local variables of
//! [`Arm::boot_diagnostics`]; errors are rebuilt from status, code and Azure's message.

mod activity;
mod bastion;
mod credential;
mod directory;
mod error;
mod fleet;
mod gates;
mod lro;
mod pace;
mod path;
mod permissions;
mod read;
mod resolve;
mod retry;
mod run_command;
mod span;
mod write;

pub use crate::domain::{validate_group, validate_vm_name, ResourceId, ResourceIdError};
pub use directory::VmDirectory;
pub use error::{parse_error_body, redact, ArmError};
pub use fleet::{is_subscription_id, Fleet, ScopeError, SweepScope};
pub use gates::JitInitiate;
pub use pace::{PacingStats, Priority};
pub use path::{NetworkWatcher, SubnetLinks};
pub use permissions::Grants;
pub use read::HealthOutcome;
pub(crate) use resolve::{is_authorization_failed, pick, refused_action, scope_text};
pub use resolve::{QueryError, ResolveError, VmQuery, VmRef, VmSummary};
pub use run_command::RunCommandOutput;
pub use write::{
    free_priority_below, new_update_tag, ConfiguredRule, ExtensionInfo, ExtensionState, NewRdpRule,
    OperationHandle, PowerAction, RuleState, VmAccess,
};

use azure_core::auth::TokenCredential;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The public cloud's ARM endpoint; its token scope is `https://management.azure.com/.default`.
pub const PUBLIC_ARM_ENDPOINT: &str = "https://management.azure.com";

/// How rdp-doctor talks to ARM. Defaults suit a war room: fail within about a minute rather than
/// hang, retry throttling and transient 5xx a few times.
#[derive(Debug, Clone)]
pub struct ArmSettings {
    pub endpoint: url::Url,
    /// Per HTTP request (a hang becomes a timeout after this).
    pub request_timeout: Duration,
    /// Retries of 408/429/5xx and connection errors, honouring `Retry-After`.
    pub max_retries: u32,
    pub max_retry_elapsed: Duration,
    /// The whole of one long-running operation.
    pub operation_timeout: Duration,
    /// The most a Run Command is followed for before it is reported as timed out
    /// (`ArmError::Timeout`; `[azure] run_command_timeout_secs`, and the guest checks' bound too).
    /// Azure lets a script run up to 90 minutes; a read takes tens of seconds.
    pub run_command_timeout: Duration,
    /// Poll interval when Azure sends no `Retry-After`.
    pub poll_interval: Duration,
    /// How fast ARM refills a subscription's request bucket, per second: requests are paced
    /// to this rate once Azure's `x-ms-ratelimit-remaining-*` headers say the bucket is empty.
    pub refill_per_sec: f64,
    /// The fraction of a subscription's ARM bucket a sweep may spend (0 < share <= 1); the rest
    /// is kept for people's checks, which also go ahead of a sweep's queued requests.
    pub sweep_share: f64,
    /// The most Windows VMs one sweep checks; a larger scope is refused before any per-VM
    /// request, naming its size and how to narrow it.
    pub sweep_max_vms: usize,
    /// After a start, restart or redeploy, how long the re-check waits for the VM to run with
    /// a Ready guest agent before it judges (Azure shows the agent Not Ready for a minute or
    /// more after a boot); past it the outcome says the VM is still settling.
    pub settle_timeout: Duration,
    /// How often the VM is read while it settles (one GET with its instance view each time).
    pub settle_poll: Duration,
}

impl ArmSettings {
    /// A sweep may spend 80% of the bucket; 20% (50 of ARM's 250 reads) stays for people.
    pub const DEFAULT_SWEEP_SHARE: f64 = 0.8;
    /// At ARM's 25 reads a second and two requests per VM, 1,000 VMs take about 80 s.
    pub const DEFAULT_SWEEP_MAX_VMS: usize = 1000;
    /// Azure's Run Command takes tens of seconds, longer on a busy guest.
    pub const DEFAULT_RUN_COMMAND_TIMEOUT: Duration = Duration::from_secs(150);

    pub fn new(endpoint: url::Url) -> ArmSettings {
        ArmSettings {
            endpoint,
            request_timeout: Duration::from_secs(30),
            max_retries: 4,
            max_retry_elapsed: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(600),
            run_command_timeout: ArmSettings::DEFAULT_RUN_COMMAND_TIMEOUT,
            poll_interval: Duration::from_secs(2),
            // ARM's documented subscription read bucket: 250, refilled 25 a second.
            refill_per_sec: 25.0,
            sweep_share: ArmSettings::DEFAULT_SWEEP_SHARE,
            sweep_max_vms: ArmSettings::DEFAULT_SWEEP_MAX_VMS,
            settle_timeout: Duration::from_secs(300),
            settle_poll: Duration::from_secs(10),
        }
    }

    /// The token scope: the public cloud's well-known one, else `<endpoint>/.default`.
    pub fn scope(&self) -> String {
        let endpoint = self.endpoint.as_str().trim_end_matches('/');
        if endpoint.eq_ignore_ascii_case(PUBLIC_ARM_ENDPOINT) {
            format!("{PUBLIC_ARM_ENDPOINT}/.default")
        } else {
            format!("{endpoint}/.default")
        }
    }
}

/// Counts every HTTP request that reaches ARM (retries and polls included).
#[derive(Debug)]
struct CountingClient {
    inner: reqwest::Client,
    count: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl azure_core::HttpClient for CountingClient {
    async fn execute_request(
        &self,
        request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        self.count.fetch_add(1, Ordering::Relaxed);
        match azure_core::HttpClient::execute_request(&self.inner, request).await {
            Ok(response) => {
                span::answered(request, &response);
                Ok(response)
            }
            Err(e) => {
                span::unanswered(request);
                Err(e)
            }
        }
    }
}

/// A connected ARM session: one credential, the three management clients, and a pipeline for
/// polling operation URLs.
#[derive(Clone)]
pub struct Arm {
    compute: azure_mgmt_compute::package_2024_07_01::Client,
    network: azure_mgmt_network::package_2024_03::Client,
    health: azure_mgmt_resourcehealth::package_2024_02::Client,
    pipeline: azure_core::Pipeline,
    credential: Arc<dyn TokenCredential>,
    scopes: Vec<String>,
    /// For boot-diagnostics blobs: plain SAS GETs, no ARM token.
    blobs: reqwest::Client,
    requests: Arc<AtomicU64>,
    pacer: Arc<pace::Pacer>,
    priority: Priority,
    settings: ArmSettings,
}

/// The SDK clients of one [`Arm`], built over one transport and pacing policy.
struct Clients {
    compute: azure_mgmt_compute::package_2024_07_01::Client,
    network: azure_mgmt_network::package_2024_03::Client,
    health: azure_mgmt_resourcehealth::package_2024_02::Client,
    pipeline: azure_core::Pipeline,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm")
            .field("endpoint", &self.settings.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Arm {
    /// Build clients from the process environment's credential (see [`Arm::connect_from`]).
    pub fn connect(settings: ArmSettings) -> Result<Arm, ArmError> {
        Arm::connect_from(settings, &|name| std::env::var(name).ok())
    }

    /// Build clients from the credential `env` describes, the first that applies: a client
    /// secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), workload identity
    /// (`AZURE_FEDERATED_TOKEN_FILE`, re-read at every token request), App Service's managed
    /// identity (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), a VM's managed identity (IMDS, or
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`), then the Azure CLI. `AZURE_CLIENT_ID` without a
    /// secret or token file names a user-assigned managed identity; `AZURE_AUTHORITY_HOST` the
    /// Entra ID host. Tokens are refreshed before they expire.
    pub fn connect_from(
        settings: ArmSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arm, ArmError> {
        let http = Arm::http(&settings, Duration::from_secs(10))?;
        let imds = Arm::http(&settings, credential::IMDS_CONNECT_TIMEOUT)?;
        let credential = credential::from_env(env, http.clone(), imds).map_err(|e| {
            ArmError::Config(format!(
                "the Azure credential is incomplete: {}",
                redact(&e.to_string())
            ))
        })?;
        Ok(Arm::with_credential(settings, credential, http))
    }

    /// Build clients with an explicit client-secret credential (the in-process simulator).
    pub fn connect_with_secret(
        settings: ArmSettings,
        authority_host: url::Url,
        tenant_id: &str,
        client_id: &str,
        client_secret: secrecy::SecretString,
    ) -> Result<Arm, ArmError> {
        let http = Arm::http(&settings, Duration::from_secs(10))?;
        let app = credential::EntraApp::new(
            http.clone(),
            &authority_host,
            tenant_id,
            client_id,
            credential::ClientAuth::Secret(client_secret),
        )
        .map_err(|e| ArmError::Config(e.to_string()))?;
        let credential: Arc<dyn TokenCredential> = Arc::new(credential::Refreshing::new(app));
        Ok(Arm::with_credential(settings, credential, http))
    }

    fn http(settings: &ArmSettings, connect: Duration) -> Result<reqwest::Client, ArmError> {
        reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(connect.min(settings.request_timeout))
            .build()
            .map_err(|e| ArmError::Config(format!("cannot build the HTTP client: {e}")))
    }

    fn with_credential(
        settings: ArmSettings,
        credential: Arc<dyn TokenCredential>,
        http: reqwest::Client,
    ) -> Arm {
        let requests = Arc::new(AtomicU64::new(0));
        let pacer = Arc::new(pace::Pacer::new(
            settings.refill_per_sec,
            settings.sweep_share,
        ));
        let priority = Priority::Interactive;
        let clients = Arm::clients(&settings, &credential, &http, &requests, &pacer, priority);
        let scopes = vec![settings.scope()];
        Arm {
            compute: clients.compute,
            network: clients.network,
            health: clients.health,
            pipeline: clients.pipeline,
            credential,
            scopes,
            blobs: http,
            requests,
            pacer,
            priority,
            settings,
        }
    }

    fn clients(
        settings: &ArmSettings,
        credential: &Arc<dyn TokenCredential>,
        http: &reqwest::Client,
        requests: &Arc<AtomicU64>,
        pacer: &Arc<pace::Pacer>,
        priority: Priority,
    ) -> Clients {
        let transport: Arc<dyn azure_core::HttpClient> = Arc::new(CountingClient {
            inner: http.clone(),
            count: requests.clone(),
        });
        let mut options = azure_core::ClientOptions::default()
            .retry(azure_core::RetryOptions::none())
            .transport(azure_core::TransportOptions::new(transport));
        options
            .per_retry_policies_mut()
            .push(Arc::new(retry::ArmRetry {
                max_retries: settings.max_retries,
                max_elapsed: settings.max_retry_elapsed,
                initial_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(30),
            }));
        // Inside the retry policy, so every attempt is paced and every answer teaches it.
        options
            .per_retry_policies_mut()
            .push(Arc::new(pace::Pacing {
                pacer: pacer.clone(),
                priority,
            }));
        let scopes = vec![settings.scope()];
        let endpoint = settings.endpoint.clone();
        let compute = azure_mgmt_compute::package_2024_07_01::Client::new(
            endpoint.clone(),
            credential.clone(),
            scopes.clone(),
            options.clone(),
        );
        let network = azure_mgmt_network::package_2024_03::Client::new(
            endpoint.clone(),
            credential.clone(),
            scopes.clone(),
            options.clone(),
        );
        let health = azure_mgmt_resourcehealth::package_2024_02::Client::new(
            endpoint,
            credential.clone(),
            scopes,
            options.clone(),
        );
        let pipeline = azure_core::Pipeline::new(
            Some("rdp-doctor"),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            Vec::new(),
        );
        Clients {
            compute,
            network,
            health,
            pipeline,
        }
    }

    /// The same connection for a sweep: its requests are background ones that share this
    /// `Arm`'s pacer, spend at most `sweep_share` of a subscription's ARM bucket and queue
    /// behind people's requests. It counts its own requests ([`Arm::request_count`]), so a
    /// sweep's figures leave out the checks people ran meanwhile, and theirs leave out it.
    pub fn for_sweep(&self) -> Arm {
        let requests = Arc::new(AtomicU64::new(0));
        let priority = Priority::Background;
        let clients = Arm::clients(
            &self.settings,
            &self.credential,
            &self.blobs,
            &requests,
            &self.pacer,
            priority,
        );
        Arm {
            compute: clients.compute,
            network: clients.network,
            health: clients.health,
            pipeline: clients.pipeline,
            credential: self.credential.clone(),
            scopes: self.scopes.clone(),
            blobs: self.blobs.clone(),
            requests,
            pacer: self.pacer.clone(),
            priority,
            settings: self.settings.clone(),
        }
    }

    /// Whose requests this `Arm` sends: a person's, or a sweep's ([`Arm::for_sweep`]).
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// What pacing to ARM's request budget has cost requests of this `Arm`'s priority so far
    /// (every `Arm` of that priority on this connection), the 429s they saw, and how many are
    /// waiting now.
    pub fn pacing(&self) -> PacingStats {
        self.pacer.stats(self.priority)
    }

    /// HTTP requests this `Arm` sent to ARM so far (retries and polls included; token and blob
    /// requests not). Clones share the count; an [`Arm::for_sweep`] keeps its own.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &ArmSettings {
        &self.settings
    }

    fn map_err(&self, error: azure_core::Error, what: &str) -> ArmError {
        ArmError::from_azure(&error, what, self.settings.request_timeout)
    }

    /// Whether an ARM token can be had now (from the cache, or signing in): a readiness probe.
    /// The token itself never leaves.
    pub async fn sign_in_check(&self) -> Result<(), ArmError> {
        self.bearer().await.map(|_| ())
    }

    async fn bearer(&self) -> Result<String, ArmError> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let token = self
            .credential
            .get_token(&scopes)
            .await
            .map_err(|e| self.map_err(e, "signing in"))?;
        Ok(format!("Bearer {}", token.token.secret()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_cloud_scope_is_the_well_known_one() {
        let settings = ArmSettings::new(url::Url::parse("https://management.azure.com/").unwrap());
        assert_eq!(settings.scope(), "https://management.azure.com/.default");
        let local = ArmSettings::new(url::Url::parse("http://127.0.0.1:8080").unwrap());
        assert_eq!(local.scope(), "http://127.0.0.1:8080/.default");
    }
}
