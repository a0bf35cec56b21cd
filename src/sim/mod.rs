//! The Azure simulator: ARM, an Entra ID token endpoint and boot-diagnostics blobs on one port,
//! answering with the JSON shapes of Microsoft's published examples for a world described in TOML.
//!
//! It is the demo (`--simulate`), the on-call training ground and the backbone of the tests: the
//! real SDK clients talk to it over HTTP. It can add latency, throttle like ARM's token bucket and
//! inject faults.
//!
//! **Architecture Invariant:** the simulator knows nothing of rdp-doctor's runbook or diagnosis;
//! it only models Azure. Nothing outside tests and the `simulate` command depends on it.
//!
//! Layout: `world` (the data, TOML and test builder), `route` (ARM's routing table), `arm` (hands
//! each route to its provider's module), one module per resource provider with its reads and
//! writes in ARM's JSON (`compute`: VMs, boot diagnostics, power actions, extensions;
//! `network`: NICs, public IPs, subnets, NSGs and their rules, effective rules; `health`:
//! Resource Health; `authorization`: resource groups and permissions), `resource` (what they
//! share: request context, ids, lookups, paging, accepting a write), `lro` (long-running
//! operations), `throttle` (token bucket, faults), `blob` (screenshot, serial log), `entra`
//! (tokens), `rbac` (Azure RBAC).

mod activity;
mod arm;
mod authorization;
mod blob;
mod compute;
mod entra;
mod health;
mod lro;
mod network;
mod rbac;
mod resource;
mod roles;
mod route;
mod security;
mod throttle;
mod world;

pub use entra::ManagedIdentities;
pub use throttle::{BucketOptions, ComputeGetBuckets, Fault, FaultKind};
pub use world::{
    Activity, AgentState, Allocation, Extension, Guest, Health, ListedInstanceView, Nsg, Os,
    PowerState, Principal, PublicIp, RecommendedAction, RoleAssignment, Rule, Screen,
    ServiceStatus, Sku, StartType, Subscription, Vm, VmView, World, WorldError, WorldHandle,
    DEFAULT_SUBSCRIPTION, VMACCESS_PUBLISHER, VMACCESS_TYPE,
};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use route::{Query, Route};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the simulator misbehaves. Change it at runtime with [`Simulator::set_options`].
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Added to every request (ARM, token and blob; not `/_sim`).
    pub latency: Duration,
    /// ARM's read bucket: every GET takes a token; 429 + `Retry-After` when empty. Like ARM's,
    /// there is one per subscription (the id in the request path, operation-status URLs
    /// included); requests naming no subscription share one more. `None`: never throttles, and
    /// the headers report what an idle subscription had under the old hourly limits.
    /// Default: [`BucketOptions::AZURE_READS`].
    pub bucket: Option<BucketOptions>,
    /// ARM's write bucket, and (with the same size) its delete bucket: every request that is
    /// not a GET takes a token from one of them, the POST actions that change nothing
    /// (effective security rules, boot diagnostics URIs) included, as ARM counts them
    /// ("Troubleshooting API throttling errors": `-reads` on GET requests, `-writes` on
    /// non-GET). Default: [`BucketOptions::AZURE_WRITES`].
    pub write_bucket: Option<BucketOptions>,
    /// A service that overrides ARM's limit for one resource type: requests whose path contains
    /// this text (case-insensitive) spend a bucket of their own per subscription, reported in
    /// `x-ms-ratelimit-remaining-subscription-resource-requests` instead of the reads or writes
    /// ("Understand how Azure Resource Manager throttles requests": returned only where a
    /// service has overridden the default limit). `None` by default: no recorded answer of the
    /// services rdp-doctor calls carries it.
    pub resource_type_limit: Option<(String, BucketOptions)>,
    /// Compute's own buckets for reading a VM (its "Low Cost Get" policy), checked after ARM's:
    /// 429 `OperationNotAllowed` with Compute's details when empty. Default:
    /// [`ComputeGetBuckets::AZURE`]; `None` never throttles and sends no
    /// `x-ms-ratelimit-remaining-resource`.
    pub compute_get: Option<ComputeGetBuckets>,
    /// How long the Network resource provider takes to compute a NIC's effective security
    /// rules: the POST answers 202 with a `Location`, and polls before this time has passed
    /// answer 202 again. Azure CLI's recording of `az network nic list-effective-nsg` shows the
    /// result ready at the first poll, 10 s after the POST, and no `Retry-After` on the 202, so
    /// by default none is sent and a client polls at its own interval. Default:
    /// [`SimOptions::AZURE_EFFECTIVE_NSG`]; [`SimOptions::fast`] makes it instant.
    pub effective_nsg_time: Duration,
    /// Injected faults; the first matching one wins.
    pub faults: Vec<Fault>,
    /// How many polls of a long-running operation answer "in progress" before it is done. With
    /// 0 the first poll gets the result (for effective NSGs, once `effective_nsg_time` has
    /// passed as well). Effective routes, IP flow verify and next hop ignore it: they are ready
    /// once `effective_nsg_time` has passed.
    pub lro_polls: u32,
    /// `Retry-After` (seconds) on 202 and in-progress answers; 0 keeps tests fast. Effective
    /// NSGs send it only when it is not 0 (Azure sends none).
    pub retry_after_secs: u64,
    /// Write operations that are accepted but end `Failed`, leaving the world unchanged. The
    /// first whose path substring matches an accepted write wins.
    pub fail_operations: Vec<FailOperation>,
    /// How long a VM takes to settle once a start, restart or redeploy has brought it back to
    /// running: until then its guest agent reports Not Ready ("VM status blob not found.") and
    /// Resource Health still shows it Unavailable after the restart, as Azure does for a minute
    /// or more. `None`: [`SimOptions::AZURE_SETTLE`].
    pub settle: Option<Duration>,
    /// How long a Run Command takes from the POST until its operation has succeeded (polls
    /// before then answer "in progress"). Azure's take tens of seconds ("Run scripts in your
    /// Windows VM by using action Run Commands"); default [`SimOptions::AZURE_RUN_COMMAND`],
    /// [`SimOptions::fast`] makes it instant and `--simulate` a few seconds.
    pub run_command_delay: Duration,
    /// How long the access tokens it issues live (Entra ID's are 60 to 90 minutes; tests use
    /// seconds). ARM refuses an expired one with 401 `ExpiredAuthenticationToken`.
    pub token_lifetime: Duration,
    /// The managed identities its IMDS and App Service endpoints issue tokens for.
    pub managed_identities: ManagedIdentities,
}

impl SimOptions {
    /// How long a VM takes to settle after a power action unless told otherwise: a minute, the
    /// short end of what Azure shows.
    pub const AZURE_SETTLE: Duration = Duration::from_secs(60);

    /// How long a Run Command takes unless told otherwise.
    pub const AZURE_RUN_COMMAND: Duration = Duration::from_secs(20);

    /// How long effective security rules take unless told otherwise: a few seconds (Azure CLI's
    /// recording had them ready within 10 s).
    pub const AZURE_EFFECTIVE_NSG: Duration = Duration::from_secs(3);

    /// Azure's behaviour, less the waits that only cost a test time: effective security rules
    /// are ready at once. Every bucket and limit stays Azure's. For tests that are not about
    /// how long Azure takes.
    pub fn fast() -> SimOptions {
        SimOptions {
            effective_nsg_time: Duration::ZERO,
            run_command_delay: Duration::ZERO,
            ..SimOptions::default()
        }
    }

    /// The settling time in force.
    pub fn settle(&self) -> Duration {
        self.settle.unwrap_or(SimOptions::AZURE_SETTLE)
    }
}

/// A write operation that is accepted (202 or 200/201) and then ends `Failed` with this error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOperation {
    /// Substring of the write's path to match, e.g. "/redeploy" or "/extensions/".
    pub path_contains: String,
    /// ARM error code of the failed operation, e.g. "AllocationFailed".
    pub code: String,
    /// ARM error message.
    pub message: String,
}

impl FailOperation {
    /// Writes whose path contains `path_contains` end Failed with `code` and `message`.
    pub fn new(path_contains: &str, code: &str, message: &str) -> FailOperation {
        FailOperation {
            path_contains: path_contains.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency: Duration::ZERO,
            bucket: Some(BucketOptions::AZURE_READS),
            write_bucket: Some(BucketOptions::AZURE_WRITES),
            compute_get: Some(ComputeGetBuckets::AZURE),
            resource_type_limit: None,
            effective_nsg_time: SimOptions::AZURE_EFFECTIVE_NSG,
            faults: Vec::new(),
            lro_polls: 1,
            retry_after_secs: 0,
            fail_operations: Vec::new(),
            settle: None,
            run_command_delay: SimOptions::AZURE_RUN_COMMAND,
            token_lifetime: Duration::from_secs(3599),
            managed_identities: ManagedIdentities::default(),
        }
    }
}

/// Request counts, as served by `GET /_sim/stats`.
#[derive(Serialize, Clone, Debug, Default)]
pub struct SimStats {
    /// ARM requests (not token, blob or `/_sim`), including throttled and faulted ones.
    pub requests: u64,
    /// Token requests (Entra ID's token endpoint and the managed-identity endpoints).
    pub token_requests: u64,
    /// Tokens issued and refused, by how the client proved who it is: "client_secret",
    /// "federated:N" (the Nth federated token), "imds:CLIENT", "app_service:CLIENT",
    /// "refused:client_secret", "refused:federated".
    pub grants: BTreeMap<String, u64>,
    /// Blob downloads.
    pub blob_requests: u64,
    /// ARM requests answered 429 by the token bucket.
    pub throttled: u64,
    /// Most requests in flight at once (all kinds but `/_sim`).
    pub peak_in_flight: u64,
    /// Requests per route, e.g. "GET virtualMachines", "POST token", "GET blob".
    pub by_route: BTreeMap<String, u64>,
    /// Answered requests in order (the latest 10,000).
    pub log: Vec<RequestLogEntry>,
}

/// One answered request.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestLogEntry {
    /// HTTP method.
    pub method: String,
    /// Path and query as requested.
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
    /// When the request arrived, in microseconds since the simulator started (before any
    /// configured latency).
    pub started_us: u64,
    /// When it was answered, in microseconds since the simulator started. Two requests were in
    /// flight together when their `started_us..finished_us` ranges overlap.
    pub finished_us: u64,
    /// The byte range asked for (`x-ms-range`, else `Range`), if any.
    pub range: Option<String>,
    /// Bytes of the answer's body.
    pub body_bytes: u64,
    /// The `x-ms-request-id` answered (Azure sends one on every ARM answer, with
    /// `x-ms-correlation-request-id`: Microsoft Learn, "Azure Resource Manager request
    /// headers"; its REST spec's examples show both).
    pub request_id: String,
}

const LOG_CAPACITY: usize = 10_000;

/// A running simulator. Dropping it stops the server too; [`Simulator::shutdown`] also waits.
pub struct Simulator {
    url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `addr` (e.g. "127.0.0.1:0") and serves in a tokio task. Returns once listening.
    pub async fn start(addr: &str, world: World, options: SimOptions) -> anyhow::Result<Simulator> {
        world.validate()?;
        let listener = crate::net::listen(addr)
            .await
            .with_context(|| format!("simulator could not listen on {addr}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let activity = activity::Log::from_world(&world, OffsetDateTime::now_utc());
        let shared = Arc::new(Shared {
            url: url.clone(),
            activity,
            world: WorldHandle::new(world),
            live: Mutex::new(Live::new(options)),
            stats: Mutex::new(SimStats::default()),
            log: Mutex::new(VecDeque::new()),
            answered: watch::Sender::new(0),
            epoch: Instant::now(),
            in_flight: AtomicU64::new(0),
            entra: entra::Entra::new(),
            lro: lro::Registry::default(),
            signer: blob::Signer::new(),
            stopped: stopped.clone(),
        });
        let app = Router::new()
            .fallback(dispatch)
            .with_state(Arc::clone(&shared));
        let mut shutdown = stopped;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "simulator server failed");
            }
        });
        Ok(Simulator {
            url,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// "http://127.0.0.1:PORT" without a trailing slash: the ARM endpoint and the authority host.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Request counts so far (the same data as `GET /_sim/stats`).
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Changes each time a request is answered (and logged): tests wait on it for what the
    /// simulator saw, instead of polling [`Simulator::stats`].
    pub fn watch_answers(&self) -> watch::Receiver<u64> {
        self.shared.answered.subscribe()
    }

    /// The access tokens its token endpoint issued, so tests can search logs for them.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.entra.issued()
    }

    /// Projects a new federated service-account token, as the kubelet does about hourly on AKS,
    /// and returns it for the test to write where `AZURE_FEDERATED_TOKEN_FILE` points. From now
    /// on Entra ID accepts only it: the previous one is refused as expired (AADSTS700024).
    pub fn rotate_federated_token(&self) -> String {
        self.shared.entra.rotate_federated()
    }

    /// The `IDENTITY_HEADER` secret App Service gives an app; its `IDENTITY_ENDPOINT` is
    /// `{url}/msi/token`.
    pub fn identity_header(&self) -> String {
        self.shared.entra.identity_header()
    }

    /// The live world, to read or change while the simulator serves.
    pub fn world(&self) -> WorldHandle {
        self.shared.world.clone()
    }

    /// Replaces latency, buckets (all refilled) and faults (their `times` restart).
    pub fn set_options(&self, options: SimOptions) {
        *lock(&self.shared.live) = Live::new(options);
    }

    /// Stops serving; requests stuck in a `Hang` fault are released.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            // Graceful shutdown waits for open connections; a stuck client must not hold us.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves `world_file` on `listen` until Ctrl-C (`rdp-doctor simulate`).
pub async fn run_standalone(listen: &str, world_file: &std::path::Path) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(world_file)
        .await
        .with_context(|| format!("could not read world file {}", world_file.display()))?;
    let world = World::from_toml_str(&text)
        .with_context(|| format!("world file {}", world_file.display()))?;
    let options = SimOptions {
        retry_after_secs: 1,
        ..SimOptions::default()
    };
    let sim = Simulator::start(listen, world, options).await?;
    println!("simulator listening on {}", sim.url());
    tokio::signal::ctrl_c()
        .await
        .context("could not wait for Ctrl-C")?;
    sim.shutdown().await;
    Ok(())
}

/// The demo world of `commands/demo-world.toml`, compiled in.
pub fn demo_world() -> World {
    World::from_toml_str(include_str!("../../commands/demo-world.toml"))
        .expect("commands/demo-world.toml is valid (checked by tests/it/sim.rs)")
}

// ---------------------------------------------------------------------------------------------
// Server state

struct Shared {
    url: String,
    /// The Activity Log: the world's events and every write served.
    activity: activity::Log,
    world: WorldHandle,
    live: Mutex<Live>,
    /// Counters; its `log` stays empty: the log lives in `log`, where dropping the oldest entry
    /// costs nothing.
    stats: Mutex<SimStats>,
    log: Mutex<VecDeque<RequestLogEntry>>,
    /// Requests answered so far, bumped as each lands in `log`: a watch, so a test can wait for
    /// the next answer instead of polling `stats`.
    answered: watch::Sender<u64>,
    /// When the simulator started: the zero of `RequestLogEntry::started_us`.
    epoch: Instant,
    in_flight: AtomicU64,
    entra: entra::Entra,
    lro: lro::Registry,
    signer: blob::Signer,
    stopped: watch::Receiver<bool>,
}

/// Options with their running state (bucket levels, faults left).
struct Live {
    options: SimOptions,
    /// One token bucket per subscription id (lowercase; "" for requests without one) and
    /// kind of request, made full on its first request.
    buckets: HashMap<(String, Spend), throttle::TokenBucket>,
    /// Compute's buckets: "sub" for a subscription's, "sub/rg/vm" (lowercase) for a VM's.
    compute: HashMap<String, throttle::TokenBucket>,
    faults: throttle::Faults,
}

impl Live {
    fn new(options: SimOptions) -> Live {
        Live {
            buckets: HashMap::new(),
            compute: HashMap::new(),
            faults: throttle::Faults::new(&options.faults),
            options,
        }
    }

    /// Takes a token from `subscription`'s bucket for `spend`: `None` without throttling, else
    /// `Ok(remaining)` or `Err(retry_after_seconds)`.
    fn take_token(
        &mut self,
        subscription: &str,
        spend: Spend,
        now: Instant,
    ) -> Option<Result<u32, u64>> {
        let options = match spend {
            Spend::Reads => self.options.bucket.as_ref()?,
            Spend::Writes | Spend::Deletes => self.options.write_bucket.as_ref()?,
            Spend::ResourceType => &self.options.resource_type_limit.as_ref()?.1,
        };
        let bucket = self
            .buckets
            .entry((subscription.to_ascii_lowercase(), spend))
            .or_insert_with(|| throttle::TokenBucket::new(options.clone(), now));
        Some(bucket.take(now))
    }
}

impl Live {
    /// Takes a token from the subscription's and the VM's Compute "Low Cost Get" buckets:
    /// `None` without them, else `Ok((subscription_left, vm_left))`, or `Err((policy,
    /// capacity, retry_after_seconds))` naming the empty one (neither is spent then).
    fn take_compute_get(
        &mut self,
        sub: &str,
        rg: &str,
        vm: &str,
        now: Instant,
    ) -> Option<Result<(u32, u32), ComputeRefusal>> {
        let options = self.options.compute_get.clone()?;
        let sub_key = sub.to_ascii_lowercase();
        let vm_key = format!(
            "{sub_key}/{}/{}",
            rg.to_ascii_lowercase(),
            vm.to_ascii_lowercase()
        );
        let vm_bucket = self
            .compute
            .entry(vm_key.clone())
            .or_insert_with(|| throttle::TokenBucket::new(options.resource.clone(), now));
        let vm_left = match vm_bucket.take(now) {
            Ok(left) => left,
            Err(wait) => return Some(Err(("LowCostGetResource", options.resource.capacity, wait))),
        };
        let sub_bucket = self
            .compute
            .entry(sub_key)
            .or_insert_with(|| throttle::TokenBucket::new(options.subscription.clone(), now));
        match sub_bucket.take(now) {
            Ok(sub_left) => Some(Ok((sub_left, vm_left))),
            Err(wait) => {
                // The VM's token was taken for nothing: give it back.
                if let Some(b) = self.compute.get_mut(&vm_key) {
                    b.give_back();
                }
                Some(Err((
                    "LowCostGetSubscriptionMaximum",
                    options.subscription.capacity,
                    wait,
                )))
            }
        }
    }
}

impl Live {
    /// The bucket a request spends: a resource type's own when
    /// [`SimOptions::resource_type_limit`] names its path, else ARM's by the method.
    fn spend(&self, path: &str, method: &str) -> Spend {
        let overridden = self
            .options
            .resource_type_limit
            .as_ref()
            .is_some_and(|(text, _)| {
                path.to_ascii_lowercase()
                    .contains(&text.to_ascii_lowercase())
            });
        if overridden {
            Spend::ResourceType
        } else {
            Spend::of(method)
        }
    }
}

/// Which Compute policy refused a request: its name, its bucket's size, and the seconds until a
/// token refills.
type ComputeRefusal = (&'static str, u32, u64);

/// Compute's 429 when one of its buckets is empty: `OperationNotAllowed` with the policy in
/// the details, `Retry-After`, and the empty policy at 0 in `x-ms-ratelimit-remaining-resource`
/// (the shape of Microsoft's "Troubleshooting API throttling errors" for virtual machines).
fn compute_throttled(policy: &str, allowed: u32, wait: u64) -> Reply {
    let now = OffsetDateTime::now_utc();
    let end = now + time::Duration::seconds(i64::try_from(wait).unwrap_or(i64::MAX / 2));
    let detail = serde_json::json!({
        "operationGroup": policy,
        "startTime": now.format(&Rfc3339).unwrap_or_default(),
        "endTime": end.format(&Rfc3339).unwrap_or_default(),
        "allowedRequestCount": allowed,
        "measuredRequestCount": allowed + 1,
    });
    let body = serde_json::json!({"error": {
        "code": "OperationNotAllowed",
        "message": "The server rejected the request because too many requests have been received for this subscription.",
        "details": [{"code": "TooManyRequests", "target": policy, "message": detail.to_string()}],
        "innererror": {"internalErrorCode": "TooManyRequestsReceived"},
    }});
    Reply::json(429, &body)
        .header("Retry-After", wait.to_string())
        .header(
            "x-ms-ratelimit-remaining-resource",
            format!("Microsoft.Compute/{policy};0"),
        )
}

/// ARM's per-subscription buckets, and which one a request spends: by its HTTP method alone
/// (Microsoft's "Troubleshooting API throttling errors" for virtual machines: inspect
/// `x-ms-ratelimit-remaining-subscription-reads` for GET requests and `-writes` for non-GET
/// requests; "Understand how Azure Resource Manager throttles requests": reads, writes and
/// deletes each have a bucket per subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Spend {
    Reads,
    Writes,
    Deletes,
    /// A resource type's own bucket ([`SimOptions::resource_type_limit`]).
    ResourceType,
}

impl Spend {
    fn of(method: &str) -> Spend {
        if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
            Spend::Reads
        } else if method.eq_ignore_ascii_case("DELETE") {
            Spend::Deletes
        } else {
            Spend::Writes
        }
    }

    /// The header that reports the bucket.
    fn header(self) -> &'static str {
        match self {
            Spend::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            Spend::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Spend::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
            Spend::ResourceType => "x-ms-ratelimit-remaining-subscription-resource-requests",
        }
    }

    /// What the header says without a bucket: an idle subscription under the old hourly
    /// limits (12,000 reads, 1,200 writes, 15,000 deletes an hour).
    fn idle(self) -> &'static str {
        match self {
            Spend::Reads => "11999",
            Spend::Writes => "1199",
            Spend::Deletes => "14999",
            Spend::ResourceType => "0",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stats(&self) -> SimStats {
        let mut stats = lock(&self.stats).clone();
        stats.log = lock(&self.log).iter().cloned().collect();
        stats
    }

    /// Microseconds since the simulator started.
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut stats = lock(&self.stats);
        stats.peak_in_flight = stats.peak_in_flight.max(now);
        InFlight(&self.in_flight)
    }

    fn count_grant(&self, grant: &str) {
        *lock(&self.stats)
            .grants
            .entry(grant.to_owned())
            .or_default() += 1;
    }

    fn record_arrival(&self, kind: &Kind, method: &str) {
        let mut stats = lock(&self.stats);
        match kind {
            Kind::Token | Kind::Identity(_) => stats.token_requests += 1,
            Kind::Blob => stats.blob_requests += 1,
            Kind::Arm(_) => stats.requests += 1,
        }
        *stats.by_route.entry(kind.key(method)).or_default() += 1;
    }

    /// Logs an answered request, stamping `finished_us` now.
    fn record_answer(&self, answered: RequestLogEntry) {
        let finished_us = self.now_us();
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(RequestLogEntry {
            finished_us,
            ..answered
        });
        drop(log);
        self.answered.send_modify(|n| *n += 1);
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request is for.
enum Kind {
    Token,
    Identity(entra::Endpoint),
    Blob,
    Arm(Route),
}

impl Kind {
    fn of(method: &str, path: &str) -> Kind {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let is_token = matches!(segs.as_slice(), [_, o, v, t]
            if o.eq_ignore_ascii_case("oauth2") && v.eq_ignore_ascii_case("v2.0") && t.eq_ignore_ascii_case("token"));
        if is_token && method.eq_ignore_ascii_case("POST") {
            Kind::Token
        } else if let Some(endpoint) = entra::Endpoint::of(method, path) {
            Kind::Identity(endpoint)
        } else if segs.first() == Some(&"_blob") {
            Kind::Blob
        } else {
            Kind::Arm(Route::parse(method, path))
        }
    }

    fn key(&self, method: &str) -> String {
        match self {
            Kind::Token => "POST token".to_owned(),
            Kind::Identity(entra::Endpoint::Imds) => "GET imds token".to_owned(),
            Kind::Identity(entra::Endpoint::AppService) => "GET app service token".to_owned(),
            Kind::Blob => format!("{} blob", method.to_ascii_uppercase()),
            Kind::Arm(route) => route.key(method),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

/// An HTTP answer before it becomes an axum response.
#[derive(Debug)]
pub(crate) struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

const JSON: &str = "application/json; charset=utf-8";

impl Reply {
    pub(crate) fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            content_type: Some(JSON),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: Some(JSON),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// ARM's standard error body `{"error":{"code","message"}}`.
    pub(crate) fn arm_error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }

    pub(crate) fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        if let Some(content_type) = self.content_type {
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(HeaderName::from_static(lowercase_static(name)), value);
            }
        }
        (status, headers, self.body).into_response()
    }
}

/// Header names are written in their usual spelling; `HeaderName::from_static` wants lowercase.
fn lowercase_static(name: &'static str) -> &'static str {
    match name {
        "Location" => "location",
        "Azure-AsyncOperation" => "azure-asyncoperation",
        "Retry-After" => "retry-after",
        "WWW-Authenticate" => "www-authenticate",
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Request pipeline

async fn dispatch(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    if path == "/_sim/stats" {
        let stats = serde_json::to_value(shared.stats()).unwrap_or_default();
        return Reply::json(200, &stats).into_response();
    }
    let started_us = shared.now_us();
    let kind = Kind::of(&method, &path);
    let _in_flight = shared.enter();
    shared.record_arrival(&kind, &method);
    let (latency, fault, token_lifetime, identities) = {
        let mut live = lock(&shared.live);
        let fault = live.faults.take(&method, &path_and_query);
        (
            live.options.latency,
            fault,
            live.options.token_lifetime,
            live.options.managed_identities.clone(),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let applied_first = matches!(
        fault,
        Some(FaultKind::AppliedThenStatus(_) | FaultKind::AppliedThenHang)
    );
    let reply = match &fault {
        Some(fault) if !applied_first => fault_reply(&shared, fault.clone(), &path).await,
        _ => match &kind {
            Kind::Token => entra::token(&shared, &body, token_lifetime),
            Kind::Identity(endpoint) => entra::managed_identity(
                &shared,
                *endpoint,
                query.as_deref(),
                &headers,
                token_lifetime,
                &identities,
            ),
            Kind::Blob => serve_blob(&shared, &method, &path, query.as_deref(), &headers),
            Kind::Arm(route) => arm_request(
                &shared,
                route,
                &method,
                &path,
                query.as_deref(),
                &headers,
                &body,
            ),
        },
    };
    // The request was carried out; now its answer is lost or replaced, and the operation it
    // started goes on without a client polling it.
    let reply = match fault {
        Some(fault) if applied_first => {
            if let Some(id) = operation_id(&reply) {
                shared.lro.unwatch(&id);
            }
            fault_reply(&shared, fault, &path).await
        }
        _ => reply,
    };
    let request_id = random_uuid();
    let reply = reply
        .header("x-ms-request-id", request_id.clone())
        .header("x-ms-correlation-request-id", request_id.clone());
    let range = ["x-ms-range", "range"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_bytes = reply.body.len() as u64;
    shared.record_answer(RequestLogEntry {
        method: method.to_string(),
        path: path_and_query,
        status: reply.status,
        started_us,
        finished_us: started_us,
        range,
        body_bytes,
        request_id,
    });
    reply.into_response()
}

async fn fault_reply(shared: &Shared, fault: FaultKind, path: &str) -> Reply {
    match fault {
        FaultKind::Status(status) => status_reply(shared, status),
        FaultKind::StatusBody(status, body) => Reply::raw(status, JSON, body.into_bytes()),
        FaultKind::Malformed => Reply::raw(
            200,
            JSON,
            format!("{{\"value\":[{{\"id\":\"{path}\",\"name\":\"trunc").into_bytes(),
        ),
        FaultKind::AppliedThenStatus(status) => status_reply(shared, status),
        FaultKind::Hang | FaultKind::AppliedThenHang => {
            let mut stopped = shared.stopped.clone();
            let _ = stopped.wait_for(|stop| *stop).await;
            Reply::arm_error(503, "ServiceUnavailable", "The simulator is shutting down.")
        }
    }
}

/// The id of the operation an accepted write started, from the URL its answer names.
fn operation_id(reply: &Reply) -> Option<String> {
    let (_, url) = reply
        .headers
        .iter()
        .find(|(name, _)| *name == "Azure-AsyncOperation" || *name == "Location")?;
    let path = url.split('?').next()?;
    path.rsplit('/').next().map(str::to_owned)
}

/// An injected error status with ARM's body for it (and `Retry-After` on 429 and 503).
fn status_reply(shared: &Shared, status: u16) -> Reply {
    let (code, message) = match status {
            429 => ("TooManyRequests", "The request is being throttled."),
            500 => ("InternalServerError", "Encountered internal server error. Diagnostic information: timestamp '', subscription id '', tracking id '', request correlation id ''."),
            502 => ("BadGateway", "The gateway did not receive a response from the service in time."),
            503 => ("ServiceUnavailable", "The service is temporarily unavailable. Please try again later."),
            504 => ("GatewayTimeout", "The gateway did not receive a response from 'Microsoft.Compute' within the specified time period."),
            409 => ("Conflict", "The operation conflicts with another operation in progress."),
            403 => ("AuthorizationFailed", "The client does not have authorization to perform this action."),
            404 => ("NotFound", "The requested resource was not found."),
            _ => ("SimulatedFault", "A fault injected by the simulator."),
        };
    let reply = Reply::arm_error(status, code, message);
    if status == 429 || status == 503 {
        let retry = lock(&shared.live).options.retry_after_secs;
        reply.header("Retry-After", retry.to_string())
    } else {
        reply
    }
}

/// The subscription id in an ARM path, for messages.
fn subscription_of(path: &str) -> &str {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segs.next() {
        if seg.eq_ignore_ascii_case("subscriptions") {
            return segs.next().unwrap_or_default();
        }
    }
    ""
}

fn arm_request(
    shared: &Shared,
    route: &Route,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let challenge = format!(
        "Bearer authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
        shared.url
    );
    let client_id = match auth {
        None => {
            return Reply::arm_error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .header("WWW-Authenticate", challenge)
        }
        Some(value) => {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "));
            let bearer = token.map_or(entra::Bearer::Unknown, |t| {
                shared.entra.check(t.trim(), &shared.url)
            });
            match bearer {
                entra::Bearer::Valid(client_id) => client_id,
                entra::Bearer::Unknown => {
                    return Reply::arm_error(
                        401,
                        "InvalidAuthenticationToken",
                        "The access token is invalid.",
                    )
                    .header("WWW-Authenticate", challenge)
                }
                entra::Bearer::Expired { expiry } => return entra::expired_token(shared, expiry),
                entra::Bearer::WrongAudience { audience } => {
                    return entra::wrong_audience(shared, &audience)
                }
            }
        }
    };
    let run_command_delay;
    let (spend, remaining, lro_polls, retry_after, fail_operations, settle, effective_nsg_time) = {
        let mut live = lock(&shared.live);
        run_command_delay = live.options.run_command_delay;
        let spend = live.spend(path, method);
        let (lro_polls, retry_after) = (live.options.lro_polls, live.options.retry_after_secs);
        let effective_nsg_time = live.options.effective_nsg_time;
        let settle = live.options.settle();
        let fail_operations = live.options.fail_operations.clone();
        let remaining = match live.take_token(subscription_of(path), spend, Instant::now()) {
            None => None,
            Some(Ok(remaining)) => Some(remaining),
            Some(Err(wait)) => {
                drop(live);
                lock(&shared.stats).throttled += 1;
                return Reply::arm_error(
                    429,
                    "TooManyRequests",
                    &format!(
                        "Number of requests for subscription '{}' exceeded the limit. Please try again after '{wait}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
                        subscription_of(path)
                    ),
                )
                .header("Retry-After", wait.to_string())
                .header(spend.header(), "0".to_owned());
            }
        };
        (
            spend,
            remaining,
            lro_polls,
            retry_after,
            fail_operations,
            settle,
            effective_nsg_time,
        )
    };
    let query = Query::parse(query);
    let reply = {
        let mut world = shared.world.lock();
        // Azure RBAC, before the resource is looked up (hence "or the scope is invalid").
        if let Some((action, scope)) = rbac::requirement(route, path) {
            let caller = rbac::Caller::of(&world, Some(&client_id));
            if !caller.allows(&action, &scope) {
                let refusal = caller.refusal(&action, &scope);
                drop(world);
                return refusal.header(spend.header(), remaining_text(remaining, spend));
            }
        }
        // Compute's own policy, once ARM has let the request through.
        let compute_left = match route.compute_get() {
            None => None,
            Some((sub, rg, vm)) => {
                match lock(&shared.live).take_compute_get(sub, rg, vm, Instant::now()) {
                    None => None,
                    Some(Ok(left)) => Some(left),
                    Some(Err((policy, allowed, wait))) => {
                        drop(world);
                        lock(&shared.stats).throttled += 1;
                        return compute_throttled(policy, allowed, wait)
                            .header(spend.header(), remaining_text(remaining, spend));
                    }
                }
            }
        };
        let mut ctx = resource::Ctx {
            world: &mut world,
            base: &shared.url,
            lro: &shared.lro,
            signer: &shared.signer,
            lro_polls,
            retry_after,
            query: &query,
            method,
            path,
            body,
            fail_operations: &fail_operations,
            settle,
            run_command_delay,
            effective_nsg_time,
            client_id: Some(&client_id),
            activity: &shared.activity,
        };
        let reply = arm::handle(route, &mut ctx);
        // Every write Azure Resource Manager let through is in the Activity Log, under the
        // principal that made it (its name, else its client id, as Azure shows a service
        // principal's).
        if !matches!(route, Route::Unknown) && !Spend::of(method).eq(&Spend::Reads) {
            let caller = match rbac::Caller::of(&world, Some(&client_id)) {
                rbac::Caller::Principal(p) => p.name.clone().unwrap_or_else(|| p.client_id.clone()),
                _ => client_id.clone(),
            };
            shared
                .activity
                .record_write(method, path, reply.status, &caller, operation_id(&reply));
        }
        match compute_left {
            Some((sub_left, vm_left)) => reply.header(
                "x-ms-ratelimit-remaining-resource",
                format!("Microsoft.Compute/LowCostGetSubscriptionMaximum;{sub_left},Microsoft.Compute/LowCostGetResource;{vm_left}"),
            ),
            None => reply,
        }
    };
    reply.header(spend.header(), remaining_text(remaining, spend))
}

/// What the subscription's bucket has left; without a bucket, what an idle subscription has
/// left under the old hourly limits.
fn remaining_text(remaining: Option<u32>, spend: Spend) -> String {
    remaining.map_or_else(|| spend.idle().to_owned(), |r| r.to_string())
}

/// Azure Storage's XML error.
fn storage_error(status: u16, code: &str, message: &str, detail: Option<&str>) -> Reply {
    let detail = detail
        .map(|d| format!("<AuthenticationErrorDetail>{d}</AuthenticationErrorDetail>"))
        .unwrap_or_default();
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{}\nTime:{}</Message>{detail}</Error>",
        random_uuid(),
        now_rfc3339()
    );
    Reply::raw(status, "application/xml", body.into_bytes())
        .header("x-ms-error-code", code.to_owned())
}

/// `GET /_blob/{account}/{sub}/{rg}/{vm}.screenshot.bmp|.serialconsole.log?...&se=..&sig=..`
/// (`account`: the VM's custom storage account, or the managed one), whole or a
/// byte range of it (see [`blob::byte_range`]).
fn serve_blob(
    shared: &Shared,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Reply {
    if !method.eq_ignore_ascii_case("GET") {
        return storage_error(
            405,
            "UnsupportedHttpVerb",
            "The resource doesn't support specified Http Verb.",
            None,
        );
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // A storage account's firewall refuses a request from outside its allowed networks before
    // any SAS is looked at: 403 `AuthorizationFailure`, "This request is not authorized to
    // perform this operation." (Azure Storage, "Common REST API error codes",
    // learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes).
    if let Some(account) = segs.get(1) {
        let world = shared.world.lock();
        let firewalled = world.vms.iter().any(|vm| {
            let storage = blob::Storage::of(vm);
            storage.firewalled() && storage.account() == *account
        });
        drop(world);
        if firewalled {
            return storage_error(
                403,
                "AuthorizationFailure",
                "This request is not authorized to perform this operation.",
                None,
            );
        }
    }
    let query = Query::parse(query);
    let auth_failed = |detail: &str| {
        storage_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some(detail),
        )
    };
    let (Some(expiry), Some(sig)) = (query.get("se"), query.get("sig")) else {
        return auth_failed("Signature fields not well formed.");
    };
    if !shared.signer.verify(path, expiry, sig) {
        return auth_failed("Signature did not match.");
    }
    let now = OffsetDateTime::now_utc();
    match OffsetDateTime::parse(expiry, &Rfc3339) {
        Ok(end) if end > now => {}
        _ => {
            return auth_failed(&format!(
                "Signed expiry time [{expiry}] must be after current time [{}]",
                rfc3339(now)
            ))
        }
    }
    let not_found = || {
        storage_error(
            404,
            "BlobNotFound",
            "The specified blob does not exist.",
            None,
        )
    };
    let [_, account, sub, rg, file] = segs.as_slice() else {
        return not_found();
    };
    let Some((name, kind)) = blob::BlobKind::parse(file) else {
        return not_found();
    };
    let world = shared.world.lock();
    // The blobs are where the VM keeps them now (a VM moved to other storage has none here).
    let Some(vm) = world
        .find_vm(sub, rg, name)
        .filter(|vm| blob::Storage::of(vm).account() == *account)
    else {
        return not_found();
    };
    let (content_type, bytes) = match kind {
        blob::BlobKind::Screenshot => match blob::screenshot_bmp(vm) {
            Ok(bytes) => ("image/bmp", bytes),
            Err(error) => return storage_error(500, "InternalError", &error.to_string(), None),
        },
        blob::BlobKind::SerialLog => (
            "text/plain; charset=utf-8",
            blob::serial_log(vm).into_bytes(),
        ),
    };
    drop(world);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let total = bytes.len() as u64;
    let reply = match blob::byte_range(header("x-ms-range"), header("range"), total) {
        blob::ByteRange::Whole => Reply::raw(200, content_type, bytes),
        blob::ByteRange::Part { start, end, total } => {
            // Both ends are within the blob (byte_range checked them against its length).
            let part = bytes
                .get(start as usize..=end as usize)
                .unwrap_or_default()
                .to_vec();
            Reply::raw(206, content_type, part)
                .header("content-range", format!("bytes {start}-{end}/{total}"))
        }
        blob::ByteRange::Unsatisfiable { total } => storage_error(
            416,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
            None,
        )
        .header("content-range", format!("bytes */{total}")),
    };
    reply
        .header("accept-ranges", "bytes".to_owned())
        .header("x-ms-blob-type", "BlockBlob".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// A random 64-bit number (std's per-process random keys; not for cryptography).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish()
}

fn format_uuid(hi: u64, lo: u64) -> String {
    let hex = format!("{hi:016x}{lo:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random version-4 UUID.
pub(crate) fn random_uuid() -> String {
    let hi = (random_u64() & !0xf000) | 0x4000;
    let lo = (random_u64() & !(0xc << 60)) | (0x8 << 60);
    format_uuid(hi, lo)
}

/// A UUID derived from `seed`, so ids stay the same from run to run.
pub(crate) fn stable_uuid(seed: &str) -> String {
    let fnv = |salt: u8| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes().chain([salt]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format_uuid(fnv(1), fnv(2))
}

/// RFC 3339 in whole seconds, e.g. "2024-05-01T10:00:00Z".
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}
