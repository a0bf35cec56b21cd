//! The one door. Every front end (the terminal, Discord, and any HTTP endpoint) asks for
//! everything here, naming the person and the place with every call: checks, health, console,
//! sweeps, the audit log, autocomplete, the "which VM?" menu and every fix. The door fences the
//! place, authorises the person and only then lets a request reach Azure.
//!
//! **Architecture Invariant:** front ends never hold an [`Arm`]; they cannot reach Azure except
//! through a `Door` method, and every `Door` method that reaches Azure authorises its caller
//! first. Fail closed: no policy, no grant, an unserved guild, channel or subscription means no.
//!
//! **Architecture Invariant:** a person never learns of a VM they may not read: resolution,
//! suggestions, ambiguity menus and the audit log are filtered by the policy before they are
//! shown.

use super::catalog::{Catalog, Permission};
use super::fix::FixRequest;
use super::guest_check::{GuestRun, GuestSlots};
use super::limits::{PersonLimiter, PersonRate, RateLimited, SweepBusy, SweepSlots};
use super::operate::{OnDone, OperateError, Operator, Outcome, Progress, Prompt};
use super::sweep::{SweepEvent, SweepOptions, SweepReport};
use super::sweep_claim::ScopeClaim;
use super::{CheckError, CheckOptions, Console, Event, Report, Stats};
use crate::azure::{Arm, ArmError, ResolveError, ScopeError, SweepScope, VmDirectory};
use crate::diagnose::{ActionId, Finding};
use crate::domain::{
    candidates_text, is_subscription_id, suggestions_text, QueryError, VmQuery, VmRef, VmSummary,
};
use crate::policy::{Actor, Denial, Fenced, Place, Policy, Target};
use crate::store::{AuditEntry, NewSweep, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod picks;
mod swept;
mod watch;
pub use picks::{Pick, PICK_KEPT};
pub use swept::{SweepCancel, SWEEP_ROWS_KEPT};
pub use watch::{OnWatch, WatchNews, WatchStarted};

/// Who is asking, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub place: Place,
}

impl Caller {
    /// The Discord channel the request came from, for prompts and the audit log.
    pub fn channel(&self) -> Option<&str> {
        match &self.place {
            Place::Discord { channel, .. } | Place::Alerts { channel } => Some(channel),
            Place::Terminal => None,
        }
    }
}

/// Why the door said no, or what went wrong behind it. `is_user_error` separates what the person
/// can fix (shown as written) from failures of Azure or of rdp-doctor itself.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("{0}")]
    Fenced(#[from] Fenced),
    #[error("Permission denied: {0}")]
    Denied(#[from] Denial),
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("subscription {subscription} is not one rdp-doctor serves ({})", served_text(.served))]
    Unserved {
        subscription: String,
        served: Vec<String>,
    },
    #[error("no VM named {name} that you may read in {scope}{}", suggestions_text(.suggestions))]
    NotFound {
        name: String,
        scope: String,
        suggestions: Vec<VmRef>,
    },
    #[error("{} VMs are named {name}; say which one with RESOURCE-GROUP/NAME or the full id:\n{}", .candidates.len(), candidates_text(.candidates))]
    Ambiguous {
        name: String,
        candidates: Vec<VmRef>,
    },
    /// The sweep's scope is not clear; `name_subscription`: naming the subscription settles it.
    #[error("{message}")]
    Scope {
        message: String,
        name_subscription: bool,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Azure(ArmError),
    #[error("Slow down: {0}")]
    RateLimited(#[from] RateLimited),
    #[error("{0}")]
    WatchLength(#[from] super::watch::WatchLength),
    #[error("{0}")]
    SweepBusy(Box<SweepBusy>),
    /// The database that keeps one sweep per scope across the replicas failed: no sweep.
    #[error("no sweep was started: rdp-doctor could not claim its scope in the database, so it cannot tell whether another replica sweeps it ({0})")]
    SweepUnclaimed(StoreError),
    #[error(transparent)]
    Operate(#[from] OperateError),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

impl DoorError {
    /// rdp-doctor failed inside (its database), as opposed to the person's mistake or Azure's
    /// answer: a front end shows a reference, not the details.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            DoorError::Store(_)
                | DoorError::SweepUnclaimed(_)
                | DoorError::Operate(OperateError::Store(_))
        )
    }

    /// rdp-doctor's database did not answer, so nothing was done: worth trying again soon.
    pub fn is_database_unreachable(&self) -> bool {
        match self {
            DoorError::Store(e)
            | DoorError::SweepUnclaimed(e)
            | DoorError::Operate(OperateError::Store(e)) => e.is_unreachable(),
            _ => false,
        }
    }

    /// Something the person can act on (a denial, a typo, a VM they must name better), as
    /// opposed to Azure or rdp-doctor failing.
    pub fn is_user_error(&self) -> bool {
        match self {
            DoorError::Azure(ArmError::Config(_)) => true,
            // A resource group that is not there is the person's typo, as a VM name would be.
            DoorError::Azure(e) if e.code() == Some("ResourceGroupNotFound") => true,
            DoorError::Azure(_) | DoorError::Store(_) | DoorError::SweepUnclaimed(_) => false,
            // A VM busy with another change is not the person's mistake (exit 3, like Azure).
            DoorError::Operate(e) => !matches!(
                e,
                OperateError::Arm(_) | OperateError::Store(_) | OperateError::Locked { .. }
            ),
            _ => true,
        }
    }
}

impl From<ArmError> for DoorError {
    fn from(e: ArmError) -> DoorError {
        DoorError::Azure(e)
    }
}

impl From<CheckError> for DoorError {
    fn from(e: CheckError) -> DoorError {
        match e {
            CheckError::Resolve(r) => r.into(),
            CheckError::Arm(a) => DoorError::Azure(a),
        }
    }
}

impl From<ResolveError> for DoorError {
    fn from(e: ResolveError) -> DoorError {
        match e {
            ResolveError::InvalidName(text) => DoorError::Query(QueryError::InvalidName(text)),
            ResolveError::Classic { input } => DoorError::Query(QueryError::Classic { input }),
            ResolveError::NotFound {
                name,
                scope,
                suggestions,
            } => DoorError::NotFound {
                name,
                scope,
                suggestions,
            },
            ResolveError::Ambiguous { name, candidates } => {
                DoorError::Ambiguous { name, candidates }
            }
            ResolveError::Arm(a) => DoorError::Azure(a),
        }
    }
}

fn served_text(served: &[String]) -> String {
    if served.is_empty() {
        "it is configured with none: set AZURE_SUBSCRIPTION_ID".to_string()
    } else {
        format!("it serves {}", served.join(", "))
    }
}

/// How the door signs in to Azure Resource Manager.
pub enum SignIn {
    /// The environment's credential (client secret, workload identity, managed identity, the
    /// Azure CLI) against this ARM endpoint.
    Environment { endpoint: url::Url },
    /// A client secret against an endpoint that also issues the tokens (the simulator).
    Secret {
        endpoint: url::Url,
        tenant: String,
        client: String,
        secret: secrecy::SecretString,
    },
}

/// The runbook-level service every front end talks to.
#[derive(Clone)]
pub struct Door {
    arm: Arm,
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
    subscriptions: Vec<String>,
    directory: Arc<VmDirectory>,
    /// Fixes, confirmations and the audit log; `None` where no store was opened (a terminal
    /// check needs none).
    operator: Option<Operator>,
    /// One sweep per scope at a time.
    sweeps: SweepSlots,
    /// Each person's command rate.
    limiter: Arc<PersonLimiter>,
    /// One guest check per VM at a time.
    guest_slots: GuestSlots,
    /// How far back a report's "Recent changes" look (`[changes] window_hours`).
    changes_window: Duration,
    /// How watches run and how long the timeline remembers (`door/watch.rs`).
    watch: super::watch::WatchSettings,
    /// Watch runs this process finished (tests wait on it).
    watch_runs: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Door {
    /// How long an answer from the VM list waits for the first list after start.
    pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(2);

    pub fn new(
        arm: Arm,
        catalog: Arc<Catalog>,
        policy: Arc<Policy>,
        subscriptions: Vec<String>,
    ) -> Door {
        Door {
            arm,
            catalog,
            policy,
            subscriptions,
            directory: Arc::new(VmDirectory::new()),
            operator: None,
            sweeps: SweepSlots::new(),
            limiter: Arc::new(PersonLimiter::new(PersonRate::default())),
            guest_slots: GuestSlots::new(),
            changes_window: super::changes::DEFAULT_WINDOW,
            watch: super::watch::WatchSettings::default(),
            watch_runs: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// How far back reports look for changes in the Activity Log.
    pub fn with_changes_window(mut self, window: Duration) -> Door {
        self.changes_window = window;
        self
    }

    /// How far back reports look for changes (`[changes] window_hours`, 24 hours by default).
    pub fn changes_window(&self) -> Duration {
        self.changes_window
    }

    /// Each person's command rate (`[limits]`).
    pub fn with_limiter(mut self, limiter: PersonLimiter) -> Door {
        self.limiter = Arc::new(limiter);
        self
    }

    /// Sign in to Azure as `sign_in` says, with the `[azure]` settings of the config file.
    pub fn connect(
        sign_in: SignIn,
        azure: &crate::config::AzureConfig,
        catalog: Arc<Catalog>,
        policy: Arc<Policy>,
        subscriptions: Vec<String>,
    ) -> Result<Door, ArmError> {
        let arm = match sign_in {
            SignIn::Environment { endpoint } => {
                let mut settings = crate::azure::ArmSettings::new(endpoint);
                azure.apply(&mut settings);
                Arm::connect(settings)?
            }
            SignIn::Secret {
                endpoint,
                tenant,
                client,
                secret,
            } => {
                let mut settings = crate::azure::ArmSettings::new(endpoint.clone());
                azure.apply(&mut settings);
                Arm::connect_with_secret(settings, endpoint, &tenant, &client, secret)?
            }
        };
        Ok(
            Door::new(arm, catalog, policy, subscriptions).with_directory(Arc::new(
                VmDirectory::new().with_unknown_ttl(azure.unknown_vm_ttl()),
            )),
        )
    }

    /// With a store: fixes, confirmations and the audit log become available.
    pub fn with_store(mut self, store: Store) -> Door {
        self.operator = Some(
            Operator::new(
                self.arm.clone(),
                self.catalog.clone(),
                store,
                self.policy.clone(),
                self.subscriptions.clone(),
            )
            .with_retention(self.watch.retention),
        );
        self
    }

    /// This process as one of the replicas sharing the store (after [`Door::with_store`]): the
    /// owner written on its operations and how long a silent owner keeps them.
    pub fn with_replica(mut self, id: &str, lease: std::time::Duration) -> Door {
        self.operator = self.operator.map(|o| o.with_replica(id, lease));
        self
    }

    /// Operations this process took over from another replica (for metrics); 0 without a store.
    pub fn takeovers(&self) -> u64 {
        self.operator.as_ref().map_or(0, Operator::takeovers)
    }

    /// Resolve names from a directory with this time-to-live (tests).
    pub fn with_directory(mut self, directory: Arc<VmDirectory>) -> Door {
        self.directory = directory;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    /// The VM directory behind autocomplete (its age and size, for logs and tests).
    pub fn directory(&self) -> &Arc<VmDirectory> {
        &self.directory
    }

    /// What a readiness probe asks of the door: the database answers (where there is one) and
    /// an ARM token can be had. Each failure comes with its part's name and a one-line reason
    /// (no secret: a database URL is redacted, an Azure error is rebuilt from its code).
    pub async fn readiness(&self, within: Duration) -> Vec<(&'static str, String)> {
        // Each part under its own deadline, at once: a database that does not answer is named
        // as the database, not mistaken for Azure's silence.
        let late = || format!("no answer within {}s", within.as_secs());
        let database = async {
            let operator = self.operator.as_ref()?;
            match tokio::time::timeout(within, operator.store.ping()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(late()),
            }
        };
        let azure = async {
            match tokio::time::timeout(within, self.arm.sign_in_check()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(late()),
            }
        };
        let (database, azure) = tokio::join!(database, azure);
        [("database", database), ("azure", azure)]
            .into_iter()
            .filter_map(|(part, why)| Some((part, why?)))
            .collect()
    }

    /// The database's gauges for `/metrics` (no person: counts only, no VM or name), each
    /// `None` if the database is not configured or does not answer within `within`.
    pub async fn gauges(&self, within: Duration) -> crate::metrics::Gauges {
        let Some(operator) = &self.operator else {
            return crate::metrics::Gauges::default();
        };
        let store = &operator.store;
        let read = async {
            let running = store.count_running_operations().await;
            let pending = store
                .count_pending_confirmations(crate::store::now_ms())
                .await;
            (running.ok(), pending.ok())
        };
        match tokio::time::timeout(within, read).await {
            Ok((operations_running, confirmations_pending)) => crate::metrics::Gauges {
                operations_running,
                confirmations_pending,
            },
            Err(_) => crate::metrics::Gauges::default(),
        }
    }

    /// ARM requests made so far by this process (for the reports' statistics).
    pub fn arm_requests(&self) -> u64 {
        self.arm.request_count()
    }

    /// Keep the VM directory fresh in the background. It lists what the service principal can
    /// see; what a *person* sees of it is filtered by [`Self::suggest`].
    pub fn spawn_directory_refresher(&self, every: Duration) {
        self.directory
            .clone()
            .spawn_refresher(self.arm.clone(), self.subscriptions.clone(), every);
    }

    fn operator(&self) -> Result<&Operator, DoorError> {
        self.operator.as_ref().ok_or_else(|| {
            DoorError::Config(
                "fixes and the audit log need the database (RDP_DOCTOR_DATABASE_URL)".into(),
            )
        })
    }

    /// The place is served at all.
    pub fn admit(&self, caller: &Caller) -> Result<(), DoorError> {
        self.policy.fence(&caller.place)?;
        Ok(())
    }

    /// The place is served and the person has not run too many commands too fast. Every command
    /// a person starts counts once, where it enters the door (a name looked up, a button's VM,
    /// a sweep's scope, a confirmation, the audit log); what follows within the command does not.
    fn admit_command(&self, caller: &Caller) -> Result<(), DoorError> {
        self.admit(caller)?;
        self.limiter.check(&caller.actor.id)?;
        Ok(())
    }

    /// The VM is in a subscription rdp-doctor serves.
    fn is_served(&self, subscription: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(subscription))
    }

    fn served(&self, subscription: &str) -> Result<(), DoorError> {
        if self.is_served(subscription) {
            Ok(())
        } else {
            Err(DoorError::Unserved {
                subscription: subscription.to_string(),
                served: self.subscriptions.clone(),
            })
        }
    }

    /// A VM the person may be shown: served, and readable by them.
    fn visible(&self, actor: &Actor, vm: &VmRef) -> bool {
        self.is_served(&vm.subscription_id) && self.may_read(actor, vm)
    }

    /// `needed` on a sweep's scope: a resource group, or a whole subscription.
    fn authorize_scope(
        &self,
        actor: &Actor,
        needed: Permission,
        subscription_id: &str,
        resource_group: Option<&str>,
    ) -> Result<(), Denial> {
        match resource_group {
            Some(rg) => self.policy.authorize_on(
                actor,
                needed,
                &Target {
                    subscription_id: subscription_id.to_string(),
                    resource_group: rg.to_string(),
                },
            ),
            None => self
                .policy
                .authorize_subscription(actor, needed, subscription_id),
        }
    }

    fn may_read(&self, actor: &Actor, vm: &VmRef) -> bool {
        self.policy
            .level(actor, vm)
            .is_some_and(|l| l >= self.catalog.commands.check)
    }

    /// Admit the caller and authorise `needed` on `vm`, which must be in a served subscription.
    fn authorise_vm(
        &self,
        caller: &Caller,
        needed: Permission,
        vm: &VmRef,
    ) -> Result<(), DoorError> {
        self.admit(caller)?;
        self.served(&vm.subscription_id)?;
        self.policy.authorize(&caller.actor, needed, vm)?;
        Ok(())
    }

    /// Find the VM a person typed, among the VMs they may read, and authorise `needed` on it.
    /// Nothing reaches Azure unless the person holds `needed` somewhere; a full id in an
    /// unserved subscription, or in a resource group they may not touch, is refused before any
    /// request.
    pub async fn resolve(
        &self,
        caller: &Caller,
        text: &str,
        needed: Permission,
    ) -> Result<VmSummary, DoorError> {
        self.admit_command(caller)?;
        let query = VmQuery::parse(text)?;
        let actor = &caller.actor;
        if let VmQuery::Id(id) = &query {
            let vm = VmRef::from_id(id);
            self.authorise_vm(caller, needed, &vm)?;
        } else if !self.policy.holds_anywhere(actor, needed) {
            return Err(DoorError::Denied(Denial {
                needed,
                scope: "any VM rdp-doctor serves".to_string(),
                have: None,
            }));
        }
        let resolved = self
            .directory
            .resolve(&self.arm, &query, &self.subscriptions)
            .await;
        let summary = match resolved {
            Ok(summary) if self.may_read(actor, &summary.vm) => summary,
            Ok(summary) => {
                return Err(DoorError::NotFound {
                    name: summary.vm.name,
                    scope: crate::azure::scope_text(&self.subscriptions),
                    suggestions: Vec::new(),
                })
            }
            Err(ResolveError::Ambiguous { name, candidates }) => {
                let mut readable: Vec<VmRef> = candidates
                    .into_iter()
                    .filter(|c| self.may_read(actor, c))
                    .collect();
                match readable.len() {
                    0 => {
                        return Err(DoorError::NotFound {
                            name,
                            scope: crate::azure::scope_text(&self.subscriptions),
                            suggestions: Vec::new(),
                        })
                    }
                    1 => {
                        let vm = readable.remove(0);
                        self.directory
                            .find(|s| s.vm.id.eq_ignore_ascii_case(&vm.id))
                            .unwrap_or_else(|| VmSummary::unlisted(vm))
                    }
                    _ => {
                        return Err(DoorError::Ambiguous {
                            name,
                            candidates: readable,
                        })
                    }
                }
            }
            Err(ResolveError::NotFound {
                name,
                scope,
                suggestions,
            }) => {
                return Err(DoorError::NotFound {
                    name,
                    scope,
                    suggestions: suggestions
                        .into_iter()
                        .filter(|s| self.may_read(actor, s))
                        .collect(),
                })
            }
            Err(other) => return Err(other.into()),
        };
        self.authorise_vm(caller, needed, &summary.vm)?;
        Ok(summary)
    }

    /// Find the VM a person typed in the VM list as last read, without asking Azure (for a
    /// form, which must be the first answer to an interaction): among the VMs they may read,
    /// authorised for `needed`. Right after start, the first list is waited for (at most
    /// [`Door::FIRST_LIST_WAIT`], inside Discord's three seconds for a first response) rather
    /// than answering "not found" from a list not yet read.
    pub async fn resolve_listed(
        &self,
        caller: &Caller,
        text: &str,
        needed: Permission,
    ) -> Result<VmSummary, DoorError> {
        self.admit_command(caller)?;
        let query = VmQuery::parse(text)?;
        self.directory
            .first_list_within(Door::FIRST_LIST_WAIT)
            .await;
        let readable = self
            .directory
            .listed_where(|s| self.visible(&caller.actor, &s.vm));
        let summary =
            crate::azure::pick(&query, &readable, "the VM list (refreshed every minute)")?;
        self.authorise_vm(caller, needed, &summary.vm)?;
        Ok(summary)
    }

    /// Autocomplete: up to `limit` VMs the person may read whose name matches what they typed.
    /// Never touches Azure; an unserved place gets nothing.
    pub fn suggest(&self, caller: &Caller, partial: &str, limit: usize) -> Vec<(String, String)> {
        if self.admit(caller).is_err() {
            return Vec::new();
        }
        self.directory
            .suggest_where(partial, limit, |s| self.visible(&caller.actor, &s.vm))
    }

    /// The VM a component (a button, a menu) carries, found again in the directory, if the
    /// person may read it.
    pub async fn vm_by(
        &self,
        caller: &Caller,
        pred: impl Fn(&VmSummary) -> bool,
    ) -> Result<Option<VmSummary>, DoorError> {
        self.admit_command(caller)?;
        let mut found = self.directory.find(&pred);
        if found.is_none() {
            // After a restart the directory may not be loaded yet.
            if self
                .policy
                .holds_anywhere(&caller.actor, self.catalog.commands.check)
            {
                let _ = self.directory.refresh(&self.arm, &self.subscriptions).await;
                found = self.directory.find(&pred);
            }
        }
        match found {
            Some(s) if !self.may_read(&caller.actor, &s.vm) => {
                // The button stands under a report the channel has seen: say what is missing.
                Err(self
                    .policy
                    .authorize(&caller.actor, self.catalog.commands.check, &s.vm)
                    .err()
                    .map(DoorError::Denied)
                    .unwrap_or_else(|| DoorError::Config("not readable".into())))
            }
            other => Ok(other),
        }
    }

    /// `check`: resolve, authorise, run the runbook's checks.
    pub async fn check(
        &self,
        caller: &Caller,
        text: &str,
        options: &CheckOptions,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Report, DoorError> {
        let level = self.catalog.commands.check;
        self.resolve_and_run(caller, text, level, events, async |summary| {
            self.check_vm(caller, summary, options, events).await
        })
        .await
    }

    /// Resolve `text` for a person at `level`, say which VM it is, run `run` on it, and count
    /// the whole (the lookup included) in the report's `stats`.
    async fn resolve_and_run(
        &self,
        caller: &Caller,
        text: &str,
        level: Permission,
        events: &(dyn Fn(Event) + Send + Sync),
        run: impl AsyncFnOnce(VmSummary) -> Result<Report, DoorError>,
    ) -> Result<Report, DoorError> {
        let started = Instant::now();
        let before = self.arm.request_count();
        let summary = self.resolve(caller, text, level).await?;
        events(Event::Resolved(summary.vm.clone()));
        let mut report = run(summary).await?;
        report.stats = Stats {
            arm_requests: self.arm.request_count().saturating_sub(before),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        Ok(report)
    }

    /// The checks of a VM already found (a menu choice, a sweep's row): authorised again.
    pub async fn check_vm(
        &self,
        caller: &Caller,
        summary: VmSummary,
        options: &CheckOptions,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Report, DoorError> {
        self.authorise_vm(caller, self.catalog.commands.check, &summary.vm)?;
        let report = super::check_with_changes(
            &self.arm,
            &self.catalog,
            summary,
            options,
            self.changes_window,
            events,
        )
        .await?;
        self.remember(&report, check_source(caller)).await;
        Ok(report)
    }

    /// `changes`: the writes of the last `window` to a VM already found and to what its Remote
    /// Desktop depends on (NICs, their NSGs and public IPs, the subnet, its NSG and route
    /// table), newest first, from the Activity Log; at the `check` level. A principal Azure
    /// refuses the Activity Log gets them skipped with the reason, not an error.
    pub async fn changes(
        &self,
        caller: &Caller,
        vm: &VmRef,
        window: Duration,
    ) -> Result<crate::domain::Changes, DoorError> {
        self.authorise_vm(caller, self.catalog.commands.check, vm)?;
        Ok(super::changes::list(&self.arm, vm, window).await?)
    }

    /// Whether an alert routed as `caller` (the alerts actor in a route's channel) may have
    /// `vm` checked: the place fenced, the subscription served, the alerts' grant on the VM's
    /// scope at the `check` level. No Azure request.
    pub fn may_check_alerted(&self, caller: &Caller, vm: &VmRef) -> Result<(), DoorError> {
        self.authorise_vm(caller, self.catalog.commands.check, vm)
    }

    /// The check an Azure Monitor alert asks for, authorised as [`Self::may_check_alerted`].
    /// The VM is found in the VM list for its name as Azure spells it (alert targets come in
    /// lower case), the list read afresh when it does not have it.
    pub async fn check_alerted(
        &self,
        caller: &Caller,
        vm: &VmRef,
        options: &CheckOptions,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Report, DoorError> {
        self.may_check_alerted(caller, vm)?;
        let same = |s: &VmSummary| s.vm.id.eq_ignore_ascii_case(&vm.id);
        let mut found = self.directory.find(same);
        if found.is_none() {
            let _ = self.directory.refresh(&self.arm, &self.subscriptions).await;
            found = self.directory.find(same);
        }
        let summary = found.unwrap_or_else(|| VmSummary::unlisted(vm.clone()));
        self.check_vm(caller, summary, options, events).await
    }

    /// Receive an alert's notification for `vm` (`wanted`, the front end's JSON of it) to post
    /// in the caller's channel: see `store::alerts`. A notification this same one posted within
    /// `duplicate_window` is a duplicate.
    pub async fn claim_alert(
        &self,
        caller: &Caller,
        alert_id: &str,
        vm: &VmRef,
        wanted: &str,
        duplicate_window: Duration,
    ) -> Result<crate::store::AlertClaim, DoorError> {
        self.admit(caller)?;
        let operator = self.operator()?;
        let channel = caller
            .channel()
            .ok_or_else(|| DoorError::Config("an alert is posted in a channel".into()))?;
        let window = i64::try_from(duplicate_window.as_millis()).unwrap_or(i64::MAX);
        Ok(operator
            .store
            .claim_alert(
                alert_id,
                &vm.id,
                channel,
                wanted,
                operator.replica(),
                crate::store::lapsed_before(operator.lease()),
                crate::store::now_ms().saturating_sub(window),
            )
            .await?)
    }

    /// The alert's message was posted: see [`crate::store::Store::alert_posted`].
    pub async fn alert_posted(&self, key: &str, message_id: &str) -> Result<bool, DoorError> {
        let operator = self.operator()?;
        Ok(operator
            .store
            .alert_posted(key, operator.replica(), message_id)
            .await?)
    }

    /// Keep holding an alert while its check runs.
    pub async fn renew_alert(&self, key: &str) -> Result<bool, DoorError> {
        let operator = self.operator()?;
        Ok(operator.store.renew_alert(key, operator.replica()).await?)
    }

    /// Let go of an alert that could not be posted: the next notification takes it at once.
    pub async fn abandon_alert(&self, key: &str) -> Result<(), DoorError> {
        let operator = self.operator()?;
        Ok(operator
            .store
            .abandon_alert(key, operator.replica())
            .await?)
    }

    /// Let go of an alert after posting `handled`; `Some`: a newer notification to post.
    pub async fn release_alert(
        &self,
        key: &str,
        handled: &str,
    ) -> Result<Option<crate::store::AlertRow>, DoorError> {
        let operator = self.operator()?;
        Ok(operator
            .store
            .release_alert(key, operator.replica(), handled)
            .await?)
    }

    /// How long a replica's hold (an operation's, a sweep's, an alert's) lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.operator
            .as_ref()
            .map_or(super::operate::DEFAULT_LEASE, Operator::lease)
    }

    /// `guest`: resolve, authorise the `guest` level (Run Command runs as SYSTEM), run the
    /// runbook's checks, then look inside the VM (`runbook::check_with_guest`). A person below
    /// the level is refused before any Azure request.
    pub async fn guest(
        &self,
        caller: &Caller,
        text: &str,
        options: &CheckOptions,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Report, DoorError> {
        let level = self.catalog.commands.guest;
        self.resolve_and_run(caller, text, level, events, async |summary| {
            self.guest_vm(caller, summary, options, events).await
        })
        .await
    }

    /// The checks and the guest checks of a VM already found (the "Look inside the VM" button):
    /// authorised again at the `guest` level.
    pub async fn guest_vm(
        &self,
        caller: &Caller,
        summary: VmSummary,
        options: &CheckOptions,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Report, DoorError> {
        self.authorise_vm(caller, self.catalog.commands.guest, &summary.vm)?;
        let run = GuestRun {
            slots: &self.guest_slots,
            started_by: &caller.actor.name,
            timeout: self.arm.settings().run_command_timeout,
        };
        let report = super::check_with_guest(
            &self.arm,
            &self.catalog,
            summary,
            options,
            run,
            Some(self.changes_window),
            events,
        )
        .await?;
        self.remember(&report, check_source(caller)).await;
        Ok(report)
    }

    /// Whether the person may look inside `vm`: no Azure request.
    pub fn may_look_inside(&self, caller: &Caller, vm: &VmRef) -> Result<(), DoorError> {
        self.authorise_vm(caller, self.catalog.commands.guest, vm)
    }

    /// Whether the person holds the `guest` level on any VM at all, so that a front end can
    /// refuse privately before it acknowledges or asks Azure anything.
    pub fn may_look_inside_any(&self, caller: &Caller) -> Result<(), DoorError> {
        self.admit(caller)?;
        let needed = self.catalog.commands.guest;
        if self.policy.holds_anywhere(&caller.actor, needed) {
            Ok(())
        } else {
            Err(DoorError::Denied(Denial {
                needed,
                scope: "any VM rdp-doctor serves".to_string(),
                have: None,
            }))
        }
    }

    /// `health`: Resource Health of a VM already found.
    pub async fn health(&self, caller: &Caller, vm: &VmRef) -> Result<Finding, DoorError> {
        self.authorise_vm(caller, self.catalog.commands.health, vm)?;
        Ok(super::health(&self.arm, &self.catalog, vm).await)
    }

    /// `console`: the screenshot and serial log of a VM already found.
    pub async fn console(
        &self,
        caller: &Caller,
        summary: &VmSummary,
    ) -> Result<Console, DoorError> {
        self.authorise_vm(caller, self.catalog.commands.console, &summary.vm)?;
        Ok(super::console(&self.arm, &self.catalog, summary).await)
    }

    /// The level `sweep` needs (the policy may override the runbook's). Without a `[policy]`
    /// the terminal may run everything that changes no VM, a sweep included.
    pub fn sweep_level(&self, caller: &Caller) -> Permission {
        if !self.policy.configured() && caller.place == Place::Terminal {
            return Permission::Read;
        }
        self.policy
            .sweep_level()
            .unwrap_or(self.catalog.commands.sweep)
    }

    /// Which VMs a sweep would check: a resource group (looked for only in served
    /// subscriptions where the person holds the sweep level on it) or a whole subscription.
    pub async fn sweep_scope(
        &self,
        caller: &Caller,
        resource_group: Option<&str>,
        subscription: Option<&str>,
    ) -> Result<SweepScope, DoorError> {
        self.admit_command(caller)?;
        let needed = self.sweep_level(caller);
        if let Some(rg) = resource_group {
            crate::domain::validate_group(rg)?;
        }
        let candidates: Vec<String> = match subscription {
            Some(sub) => {
                if !is_subscription_id(sub) {
                    return Err(DoorError::Scope {
                        message: format!(
                            "{sub:?} is not a subscription id (a GUID such as 11111111-2222-3333-4444-555555555555)"
                        ),
                        name_subscription: false,
                    });
                }
                self.served(sub)?;
                vec![sub.to_string()]
            }
            None => self.subscriptions.clone(),
        };
        let actor = &caller.actor;
        let allowed: Vec<String> = candidates
            .iter()
            .filter(|sub| {
                self.authorize_scope(actor, needed, sub, resource_group)
                    .is_ok()
            })
            .cloned()
            .collect();
        if allowed.is_empty() {
            let denial = match candidates.as_slice() {
                [one] => self
                    .authorize_scope(actor, needed, one, resource_group)
                    .err(),
                _ => None,
            };
            return Err(DoorError::Denied(denial.unwrap_or(Denial {
                needed,
                scope: match resource_group {
                    Some(rg) => format!("resource group {rg}"),
                    None => "a whole subscription".to_string(),
                },
                have: None,
            })));
        }
        match self.arm.sweep_scope(resource_group, &allowed).await {
            Ok(scope) => Ok(scope),
            Err(ScopeError::Arm(e)) => Err(DoorError::Azure(e)),
            Err(e) => Err(DoorError::Scope {
                message: e.to_string(),
                name_subscription: matches!(
                    e,
                    ScopeError::Ambiguous { .. } | ScopeError::WhichSubscription(_)
                ),
            }),
        }
    }

    /// Check every Windows VM of a scope; authorised again on the scope itself.
    pub async fn sweep(
        &self,
        caller: &Caller,
        scope: &SweepScope,
        options: &SweepOptions,
        cancel: &CancellationToken,
        events: &(dyn Fn(SweepEvent) + Send + Sync),
    ) -> Result<SweepReport, DoorError> {
        self.admit(caller)?;
        self.served(&scope.subscription_id)?;
        let needed = self.sweep_level(caller);
        self.authorize_scope(
            &caller.actor,
            needed,
            &scope.subscription_id,
            scope.resource_group.as_deref(),
        )?;
        // One sweep per scope: the slot (this process) and the claim (every replica sharing
        // the database) are held until this sweep returns, or its task is dropped.
        let _slot = self
            .sweeps
            .try_start(scope, &caller.actor.name)
            .map_err(DoorError::SweepBusy)?;
        // Stops the sweep when the person cancels it, or when its claim is lost.
        let stop = cancel.child_token();
        let claim = match &self.operator {
            Some(operator) => Some(
                ScopeClaim::take(
                    &operator.store,
                    operator.lease(),
                    NewSweep {
                        subscription_id: scope.subscription_id.clone(),
                        resource_group: scope.resource_group.clone(),
                        started_by: caller.actor.name.clone(),
                        owner: operator.replica().to_string(),
                        handle: options.handle.clone(),
                        requester: caller.actor.id.clone(),
                    },
                    stop.clone(),
                )
                .await
                .map_err(DoorError::SweepUnclaimed)?
                .map_err(DoorError::SweepBusy)?,
            ),
            None => None,
        };
        let report =
            super::sweep::sweep(&self.arm, &self.catalog, scope, options, &stop, events).await;
        if let Some(claim) = claim {
            claim.release().await;
        }
        Ok(report?)
    }

    /// The audit log, newest first: only entries about VMs the person may read.
    /// `permissions`: which of the actions the runbook needs rdp-doctor's Azure identity holds,
    /// per served subscription and resource group it can see (admin anywhere: it shows what
    /// rdp-doctor may do everywhere). Only harmless reads reach Azure.
    pub async fn permissions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<super::permissions::SubscriptionPermissions>, DoorError> {
        self.admit_command(caller)?;
        let needed = Permission::Admin;
        if !self.policy.holds_anywhere(&caller.actor, needed) {
            return Err(DoorError::Denied(Denial {
                needed,
                scope: "any VM rdp-doctor serves".to_string(),
                have: None,
            }));
        }
        if self.subscriptions.is_empty() {
            return Err(DoorError::Config(
                "no subscription configured: set AZURE_SUBSCRIPTION_ID or pass --subscription"
                    .into(),
            ));
        }
        Ok(super::permissions::probe(&self.arm, &self.subscriptions).await)
    }

    pub async fn audit(
        &self,
        caller: &Caller,
        vm_name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, DoorError> {
        self.admit_command(caller)?;
        let needed = self.catalog.commands.audit;
        if !self.policy.holds_anywhere(&caller.actor, needed) {
            return Err(DoorError::Denied(Denial {
                needed,
                scope: "any VM rdp-doctor serves".to_string(),
                have: None,
            }));
        }
        let operator = self.operator()?;
        // Read more than asked: entries of other people's VMs are filtered out below.
        let entries = operator
            .store
            .recent_audit(vm_name, limit.saturating_mul(10).max(200))
            .await?;
        Ok(entries
            .into_iter()
            .filter(|e| match &e.vm {
                Some(id) => self
                    .policy
                    .level(&caller.actor, &VmRef::from_stored(id, ""))
                    .is_some_and(|l| l >= needed),
                None => e.actor == caller.actor.id,
            })
            .take(limit as usize)
            .collect())
    }

    /// Whether the person may ask for `action` on `vm` (before opening a form for it).
    pub fn may_fix(&self, caller: &Caller, action: ActionId, vm: &VmRef) -> Result<(), DoorError> {
        let operator = self.operator()?;
        self.authorise_vm(caller, operator.permission(action), vm)
    }

    /// Ask for a fix: a prompt to confirm, stored.
    pub async fn request_fix(
        &self,
        caller: &Caller,
        summary: &VmSummary,
        request: FixRequest,
    ) -> Result<Prompt, DoorError> {
        let operator = self.operator()?;
        self.authorise_vm(caller, operator.permission(request.action()), &summary.vm)?;
        Ok(operator
            .request(&caller.actor, caller.channel(), &summary.vm, request)
            .await?)
    }

    /// Confirm a stored prompt: the fix runs (authorised again for the confirmer).
    pub async fn confirm(
        &self,
        caller: &Caller,
        confirmation_id: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, DoorError> {
        self.confirm_shown(caller, confirmation_id, None, progress)
            .await
    }

    /// [`Door::confirm`] from the chat message `shown_in` that shows the prompt and will show
    /// its progress (see `Operator::confirm_shown`).
    pub async fn confirm_shown(
        &self,
        caller: &Caller,
        confirmation_id: &str,
        shown_in: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, DoorError> {
        self.admit_command(caller)?;
        let operator = self.operator()?;
        Ok(operator
            .confirm_shown(
                &caller.actor,
                caller.channel(),
                shown_in,
                confirmation_id,
                progress,
            )
            .await?)
    }

    /// Cancel a stored prompt: its requester, or anyone who could confirm it.
    pub async fn cancel(&self, caller: &Caller, confirmation_id: &str) -> Result<(), DoorError> {
        self.admit(caller)?;
        let operator = self.operator()?;
        Ok(operator
            .cancel(&caller.actor, caller.channel(), confirmation_id)
            .await?)
    }

    /// Running operations on VMs the person may read, oldest first.
    pub async fn operations(
        &self,
        caller: &Caller,
    ) -> Result<Vec<crate::store::Operation>, DoorError> {
        self.admit(caller)?;
        let needed = self.catalog.commands.check;
        if !self.policy.holds_anywhere(&caller.actor, needed) {
            return Err(DoorError::Denied(Denial {
                needed,
                scope: "any VM rdp-doctor serves".to_string(),
                have: None,
            }));
        }
        Ok(self
            .operator()?
            .running()
            .await?
            .into_iter()
            .filter(|op| self.may_read(&caller.actor, &VmRef::from_stored(&op.vm_id, "")))
            .collect())
    }

    /// A person asks to follow the running operations to their end (only following: nothing is
    /// sent to Azure but reads). They must be able to read the VMs; the fixes' levels were
    /// checked when they were confirmed.
    pub async fn resume_for(
        &self,
        caller: &Caller,
        on_done: &(dyn Fn(&crate::store::Operation, &Outcome) + Send + Sync),
    ) -> Result<usize, DoorError> {
        let visible = self.operations(caller).await?;
        let running = self.operator()?.running().await?;
        if let Some(hidden) = running
            .iter()
            .find(|op| !visible.iter().any(|v| v.id == op.id))
        {
            let vm = VmRef::from_stored(&hidden.vm_id, &hidden.vm_name);
            self.policy
                .authorize(&caller.actor, self.catalog.commands.check, &vm)?;
        }
        self.resume(on_done).await
    }

    /// Free a VM whose operation Azure no longer knows: `admin` on the VM and a reason, audited.
    pub async fn unlock(
        &self,
        caller: &Caller,
        text: &str,
        reason: &str,
    ) -> Result<(VmRef, crate::store::Operation), DoorError> {
        let operator = self.operator()?;
        let summary = self
            .resolve(caller, text, self.catalog.commands.check)
            .await?;
        self.authorise_vm(caller, Permission::Admin, &summary.vm)?;
        let op = operator.unlock(&caller.actor, &summary.vm, reason).await?;
        Ok((summary.vm, op))
    }

    /// Watch for operations whose owner stopped renewing its lease (a replica that died, a bot
    /// restarted) and follow each to its end; `on_done` gets the outcomes to post (not a
    /// person's call: `serve` and `bot` run it for their whole life). Stops when the task is
    /// aborted.
    pub fn spawn_takeovers(
        &self,
        on_done: OnDone,
    ) -> Result<tokio::task::JoinHandle<()>, DoorError> {
        Ok(self.operator()?.spawn_takeovers(on_done))
    }

    /// Follow every running operation now, whatever its lease (`rdp-doctor resume`, once the
    /// caller is authorised: see [`Door::resume_for`]).
    pub async fn resume(
        &self,
        on_done: &(dyn Fn(&crate::store::Operation, &Outcome) + Send + Sync),
    ) -> Result<usize, DoorError> {
        Ok(self.operator()?.resume(on_done).await?)
    }
}

/// What ran a check, for the VM's timeline: an Azure Monitor alert, or a person.
fn check_source(caller: &Caller) -> &'static str {
    match caller.actor.source {
        crate::policy::ActorSource::Alerts => "alert",
        _ => "check",
    }
}
