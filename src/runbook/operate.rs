//! Fixes behind confirmations: request → authorise → plan from live facts → stored confirmation;
//! confirm → authorise the confirmer (and the two-person rule) → exactly-once → per-VM lock →
//! preconditions re-read → ARM write → follow → re-check → what changed. Everything is audited.
//!
//! The write path, step by step (each step is commented where it happens):
//!
//! 1. **Request** ([`Operator::request`]): the requester is authorised for the fix's level on the
//!    VM, the VM is free (an operation left by a stopped process is followed to its end first),
//!    a plan is made from facts read now and the requester is authorised on any other resource
//!    it changes; a confirmation is stored with the plan's fingerprint. Nothing is sent.
//! 2. **Confirm** ([`Operator::confirm`]): the confirmer is authorised; the store takes the
//!    confirmation in one conditional `UPDATE` (pending, unexpired, and another person under the
//!    two-person rule), so exactly one click gets past it; an audit entry must be written.
//! 3. **Lock** (`run`): a running operation is recorded for the VM; the store's partial unique
//!    index allows one per VM, so a second fix on it is refused with who holds it.
//! 4. **Write** (`run`): facts are read again, the plan re-made and the confirmer authorised on
//!    it; a plan whose fingerprint differs from the one confirmed sends nothing. Otherwise the
//!    write is sent once; a write whose answer was lost is never sent again.
//! 5. **Follow** (`run`, `conclude`): Azure's operation URL is stored before anyone is told
//!    "sent", then followed. A sent write's operation ends (and the lock is released) only on
//!    Azure's verdict, or after a lost answer on what reading the VM shows; otherwise it stays
//!    running for `resume` or the next command. A write refused before Azure acted releases
//!    the lock at once.
//! 6. **Re-check** (`conclude`): after a success the VM is checked again (after a power action,
//!    once it has settled) and the report says what changed.
//!
//! **Architecture Invariant:** nothing here changes a VM without a stored, unexpired, single-use
//! confirmation from an authorised actor; the store's atomic `confirm` and per-VM lock decide.
//! Passwords never reach the store: they wait in memory (`SecretString`) next to the
//! confirmation id and are dropped once used or when the confirmation lapses.

use super::catalog::Catalog;
use super::fix::{self, FixRequest, Learned, Plan, PlanError};
use super::{CheckOptions, Report};
use crate::azure::{Arm, ArmError, OperationHandle, VmRef, VmSummary};
use crate::diagnose::{ActionId, Status};
use crate::domain::ResourceId;
use crate::policy::{Actor, Denial, Policy, Target};
use crate::store::{
    CancelOutcome, ConfirmOutcome, NewAudit, NewConfirmation, NewOperation, OperationOutcome,
    Store, StoreError,
};
use secrecy::SecretString;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Milliseconds since the Unix epoch (the store's clock).
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error("Permission denied: {0}")]
    Denied(#[from] Denial),
    #[error("{0}")]
    Refused(#[from] fix::Refusal),
    #[error("{vm} is busy: {action} by {holder} has been running since {since}. One change per VM at a time.{hint}")]
    Locked {
        vm: String,
        holder: String,
        action: String,
        since: String,
        /// What to do about it, when the operation cannot be followed to its end.
        hint: String,
    },
    #[error("Say why: `--reason TEXT` is written to the audit log with the unlock.")]
    ReasonNeeded,
    #[error("{vm} is not locked: no operation is running on it.")]
    NotLocked { vm: String },
    #[error("This confirmation was already used: confirmed by {by}.")]
    AlreadyConfirmed { by: String },
    #[error("This confirmation was cancelled by {by}.")]
    Cancelled { by: String },
    #[error("This confirmation has expired. Ask again to get a fresh one.")]
    Expired,
    #[error("This fix needs a second person: someone other than {requester} must confirm it.")]
    SamePerson { requester: String },
    #[error("What this fix would do has changed since the prompt was shown, so nothing was sent. A fresh prompt follows: confirm it if it is still what you want.\nWas: {was}\nNow: {now}")]
    PlanChanged {
        was: String,
        now: String,
        fresh: Box<Prompt>,
    },
    #[error("No such confirmation.")]
    NotFound,
    #[error("The password was only kept in the memory of the rdp-doctor process that received the form (passwords never go to the database), and this process does not have it: that one restarted, the prompt lapsed, or with several replicas the Confirm reached another one. Ask again.")]
    PasswordGone,
    #[error("{0}")]
    Arm(#[from] ArmError),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

impl From<PlanError> for OperateError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Refused(r) => OperateError::Refused(r),
            PlanError::Arm(a) => OperateError::Arm(a),
        }
    }
}

/// Proof that a fix was confirmed and its VM locked. The `azure` write functions take one and
/// only [`Operator`] makes one (the field is private, there is no constructor), so a write that
/// skips the confirmation does not compile:
///
/// ```compile_fail
/// let confirmed = rdp_doctor::runbook::operate::Confirmed { _private: () };
/// ```
pub struct Confirmed {
    _private: (),
}

/// A confirmation waiting for a click (or a `rdp-doctor confirm ID`). The plan names the VM
/// fully (name, resource group, subscription).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub confirmation_id: String,
    pub plan: Plan,
    pub expires_ms: i64,
    pub two_person: bool,
    pub requester: String,
    /// What happened before the prompt, e.g. an interrupted operation followed to its end.
    pub notes: Vec<String>,
}

/// How a confirmed fix ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: ActionId,
    pub vm: VmRef,
    pub confirmed_by: String,
    /// `Err` with `still_running` when Azure had not finished by the deadline (or could not be
    /// read): the operation stays running and the VM locked.
    pub result: Result<(), ArmError>,
    pub still_running: bool,
    /// Things the person should know: Azure's lost answer and what the VM showed, a database
    /// write that failed after the change, an operation another process recorded.
    pub notes: Vec<String>,
    /// The check after the fix (only when it succeeded and the re-check ran).
    pub after: Option<Report>,
    /// Lines such as "nsg: fail → pass".
    pub changes: Vec<String>,
    /// Set when a start, restart or redeploy succeeded but the VM had not settled (running,
    /// guest agent Ready) by the deadline: what it still showed, for the person to read before
    /// the re-check's verdict.
    pub still_settling: Option<String>,
}

/// Progress of a running fix, for front ends to render.
#[derive(Debug, Clone)]
pub enum Progress {
    Sent {
        action: ActionId,
        vm: String,
    },
    Waiting,
    Rechecking,
    /// Azure's answer to the write was lost; the VM is being read to learn what happened.
    Unanswered {
        action: ActionId,
        vm: String,
    },
    /// What the VM showed, e.g. "it did: the VM is restarting (PowerState/starting)".
    Learned(String),
    /// After a start, restart or redeploy: the re-check waits for the VM to settle.
    Settling {
        vm: String,
        /// What it waits for, e.g. "agent Not Ready".
        waiting_for: String,
        waited: std::time::Duration,
    },
}

impl Progress {
    /// The line every front end shows, e.g. "waiting for web-01 to settle: agent Not Ready
    /// (45 s)…". `confirmed_by` names the confirmer in the "sent" line, where a room of people
    /// needs to know who.
    pub fn text(&self, confirmed_by: Option<&str>) -> String {
        match self {
            Progress::Sent { action, vm } => match confirmed_by {
                Some(who) => format!(
                    "{} of {vm} confirmed by {who}; sent to Azure.",
                    action.as_str()
                ),
                None => format!("{} of {vm} sent to Azure…", action.as_str()),
            },
            Progress::Waiting => "Waiting for Azure to finish…".to_string(),
            Progress::Rechecking => "Done. Running the checks again…".to_string(),
            Progress::Unanswered { action, vm } => format!(
                "Azure may have accepted the {} of {vm}; checking…",
                action.as_str()
            ),
            Progress::Learned(text) => text.clone(),
            Progress::Settling {
                vm,
                waiting_for,
                waited,
            } => format!(
                "waiting for {vm} to settle: {waiting_for} ({})…",
                duration_text(*waited)
            ),
        }
    }
}

/// The operator: one per process.
#[derive(Clone)]
pub struct Operator {
    pub arm: Arm,
    pub catalog: Arc<Catalog>,
    pub store: Store,
    pub policy: Arc<Policy>,
    pub subscriptions: Vec<String>,
    /// Passwords by confirmation id, in memory only, until used, cancelled or expired.
    passwords: Arc<Mutex<HashMap<String, (String, SecretString)>>>,
    /// Operations a task of this process is running or following now.
    live: Arc<Mutex<HashSet<i64>>>,
    /// Who this process is among the replicas sharing the database: the owner it writes on the
    /// operations it runs or follows (their lease).
    replica: Arc<str>,
    /// How long an owner that stopped renewing keeps its operations before another replica
    /// takes them over.
    lease: Duration,
    /// Operations this process took over from another replica (or a stopped process).
    takeovers: Arc<AtomicU64>,
    /// How long the checks before and after a fix stay in the VM's history.
    retention: Duration,
}

/// What a watch for lapsed leases does with each outcome it records (posts it, in chat).
pub type OnDone = Arc<dyn Fn(&crate::store::Operation, &Outcome) + Send + Sync>;

/// The lease every operation has unless `[replicas] lease_secs` says otherwise. A dead owner's
/// last renewal came at most a third of the lease before it died, and the others look every
/// third of the lease (give or take a quarter): its operations are taken over between 2/3 and
/// 17/12 of the lease after it died, so within 30 s with this default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(20);

/// Why the guest could not be read again after a guest fix.
#[derive(Debug, thiserror::Error)]
enum GuestReread {
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error(transparent)]
    Guest(#[from] super::guest::GuestError),
    #[error("{vm} is {state} now")]
    NotRunning { vm: String, state: String },
    #[error("the guest's answer says nothing about {0}")]
    Silent(crate::diagnose::CheckId),
}

impl Operator {
    pub fn new(
        arm: Arm,
        catalog: Arc<Catalog>,
        store: Store,
        policy: Arc<Policy>,
        subscriptions: Vec<String>,
    ) -> Operator {
        Operator {
            arm,
            catalog,
            store,
            policy,
            subscriptions,
            passwords: Arc::new(Mutex::new(HashMap::new())),
            live: Arc::new(Mutex::new(HashSet::new())),
            replica: replica_id().into(),
            lease: DEFAULT_LEASE,
            takeovers: Arc::new(AtomicU64::new(0)),
            retention: super::watch::WatchSettings::default().retention,
        }
    }

    /// How long the checks before and after a fix stay in the VM's history (`[history]`).
    pub fn with_retention(mut self, retention: Duration) -> Operator {
        self.retention = retention;
        self
    }

    /// This process as one replica: `id` is the owner written on its operations (random per
    /// process by default), `lease` how long a silent owner keeps them.
    pub fn with_replica(mut self, id: &str, lease: Duration) -> Operator {
        self.replica = id.into();
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// The owner this process writes on its operations.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a silent owner keeps its operations.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How many operations this process took over from another owner (for metrics).
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    /// One more operation taken over from a replica that stopped renewing its lease: counted
    /// here and in `rdp_doctor_leases_taken_over_total`.
    fn count_takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        crate::metrics::lease_taken_over();
    }

    /// Append to the audit log; a failure is logged (for entries nothing depends on).
    pub async fn audit(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        command: &str,
        vm: Option<&VmRef>,
        result: &str,
    ) {
        if let Err(e) = self
            .audit_required(actor, channel, command, vm, result)
            .await
        {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }

    /// Append to the audit log, retrying a failing database a few times; the error is the
    /// caller's to surface (a fix that cannot be audited does not run).
    pub async fn audit_required(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        command: &str,
        vm: Option<&VmRef>,
        result: &str,
    ) -> Result<(), StoreError> {
        let entry = NewAudit {
            actor: actor.id.clone(),
            actor_name: actor.name.clone(),
            channel: channel.map(str::to_string),
            command: command.to_string(),
            vm: vm.map(|v| v.id.clone()),
            vm_name: vm.map(|v| v.name.clone()),
            result: result.to_string(),
            at_ms: now_ms(),
        };
        stored("writing the audit log", || self.store.audit(&entry))
            .await
            .map(|_| ())
    }

    /// The level `action` needs (`commands/rdp.toml`; admin if it does not say).
    pub fn permission(&self, action: ActionId) -> crate::runbook::catalog::Permission {
        self.catalog
            .step(action)
            .and_then(|s| s.permission)
            .unwrap_or(crate::runbook::catalog::Permission::Admin)
    }

    /// Ask for a fix: authorise, check the VM is free, plan from live facts, store the prompt.
    pub async fn request(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        vm: &VmRef,
        request: FixRequest,
    ) -> Result<Prompt, OperateError> {
        let action = request.action();
        let result = self.request_inner(actor, channel, vm, request).await;
        let text = match &result {
            Ok(p) => format!("requested (confirmation {})", short(&p.confirmation_id)),
            Err(OperateError::Denied(d)) => format!("denied: {d}"),
            Err(e) => format!("refused: {e}"),
        };
        self.audit(actor, channel, action.as_str(), Some(vm), &text)
            .await;
        result
    }

    async fn request_inner(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        vm: &VmRef,
        request: FixRequest,
    ) -> Result<Prompt, OperateError> {
        let action = request.action();
        // Request, 1: the person asking holds the fix's level on the VM's scope (the policy,
        // not Azure, decides; a denial names the missing permission), before any Azure request.
        self.policy.authorize(actor, self.permission(action), vm)?;
        // Request, 2: the VM is not held by another fix. An operation no task of this process
        // follows (a stopped CLI's, another process's) is followed to its end first; one still
        // running refuses the request with who holds the VM.
        let notes = self.ensure_free(vm).await?;
        // Request, 3: the plan is made from facts read now (reads only), or refused with what
        // to do instead.
        let facts = fix::facts(&self.arm, vm).await?;
        let plan = fix::plan(&self.arm, &facts, &request).await?;
        // Request, 4: a plan that changes another resource (the NSG of `open-rdp`) needs the
        // level on that resource's scope too.
        self.authorize_plan(actor, &plan)?;
        // Request, 5: the confirmation is stored with the plan's fingerprint and the requester's
        // person key (what the two-person rule compares). Nothing has been sent to Azure.
        let requester = self.policy.person_key(&actor.id);
        self.prompt(&requester, &actor.name, channel, request, plan, notes)
            .await
    }

    /// A plan that changes a resource other than the VM (the NSG a rule goes into, often a
    /// shared subnet NSG in another resource group) needs the action's level on that resource's
    /// scope too.
    fn authorize_plan(&self, actor: &Actor, plan: &Plan) -> Result<(), OperateError> {
        if let Some(id) = plan.other_resource() {
            let id = ResourceId::parse(id).map_err(|e| {
                OperateError::Refused(fix::Refusal {
                    reason: format!("Azure named a resource rdp-doctor cannot place: {e}"),
                    instead: None,
                })
            })?;
            self.policy.authorize_on(
                actor,
                self.permission(plan.action),
                &Target::of_resource(&id),
            )?;
        }
        Ok(())
    }

    /// Store a prompt for `plan`; a password waits in memory under its id. `notes`: what was
    /// done on the way, for the person to read.
    async fn prompt(
        &self,
        requester: &str,
        requester_name: &str,
        channel: Option<&str>,
        request: FixRequest,
        plan: Plan,
        notes: Vec<String>,
    ) -> Result<Prompt, OperateError> {
        let action = request.action();
        let vm = &plan.vm;
        let created = now_ms();
        let ttl = self.policy.confirm_ttl().as_millis() as i64;
        let mut summary = plan.consequences.clone();
        summary.extend(plan.warnings.iter().cloned());
        // What the confirmer will be held to: `run` re-plans and compares this fingerprint
        // (headline, consequences, warnings, what would be sent) before sending anything.
        let mut params = request.public_params();
        params["plan"] = serde_json::Value::String(plan.fingerprint());
        let confirmation = self
            .store
            .create_confirmation(&NewConfirmation {
                action: action.as_str().to_string(),
                vm_id: vm.id.clone(),
                vm_name: vm.name.clone(),
                requester: requester.to_string(),
                requester_name: requester_name.to_string(),
                channel: channel.map(str::to_string),
                params_json: params.to_string(),
                summary: summary.join("\n"),
                created_ms: created,
                ttl_ms: ttl,
            })
            .await?;
        // A password never reaches the store (`public_params` leaves it out): it waits in memory
        // under the confirmation id until used, cancelled or expired.
        if let FixRequest::ResetPassword { username, password } = request {
            self.keep_password(
                &confirmation.id,
                username,
                password,
                confirmation.expires_ms,
            );
        }
        Ok(Prompt {
            confirmation_id: confirmation.id,
            plan,
            expires_ms: confirmation.expires_ms,
            two_person: self.policy.two_person(action),
            requester: requester_name.to_string(),
            notes,
        })
    }

    /// The VM is free, or is made free by following to its end an operation that no task of
    /// this process is following (a stopped CLI's, another process's). Returns what was done
    /// on the way, for the person to read.
    async fn ensure_free(&self, vm: &VmRef) -> Result<Vec<String>, OperateError> {
        let mut notes = Vec::new();
        let current = || {
            stored("reading the running operation", || {
                self.store.current_operation(&vm.id)
            })
        };
        let Some(op) = current().await? else {
            return Ok(notes);
        };
        let mut hint = String::new();
        // Not followed by a task of this process: ours to follow if this process owns it (a
        // task of ours was dropped; a stopped terminal command's, as every terminal command on
        // a machine is one owner) or its owner's lease has lapsed. A live replica's is left to
        // it: the VM is busy.
        if !self.is_live(op.id) {
            let cutoff = if op.owner.as_deref() == Some(&*self.replica) {
                i64::MAX
            } else {
                self.lease_cutoff()
            };
            if let Some(outcome) = self.follow_stored(&op, cutoff).await? {
                let how = match (&outcome.result, outcome.still_running) {
                    (Ok(()), _) => "it succeeded".to_string(),
                    (Err(e), false) => format!("it failed: {e}"),
                    (Err(e), true) => format!("it is still running: {e}"),
                };
                notes.push(format!(
                    "Followed the earlier {} of {} by {} first: {how}.",
                    op.action, vm.name, op.requester_name
                ));
                notes.extend(outcome.notes);
                if let (true, Err(e)) = (outcome.still_running, &outcome.result) {
                    hint = format!(
                        " Following it ended with: {e}. `rdp-doctor resume` follows it again; if Azure no longer knows it and the VM is settled, an admin can free it with `rdp-doctor unlock {} --reason …`.",
                        vm.name
                    );
                }
            }
        }
        match current().await? {
            None => Ok(notes),
            Some(op) => Err(OperateError::Locked {
                vm: vm.name.clone(),
                holder: op.requester_name,
                action: op.action,
                since: format_time(op.started_ms),
                hint,
            }),
        }
    }

    /// Withdraw a prompt: its requester may, and so may anyone with the level the fix needs on
    /// the VM.
    pub async fn cancel(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        confirmation_id: &str,
    ) -> Result<(), OperateError> {
        let Some(pending) = self.store.get_confirmation(confirmation_id).await? else {
            return Err(OperateError::NotFound);
        };
        let vm = VmRef::from_stored(&pending.vm_id, &pending.vm_name);
        let is_requester = pending.requester == self.policy.person_key(&actor.id);
        if !is_requester {
            let needed = ActionId::parse(&pending.action)
                .map(|a| self.permission(a))
                .unwrap_or(crate::runbook::catalog::Permission::Admin);
            if let Err(denial) = self.policy.authorize(actor, needed, &vm) {
                self.audit(
                    actor,
                    channel,
                    "cancel",
                    Some(&vm),
                    &format!("denied: {denial}"),
                )
                .await;
                return Err(denial.into());
            }
        }
        let outcome = self
            .store
            .cancel(confirmation_id, &actor.id, &actor.name, now_ms())
            .await?;
        let result = match outcome {
            CancelOutcome::Cancelled => Ok(()),
            CancelOutcome::AlreadyConfirmed { by_name } => {
                Err(OperateError::AlreadyConfirmed { by: by_name })
            }
            CancelOutcome::AlreadyCancelled { by_name } => {
                Err(OperateError::Cancelled { by: by_name })
            }
            CancelOutcome::Expired => Err(OperateError::Expired),
            CancelOutcome::NotFound => Err(OperateError::NotFound),
        };
        if result.is_ok() {
            if let Ok(mut passwords) = self.passwords.lock() {
                passwords.remove(confirmation_id);
            }
        }
        self.audit(
            actor,
            channel,
            "cancel",
            Some(&vm),
            &match &result {
                Ok(()) => format!("cancelled {}", short(confirmation_id)),
                Err(e) => format!("refused: {e}"),
            },
        )
        .await;
        result
    }

    /// Confirm and run a fix. Exactly one confirmer ever gets past the store's atomic check;
    /// every later click gets who confirmed, expired or cancelled.
    pub async fn confirm(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        confirmation_id: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, OperateError> {
        self.confirm_shown(actor, channel, None, confirmation_id, progress)
            .await
    }

    /// [`Operator::confirm`] from a chat message that shows the prompt and then its progress
    /// (`shown_in`, its id in the confirmation's channel): stored with the operation, so that a
    /// replica taking the operation over edits that message too, instead of leaving it "in
    /// progress" for ever.
    pub async fn confirm_shown(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        shown_in: Option<&str>,
        confirmation_id: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, OperateError> {
        let Some(pending) = self.store.get_confirmation(confirmation_id).await? else {
            return Err(OperateError::NotFound);
        };
        let action = ActionId::parse(&pending.action).ok_or(OperateError::NotFound)?;
        let vm = VmRef::from_stored(&pending.vm_id, &pending.vm_name);
        // Confirm, 1: the confirmer holds the fix's level on the VM, before the confirmation is
        // taken: a denied click leaves it pending for someone who may (and is audited).
        if let Err(denial) = self.policy.authorize(actor, self.permission(action), &vm) {
            self.audit(
                actor,
                channel.or(pending.channel.as_deref()),
                "confirm",
                Some(&vm),
                &format!("denied: {denial}"),
            )
            .await;
            return Err(denial.into());
        }
        // Confirm, 2: the store takes the confirmation in one conditional `UPDATE` (still pending,
        // not expired, and under the two-person rule a different person than the requester, by
        // `Policy::person_key`). Exactly one confirmer ever gets `Confirmed`; every other click
        // learns who confirmed, who cancelled, that it expired, or that it needs another person.
        let two_person = self.policy.two_person(action);
        let outcome = self
            .store
            .confirm(
                confirmation_id,
                &self.policy.person_key(&actor.id),
                &actor.name,
                two_person,
                now_ms(),
            )
            .await?;
        let confirmation = match outcome {
            ConfirmOutcome::Confirmed(c) => c,
            other => {
                let error = match other {
                    ConfirmOutcome::AlreadyConfirmed { by_name, .. } => {
                        OperateError::AlreadyConfirmed { by: by_name }
                    }
                    ConfirmOutcome::Cancelled { by_name } => {
                        OperateError::Cancelled { by: by_name }
                    }
                    ConfirmOutcome::Expired => OperateError::Expired,
                    ConfirmOutcome::SamePerson => OperateError::SamePerson {
                        requester: pending.requester_name.clone(),
                    },
                    _ => OperateError::NotFound,
                };
                self.audit(
                    actor,
                    pending.channel.as_deref(),
                    "confirm",
                    Some(&vm),
                    &format!("refused: {error}"),
                )
                .await;
                return Err(error);
            }
        };
        // Confirm, 3: no audit entry, no fix (the store is retried a few times; a failure ends
        // here, before the VM is locked or anything is sent).
        self.audit_required(
            actor,
            confirmation.channel.as_deref(),
            "confirm",
            Some(&vm),
            &format!("confirmed {} {}", action.as_str(), short(confirmation_id)),
        )
        .await?;
        // Confirm, 4: the request as it was asked for; a password is taken out of memory here
        // (removed, so it serves one write at most).
        let request = match self.rebuild_request(action, &confirmation.params_json, confirmation_id)
        {
            Ok(r) => r,
            Err(e) => {
                self.audit(
                    actor,
                    confirmation.channel.as_deref(),
                    action.as_str(),
                    Some(&vm),
                    &format!("failed: {e}"),
                )
                .await;
                return Err(e);
            }
        };
        // The fingerprint of the plan the prompt showed, which `run` holds the new plan to.
        let shown = serde_json::from_str::<serde_json::Value>(&confirmation.params_json)
            .ok()
            .and_then(|p| p["plan"].as_str().map(str::to_string));
        let result = self
            .run(
                actor,
                &Requester {
                    key: confirmation.requester.clone(),
                    name: confirmation.requester_name.clone(),
                },
                confirmation.channel.as_deref(),
                shown_in,
                &vm,
                action,
                request,
                Some(confirmation_id),
                shown.as_deref(),
                progress,
            )
            .await;
        result.map(|mut o| {
            o.confirmed_by = actor.name.clone();
            o
        })
    }

    fn rebuild_request(
        &self,
        action: ActionId,
        params_json: &str,
        confirmation_id: &str,
    ) -> Result<FixRequest, OperateError> {
        let params: serde_json::Value = serde_json::from_str(params_json).unwrap_or_default();
        Ok(match action {
            ActionId::Start => FixRequest::Start,
            ActionId::Restart => FixRequest::Restart,
            ActionId::Redeploy => FixRequest::Redeploy,
            ActionId::ResetRdpConfig => FixRequest::ResetRdpConfig,
            ActionId::RemoveRoute => FixRequest::RemoveRoute,
            ActionId::RequestJit => {
                let source = params["source"].as_str().unwrap_or("");
                let hours = params["hours"].as_u64().and_then(|h| u32::try_from(h).ok());
                let source = source.parse().map_err(|_| {
                    OperateError::Refused(fix::Refusal {
                        reason: format!("the stored request names no IPv4 address ({source:?})"),
                        instead: None,
                    })
                })?;
                FixRequest::RequestJit { source, hours }
            }
            guest @ (ActionId::EnableRdp
            | ActionId::StartTermservice
            | ActionId::ResetRdpPort
            | ActionId::EnableFirewallRdp
            | ActionId::RenewRdpCertificate
            | ActionId::RemoveRdshRole
            | ActionId::FreeDiskSpace) => FixRequest::Guest(guest),
            ActionId::OpenRdpPort => {
                let source = params["source"].as_str().unwrap_or("");
                let source = if source == "*" {
                    fix::RdpSource::Anywhere
                } else {
                    fix::parse_source(source).map_err(|e| {
                        OperateError::Refused(fix::Refusal {
                            reason: e.to_string(),
                            instead: None,
                        })
                    })?
                };
                // Prompts stored before ports were asked about opened 3389.
                let port = params["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(crate::diagnose::nsg::RDP_PORT);
                FixRequest::OpenRdpPort { source, port }
            }
            ActionId::ResetPassword => {
                let taken = self
                    .passwords
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(confirmation_id));
                let (username, password) = taken.ok_or(OperateError::PasswordGone)?;
                FixRequest::ResetPassword { username, password }
            }
        })
    }

    /// Lock the VM, re-read its facts, send the write, follow it, re-check, release.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        actor: &Actor,
        requester: &Requester,
        channel: Option<&str>,
        shown_in: Option<&str>,
        vm: &VmRef,
        action: ActionId,
        request: FixRequest,
        confirmation_id: Option<&str>,
        shown: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, OperateError> {
        // Lock, 1: an operation an interrupted process left behind is followed to its end first.
        let mut notes = self.ensure_free(vm).await?;
        let new = NewOperation {
            action: action.as_str().to_string(),
            vm_id: vm.id.clone(),
            vm_name: vm.name.clone(),
            requester: actor.id.clone(),
            requester_name: if requester.name == actor.name {
                requester.name.clone()
            } else {
                format!("{}, confirmed by {}", requester.name, actor.name)
            },
            confirmation_id: confirmation_id.map(str::to_string),
            started_ms: now_ms(),
            owner: Some(self.replica.to_string()),
        };
        // Lock, 2: recording the running operation is the lock. The store's partial unique index
        // allows one running operation per VM, whichever process or connection inserts it, so
        // of two confirmed fixes on one VM the second is refused here, with who holds it. From
        // here on every path either records how the operation ended (which releases the lock)
        // or leaves it running for a later command to follow (a database that keeps failing
        // leaves it locked too: said in the outcome's notes, or logged when nothing was sent).
        let locked = stored("taking the VM's lock", || self.store.start_operation(&new)).await?;
        let operation = match locked {
            Ok(op) => op,
            Err(l) => {
                let error = OperateError::Locked {
                    vm: vm.name.clone(),
                    holder: l.holder_name,
                    action: l.action,
                    since: format_time(l.since_ms),
                    hint: String::new(),
                };
                self.audit(
                    actor,
                    channel,
                    action.as_str(),
                    Some(vm),
                    &format!("refused: {error}"),
                )
                .await;
                return Err(error);
            }
        };
        // Ours until it ends or this task is dropped (then a later command follows it): while
        // held, `ensure_free` and `resume` in this process leave the operation to this task.
        let _live = self.hold(operation.id);
        // The lease: renewed while this task runs, so that other replicas leave it alone; if
        // this process dies, another takes the operation over once the lease lapses.
        let mut lease = self.keep_lease(operation.id);
        let mut job = Job {
            operation_id: operation.id,
            actor,
            channel,
            vm,
            action,
            recheck_from: match &request {
                FixRequest::RequestJit { source, .. } => Some(*source),
                _ => None,
            },
            guest: GuestSeen::default(),
        };
        if let Err(e) = stored("saving where progress is shown", || {
            self.store
                .set_operation_message(operation.id, channel, shown_in)
        })
        .await
        {
            notes.push(store_note("where progress is shown", &e));
        }
        // The report before the write, for "what changed" after the re-check.
        let before = self.snapshot(vm).await;
        // Write, 1: preconditions from facts read just before the write, not when the prompt was
        // shown. A refusal sends nothing and releases the lock (`not_sent`).
        let planned = async {
            let facts = fix::facts(&self.arm, vm).await?;
            Ok::<Plan, OperateError>(fix::plan(&self.arm, &facts, &request).await?)
        }
        .await;
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => return Err(self.not_sent(&job, e, &mut notes).await),
        };
        // Write, 2: the confirmer is authorised on what the plan changes *now*, and the plan must
        // be the one the prompt showed (same fingerprint): another NSG, priority or consequence
        // runs nothing, releases the lock, and a fresh prompt is stored for it.
        if let Err(e) = self.authorize_plan(actor, &plan) {
            return Err(self.not_sent(&job, e, &mut notes).await);
        }
        if let Some(shown) = shown.filter(|shown| *shown != plan.fingerprint()) {
            let now = plan.fingerprint();
            let changed = match self
                .prompt(
                    &requester.key,
                    &requester.name,
                    channel,
                    request,
                    plan,
                    notes.clone(),
                )
                .await
            {
                Ok(fresh) => OperateError::PlanChanged {
                    was: plan_summary(shown),
                    now: plan_summary(&now),
                    fresh: Box::new(fresh),
                },
                Err(e) => e,
            };
            return Err(self.not_sent(&job, changed, &mut notes).await);
        }
        // Write, 3: the only `Confirmed` is made here, under the lock, after the checks above;
        // `azure`'s writes cannot be called without one. The write is sent once: the retry
        // policy re-sends a write only after an answer that proves Azure did not act (429, 503
        // with `Retry-After`, no connection made), and nothing here sends it again. The tag
        // (VMAccess's `forceUpdateTag`) is how `learn` recognises this write after a lost answer.
        let confirmed = Confirmed { _private: () };
        let tag = crate::azure::new_update_tag();
        let sent = fix::execute(&self.arm, &confirmed, &plan, &request, &tag).await;
        // A password in the request is dropped as soon as it has been sent.
        drop(request);
        let handle = match sent {
            Ok(handle) => handle,
            // Write, 4: the answer was lost (a timeout, a dropped connection, a 5xx): Azure may
            // have acted, so the write is never re-sent; the VM is read to learn what happened.
            Err(e) if e.is_unanswered() => {
                return Ok(self
                    .after_unanswered(&mut job, &plan, &tag, e, before, notes, progress)
                    .await);
            }
            // An answer that says Azure did not act: record the failure, release the lock.
            Err(e) => return Err(self.not_sent(&job, e.into(), &mut notes).await),
        };
        // Follow, 1: the URL is stored before anyone is told "sent": an interrupted process
        // leaves an operation the next command (or `resume`) can follow.
        let url = handle.to_json();
        if let Err(e) = stored("saving Azure's operation URL", || {
            self.store.set_operation_url(operation.id, &url)
        })
        .await
        {
            notes.push(format!(
                "{}; if rdp-doctor stops before the operation ends, {} stays locked until an admin runs `rdp-doctor unlock`",
                store_note("Azure's operation URL", &e),
                vm.name
            ));
        }
        progress(Progress::Sent {
            action,
            vm: vm.name.clone(),
        });
        progress(Progress::Waiting);
        // Follow, 2: poll Azure's operation until it ends or `operation_timeout` passes; polling
        // only reads, so nothing is sent twice.
        // A replica that lost its lease (another took the operation over, believing this one
        // dead) stops following: the new owner records and posts the outcome.
        let what = format!("{} of {}", action.as_str(), vm.name);
        // A guest fix's operation succeeds whatever its script did: what the script printed
        // tells whether the change took.
        let result = tokio::select! {
            result = self.follow_write(action, &handle, &what, &mut notes, &mut job.guest) => result,
            () = lease.lost() => return Ok(lease_lost(&job, notes)),
        };
        // Follow, 3 and re-check: `conclude` records the end and re-checks.
        Ok(self.conclude(&job, result, before, notes, progress).await)
    }

    /// The write was refused before Azure acted (a precondition, or an answer that proves it):
    /// record the failure, release the VM.
    async fn not_sent(
        &self,
        job: &Job<'_>,
        error: OperateError,
        notes: &mut Vec<String>,
    ) -> OperateError {
        let (code, message) = error_parts(&error);
        let outcome = OperationOutcome::Failed { code, message };
        // Finishing the operation releases the VM's lock; if the database keeps failing, the VM
        // stays locked and it is logged (an admin's `unlock` frees it).
        if let Err(e) = stored("recording the refused fix", || {
            self.store.finish_operation(job.operation_id, &outcome)
        })
        .await
        {
            notes.push(store_note("the outcome", &e));
            tracing::error!(error = %e, "could not record a refused fix; the VM stays locked");
        }
        self.audit(
            job.actor,
            job.channel,
            job.action.as_str(),
            Some(job.vm),
            &format!("failed: {error}"),
        )
        .await;
        error
    }

    /// Azure's answer to the write was lost: read the VM to learn what happened, follow what
    /// it shows until it settles (or the operation's deadline), and say so.
    #[allow(clippy::too_many_arguments)]
    async fn after_unanswered(
        &self,
        job: &mut Job<'_>,
        plan: &Plan,
        tag: &str,
        error: ArmError,
        before: Option<Report>,
        mut notes: Vec<String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Outcome {
        progress(Progress::Unanswered {
            action: job.action,
            vm: job.vm.name.clone(),
        });
        let learned = self.learn(plan, tag).await;
        progress(Progress::Learned(learned.text()));
        notes.push(format!(
            "Azure's answer was lost ({error}); rdp-doctor did not send it again. Read the VM: {}",
            learned.text()
        ));
        // Run Command leaves nothing ARM shows: the guest itself says whether the change is
        // there (read once the Run Command has ended; one runs at a time on a VM).
        let learned = if plan.is_guest() {
            progress(Progress::Rechecking);
            let learned = self.learn_from_guest(job).await;
            progress(Progress::Learned(learned.text()));
            notes.push(format!("Read the guest: {}", learned.text()));
            learned
        } else {
            learned
        };
        let result = match &learned {
            Learned::Done(_) => Ok(()),
            Learned::InProgress(state) => Err(ArmError::Timeout {
                what: format!(
                    "{} of {}: Azure is still at it ({state}) (operation still running)",
                    job.action.as_str(),
                    job.vm.name
                ),
                after: self.arm.settings().operation_timeout,
            }),
            Learned::Failed(e) => Err(ArmError::OperationFailed {
                status: "failed".into(),
                code: "Failed".into(),
                message: e.clone(),
            }),
            Learned::NotDone(e) => Err(ArmError::OperationFailed {
                status: "not accepted".into(),
                code: "NotAccepted".into(),
                message: format!("Azure did not act on it ({e}); nothing changed, ask again"),
            }),
            Learned::Settled(e) | Learned::CannotTell(e) => Err(ArmError::OperationFailed {
                status: "unknown".into(),
                code: "Unknown".into(),
                message: format!(
                    "cannot tell whether Azure acted ({e}); run `rdp-doctor check {}` before asking again",
                    job.vm.name
                ),
            }),
        };
        self.conclude(job, result, before, notes, progress).await
    }

    /// Follow a sent write's operation to its end (polling only reads, so nothing is sent
    /// twice). A guest fix's Run Command succeeds whatever the script did, so its output
    /// decides: a script that printed no `RDP-DOCTOR-FIX` line did not finish (it failed);
    /// stderr is reported either way; a result that cannot be read leaves the verdict to the
    /// re-check.
    async fn follow_write(
        &self,
        action: ActionId,
        handle: &OperationHandle,
        what: &str,
        notes: &mut Vec<String>,
        seen: &mut GuestSeen,
    ) -> Result<(), ArmError> {
        if !action.is_guest() {
            return self.arm.wait(handle, what).await;
        }
        let output = match self.arm.run_command_result(handle).await {
            Ok(output) => output,
            Err(e @ ArmError::Malformed { .. }) => {
                notes.push(format!(
                    "could not read what the `{action}` script printed ({e}); the re-check reads the guest instead"
                ));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let report = fix::read_script_output(action, &output.stdout, &output.stderr);
        notes.extend(report.notes(action));
        match report.changed {
            Some(changed) if changed.is_empty() => {
                seen.changed = vec![format!("`{action}` found nothing to change")];
                Ok(())
            }
            Some(changed) => {
                seen.changed = changed;
                Ok(())
            }
            None => Err(ArmError::OperationFailed {
                status: "failed".into(),
                code: "ScriptFailed".into(),
                message: format!(
                    "the `{action}` script did not finish: {}",
                    report
                        .stderr
                        .as_deref()
                        .unwrap_or("it printed no result and nothing on stderr")
                ),
            }),
        }
    }

    /// Read the guest and judge what `action` changes: "guest-rdp: now passes (…)".
    async fn recheck_guest(
        &self,
        vm: &VmRef,
        action: ActionId,
        notes: &mut Vec<String>,
    ) -> Option<String> {
        match self.judge_guest(vm, action, false).await {
            Ok((check, Status::Pass, evidence)) => {
                Some(format!("{check}: now passes ({evidence})"))
            }
            Ok((check, status, evidence)) => {
                Some(format!("{check}: {} ({evidence})", status.as_str()))
            }
            Err(e) => {
                notes.push(format!(
                    "could not read the guest again after `{action}`: {e}; `rdp-doctor check {} --guest` reads it",
                    vm.name
                ));
                None
            }
        }
    }

    /// The guest's facts now, judged for `action`: its check, whether it holds, the evidence.
    /// `wait_for_free`: a Run Command whose answer was lost may still run, and Azure refuses a
    /// second one meanwhile (409 `Conflict`), so the read is tried again, reading the VM in
    /// between, until the operation deadline.
    async fn judge_guest(
        &self,
        vm: &VmRef,
        action: ActionId,
        wait_for_free: bool,
    ) -> Result<(crate::diagnose::CheckId, Status, String), GuestReread> {
        let check = fix::guest_check(action);
        let settings = self.arm.settings();
        let deadline = tokio::time::Instant::now() + settings.operation_timeout;
        let facts = loop {
            match crate::runbook::guest::read(&self.arm, vm, settings.run_command_timeout).await {
                Err(crate::runbook::guest::GuestError::Busy { .. })
                    if wait_for_free
                        && tokio::time::Instant::now() + settings.poll_interval < deadline =>
                {
                    // Still running Azure's way: the VM must still be there and running for
                    // the wait to be worth it.
                    let facts = self.arm.vm_facts(vm).await?;
                    if !facts.is_running() {
                        return Err(GuestReread::NotRunning {
                            vm: vm.name.clone(),
                            state: facts
                                .power_state
                                .unwrap_or_else(|| "not running".to_string()),
                        });
                    }
                    tokio::time::sleep(settings.poll_interval).await;
                }
                other => break other?,
            }
        };
        match fix::judge_guest(action, &facts) {
            Some((status, evidence)) => Ok((check, status, evidence)),
            None => Err(GuestReread::Silent(check)),
        }
    }

    /// After a guest fix's lost answer: whether the change is in the guest now.
    async fn learn_from_guest(&self, job: &mut Job<'_>) -> Learned {
        match self.judge_guest(job.vm, job.action, true).await {
            Ok((check, Status::Pass, evidence)) => {
                job.guest.rechecked = Some(format!("{check}: now passes ({evidence})"));
                Learned::Done(format!("{check} passes ({evidence})"))
            }
            Ok((check, status, evidence)) => Learned::NotDone(format!(
                "{check} is {} ({evidence}): the change is not in place",
                status.as_str()
            )),
            Err(e) => Learned::CannotTell(format!("reading the guest failed: {e}")),
        }
    }

    /// Read the VM until what it shows is no longer "in progress" or the deadline passes.
    async fn learn(&self, plan: &Plan, tag: &str) -> Learned {
        let settings = self.arm.settings();
        let deadline = tokio::time::Instant::now() + settings.operation_timeout;
        let mut seen_at_work = false;
        loop {
            let learned = match fix::what_azure_did(&self.arm, plan, tag).await {
                Ok(l) => l,
                Err(e) => Learned::CannotTell(format!("reading the VM failed: {e}")),
            };
            match learned {
                Learned::InProgress(state) => {
                    seen_at_work = true;
                    if tokio::time::Instant::now() + settings.poll_interval > deadline {
                        return Learned::InProgress(state);
                    }
                    tokio::time::sleep(settings.poll_interval).await;
                }
                Learned::Settled(state) if seen_at_work => {
                    return Learned::Done(state.replace(
                        "which looks the same before and after",
                        "after it was seen at work",
                    ))
                }
                other => return other,
            }
        }
    }

    /// Record how an operation ended (or that it is still running), re-check on success and
    /// say what changed. Only Azure's own verdict ends an operation: when the deadline passes
    /// or the operation cannot be read, it stays running and the VM stays locked.
    async fn conclude(
        &self,
        job: &Job<'_>,
        result: Result<(), ArmError>,
        before: Option<Report>,
        notes: Vec<String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Outcome {
        self.conclude_recorded(job, result, before, notes, progress)
            .await
            .0
    }

    /// [`Self::conclude`], and whether this call recorded the outcome (`false`: another process
    /// following the same operation did, and says so).
    async fn conclude_recorded(
        &self,
        job: &Job<'_>,
        result: Result<(), ArmError>,
        before: Option<Report>,
        mut notes: Vec<String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> (Outcome, bool) {
        // Follow, 3: only Azure's verdict (success, or the operation failed) ends the operation.
        // A timeout or an unreadable operation leaves it running: the VM stays locked and
        // `resume` or the next command on the VM follows it.
        let ended = match &result {
            Ok(()) => Some(OperationOutcome::Succeeded),
            Err(e @ ArmError::OperationFailed { .. }) => Some(OperationOutcome::Failed {
                code: e.code().unwrap_or("Failed").to_string(),
                message: e.to_string(),
            }),
            Err(_) => None,
        };
        let still_running = ended.is_none();
        let mut recorded_here = true;
        // Recording the end releases the lock. It is conditional on the operation still running,
        // so when several processes follow one operation its outcome is recorded (and audited)
        // once.
        if let Some(outcome) = &ended {
            match stored("recording the outcome", || {
                self.store.finish_operation(job.operation_id, outcome)
            })
            .await
            {
                Ok(()) => {}
                // Another process following the same operation recorded it first.
                Err(StoreError::OperationNotRunning { .. }) => recorded_here = false,
                Err(e) => notes.push(format!(
                    "{}; {} stays locked until `rdp-doctor resume` or an admin's `rdp-doctor unlock`",
                    store_note("the outcome", &e),
                    job.vm.name
                )),
            }
        }
        if recorded_here {
            let text = match &result {
                Ok(()) => "succeeded".to_string(),
                Err(e) if still_running => format!(
                    "still running: {e}; the VM stays locked, `rdp-doctor resume` follows it"
                ),
                Err(e) => format!("failed: {e}"),
            };
            if let Err(e) = self
                .audit_required(
                    job.actor,
                    job.channel,
                    job.action.as_str(),
                    Some(job.vm),
                    &text,
                )
                .await
            {
                notes.push(store_note("the audit entry", &e));
            }
        } else {
            notes.push("another rdp-doctor recorded this outcome first".to_string());
        }
        let mut after = None;
        let mut changes = Vec::new();
        let mut still_settling = None;
        // Re-check: only after a success. A start, restart or redeploy first waits for the VM to
        // settle (running, guest agent Ready) up to `settle_timeout`; the re-check is a full
        // check (reads only), compared with the report from before the write.
        if result.is_ok() {
            if reboots(job.action) {
                still_settling = self.settle(job.vm, progress).await;
            }
            progress(Progress::Rechecking);
            after = self.snapshot_from(job.vm, job.recheck_from).await;
            if let Some(report) = after.as_mut() {
                // What just ran has not had the time to show its effect: running it again
                // would only start the wait over.
                if report.next_action == Some(job.action) {
                    report.next_action = None;
                    notes.push(format!(
                        "Not suggesting another {} now: give {} a few minutes and check it again.",
                        job.action.as_str(),
                        job.vm.name
                    ));
                }
            }
            changes = diff(before.as_ref(), after.as_ref());
        }
        // A guest fix: what its script changed, and the guest read again (unless reading it
        // already decided a lost answer).
        if job.action.is_guest() && result.is_ok() {
            let mut guest = job.guest.changed.clone();
            match &job.guest.rechecked {
                Some(line) => guest.push(line.clone()),
                None => guest.extend(self.recheck_guest(job.vm, job.action, &mut notes).await),
            }
            guest.extend(changes);
            changes = guest;
        }
        let outcome = Outcome {
            action: job.action,
            vm: job.vm.clone(),
            confirmed_by: job.actor.name.clone(),
            result,
            still_running,
            after,
            changes,
            notes,
            still_settling,
        };
        (outcome, recorded_here)
    }

    /// After a start, restart or redeploy: read the VM until it runs with a Ready guest agent
    /// (Azure shows the agent Not Ready, or not at all, for a minute or more after a boot) or
    /// the deadline passes. `Some` says what it still showed at the deadline.
    async fn settle(
        &self,
        vm: &VmRef,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Option<String> {
        let settings = self.arm.settings();
        let started = tokio::time::Instant::now();
        let deadline = started + settings.settle_timeout;
        loop {
            let waiting_for = match self.arm.vm_facts(vm).await {
                Ok(facts) => unsettled(&facts)?,
                Err(e) => format!("reading the VM failed ({e})"),
            };
            let now = tokio::time::Instant::now();
            if now + settings.settle_poll > deadline {
                return Some(format!(
                    "{} is still settling after {}: {waiting_for}. Azure can take several minutes to show a rebooted VM's guest agent Ready; check it again in a few minutes before another fix.",
                    vm.name,
                    duration_text(now - started)
                ));
            }
            progress(Progress::Settling {
                vm: vm.name.clone(),
                waiting_for,
                waited: now - started,
            });
            tokio::time::sleep(settings.settle_poll).await;
        }
    }

    /// Record the end of an operation Azure has answered for, re-check on success and say
    /// what changed. Ending it is conditional on it still running, so an outcome is recorded
    /// once however many processes follow the operation.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        operation_id: i64,
        actor: &Actor,
        channel: Option<&str>,
        vm: &VmRef,
        action: ActionId,
        result: Result<(), ArmError>,
        before: Option<Report>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, OperateError> {
        let job = Job {
            operation_id,
            actor,
            channel,
            vm,
            action,
            recheck_from: None,
            guest: GuestSeen::default(),
        };
        Ok(self
            .conclude(&job, result, before, Vec::new(), progress)
            .await)
    }

    /// Run the checks and keep the report as the VM's latest snapshot, and in its history.
    pub async fn snapshot(&self, vm: &VmRef) -> Option<Report> {
        self.snapshot_from(vm, None).await
    }

    /// [`Self::snapshot`], testing 3389 from `from` when given (a re-check after `request-jit`).
    async fn snapshot_from(&self, vm: &VmRef, from: Option<std::net::Ipv4Addr>) -> Option<Report> {
        let report = self
            .check(VmSummary::unlisted(vm.clone()), from)
            .await
            .ok()?;
        if let Ok(json) = serde_json::to_string(&report) {
            let taken = now_ms();
            if let Err(e) = stored("saving the check snapshot", || {
                self.store.save_snapshot(&vm.id, taken, &json)
            })
            .await
            {
                tracing::warn!(error = %e, vm = %vm.name, "could not save the check snapshot");
            }
            if let Err(e) = self
                .store
                .record_check(&vm.id, taken, "fix", &json, self.retention)
                .await
            {
                tracing::warn!(error = %e, vm = %vm.name, "could not keep the check in the history");
            }
        }
        Some(report)
    }

    async fn check(
        &self,
        summary: VmSummary,
        from: Option<std::net::Ipv4Addr>,
    ) -> Result<Report, super::CheckError> {
        super::check(
            &self.arm,
            &self.catalog,
            summary,
            &CheckOptions { from },
            &|_| {},
        )
        .await
    }

    /// Follow every running operation no task of this process is following (`rdp-doctor
    /// resume`: a person says its owner is gone) to its end, at the same time, taking each over
    /// whatever its lease (a live owner that loses it stops following without posting).
    /// Returns how many were followed; `on_done` gets the outcomes this process recorded.
    pub async fn resume(
        &self,
        on_done: &(dyn Fn(&crate::store::Operation, &Outcome) + Send + Sync),
    ) -> Result<usize, OperateError> {
        let running = stored("listing running operations", || {
            self.store.running_operations()
        })
        .await?;
        let followed = futures::future::join_all(
            running
                .iter()
                .filter(|op| !self.is_live(op.id))
                .map(|op| async move { (op, self.follow_stored(op, i64::MAX).await) }),
        )
        .await;
        let mut count = 0;
        for (op, result) in followed {
            if let Some(outcome) = result? {
                count += 1;
                on_done(op, &outcome);
            }
        }
        Ok(count)
    }

    /// One pass of the replicas' watch: take over every running operation whose owner's lease
    /// has lapsed (its heartbeat is older than the lease) and follow each to its end in a task
    /// of its own; `on_done` gets the outcomes this process records (to post them). Of
    /// several replicas passing at once exactly one takes each operation (`Store::take_over`).
    /// Returns how many operations this pass took.
    pub async fn take_over_lapsed(&self, on_done: OnDone) -> Result<usize, OperateError> {
        let running = stored("listing running operations", || {
            self.store.running_operations()
        })
        .await?;
        let cutoff = self.lease_cutoff();
        let mut taken = 0;
        for op in running {
            let lapsed = op.heartbeat_ms.is_none_or(|beat| beat < cutoff);
            if self.is_live(op.id) || !lapsed || self.unsent_and_young(&op) {
                continue;
            }
            // Held from here, so that the next pass does not follow it a second time.
            let held = self.hold(op.id);
            let Some(mine) = stored("taking over an operation", || {
                self.store.take_over(op.id, &self.replica, cutoff)
            })
            .await?
            else {
                continue;
            };
            taken += 1;
            self.count_takeover();
            tracing::info!(
                operation = op.id,
                from = op.owner.as_deref().unwrap_or("nobody"),
                "took over the {} of {}: its owner stopped renewing its lease",
                op.action,
                op.vm_name
            );
            let (operator, on_done) = (self.clone(), on_done.clone());
            tokio::spawn(async move {
                let _held = held;
                match operator.follow_owned(&mine).await {
                    Ok(Some(outcome)) => on_done(&mine, &outcome),
                    Ok(None) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        operation = mine.id,
                        "could not follow an operation taken over"
                    ),
                }
            });
        }
        Ok(taken)
    }

    /// Run [`Self::take_over_lapsed`] now and then every third of the lease (give or take a
    /// quarter, so that replicas started together do not pass in step), until the task is
    /// aborted.
    pub fn spawn_takeovers(&self, on_done: OnDone) -> tokio::task::JoinHandle<()> {
        let operator = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = operator.take_over_lapsed(on_done.clone()).await {
                    tracing::warn!(error = %e, "could not look for operations to take over");
                }
                tokio::time::sleep(jittered(operator.lease / 3)).await;
            }
        })
    }

    /// Heartbeats older than this (unix ms) belong to owners whose lease has lapsed.
    fn lease_cutoff(&self) -> i64 {
        crate::store::lapsed_before(self.lease)
    }

    /// Without Azure's URL and younger than the grace period: someone may be sending it now.
    fn unsent_and_young(&self, op: &crate::store::Operation) -> bool {
        op.azure_url.is_none() && now_ms() - op.started_ms < self.unsent_grace_ms()
    }

    /// Follow an operation another process started (or one this process let go of) once this
    /// process has taken it over: those whose owner's heartbeat is older than `cutoff`
    /// (`i64::MAX`: whatever it is). Without a URL it is left alone for a grace period (someone
    /// may be sending it right now), then finished as interrupted after reading the VM. `None`
    /// when it was left alone, another replica holds it, or another recorded its outcome.
    async fn follow_stored(
        &self,
        op: &crate::store::Operation,
        cutoff: i64,
    ) -> Result<Option<Outcome>, OperateError> {
        if ActionId::parse(&op.action).is_none() || self.unsent_and_young(op) {
            return Ok(None);
        }
        let _live = self.hold(op.id);
        let Some(mine) = stored("taking over an operation", || {
            self.store.take_over(op.id, &self.replica, cutoff)
        })
        .await?
        else {
            return Ok(None);
        };
        if op.owner.as_deref() != Some(&*self.replica) {
            self.count_takeover();
        }
        self.follow_owned(&mine).await
    }

    /// Follow an operation this process has just taken over, renewing its lease, to its end.
    async fn follow_owned(
        &self,
        op: &crate::store::Operation,
    ) -> Result<Option<Outcome>, OperateError> {
        let Some(action) = ActionId::parse(&op.action) else {
            return Ok(None);
        };
        let vm = VmRef::from_stored(&op.vm_id, &op.vm_name);
        let actor = Actor {
            id: op.requester.clone(),
            name: op.requester_name.clone(),
            role_ids: Vec::new(),
            source: crate::policy::ActorSource::Cli,
        };
        let _live = self.hold(op.id);
        let mut lease = self.keep_lease(op.id);
        let what = format!("{} of {}", action.as_str(), vm.name);
        let mut guest = GuestSeen::default();
        let mut notes = Vec::new();
        let result = match op.azure_url.as_deref().and_then(OperationHandle::from_json) {
            // Another replica took it over meanwhile: it follows and posts, this one stops.
            Some(handle) => tokio::select! {
                result = self.follow_write(action, &handle, &what, &mut notes, &mut guest) => result,
                () = lease.lost() => return Ok(None),
            },
            None if now_ms() - op.started_ms < self.unsent_grace_ms() => return Ok(None),
            None => {
                let state = match self.arm.vm_facts(&vm).await {
                    Ok(f) => format!(
                        "PowerState/{}, ProvisioningState/{}",
                        f.power_state.as_deref().unwrap_or("unknown"),
                        f.provisioning_state.as_deref().unwrap_or("unknown")
                    ),
                    Err(e) => format!("unknown (reading the VM failed: {e})"),
                };
                Err(ArmError::OperationFailed {
                    status: "interrupted".into(),
                    code: "Interrupted".into(),
                    message: format!(
                        "rdp-doctor stopped before Azure's answer was recorded; the VM now shows {state}; check it before asking again"
                    ),
                })
            }
        };
        let before = self
            .store
            .latest_snapshot(&vm.id)
            .await
            .ok()
            .flatten()
            .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&json).ok())
            .map(snapshot_statuses);
        let job = Job {
            operation_id: op.id,
            actor: &actor,
            channel: op.channel.as_deref(),
            vm: &vm,
            action,
            recheck_from: None,
            guest,
        };
        let (mut outcome, recorded) = self
            .conclude_recorded(&job, result, None, notes, &|_| {})
            .await;
        // Exactly once: only the process whose finish changed the row tells anyone.
        if !recorded {
            return Ok(None);
        }
        if let (Some(before), Some(after)) = (before, outcome.after.as_ref()) {
            outcome.changes = diff_statuses(&before, &statuses(after));
        }
        Ok(Some(outcome))
    }

    /// Renew the lease on operation `id` every third of the lease until the returned guard is
    /// dropped; the guard says when the lease is lost (another replica took the operation over,
    /// or it ended). A database that fails meanwhile is logged and tried again next time.
    fn keep_lease(&self, id: i64) -> Lease {
        let (lost, watch) = tokio::sync::watch::channel(false);
        let (store, owner, every) = (self.store.clone(), self.replica.clone(), self.lease / 3);
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(id, &owner).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = lost.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        operation = id,
                        "could not renew an operation's lease; trying again"
                    ),
                }
            }
        });
        Lease { renewer, watch }
    }

    /// How long an operation without Azure's URL may be someone's write on its way: the
    /// longest a write and the reads before it can take.
    fn unsent_grace_ms(&self) -> i64 {
        let s = self.arm.settings();
        let grace = s.operation_timeout + s.max_retry_elapsed * 4 + s.request_timeout * 4;
        i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// Operations this process follows now: they are not abandoned.
    fn hold(&self, id: i64) -> Held {
        if let Ok(mut live) = self.live.lock() {
            live.insert(id);
        }
        Held {
            live: self.live.clone(),
            id,
        }
    }

    fn is_live(&self, id: i64) -> bool {
        self.live.lock().map(|l| l.contains(&id)).unwrap_or(false)
    }

    /// Running operations, oldest first (`rdp-doctor operations`).
    pub async fn running(&self) -> Result<Vec<crate::store::Operation>, OperateError> {
        Ok(stored("listing running operations", || {
            self.store.running_operations()
        })
        .await?)
    }

    /// Free a VM whose operation Azure no longer knows (the operation URL answers 404, or it
    /// was never stored). Needs `admin` on the VM and a reason; the audit entry is written
    /// first, so an unlock that cannot be audited does not happen.
    pub async fn unlock(
        &self,
        actor: &Actor,
        vm: &VmRef,
        reason: &str,
    ) -> Result<crate::store::Operation, OperateError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(OperateError::ReasonNeeded);
        }
        if let Err(denial) =
            self.policy
                .authorize(actor, crate::runbook::catalog::Permission::Admin, vm)
        {
            self.audit(
                actor,
                None,
                "unlock",
                Some(vm),
                &format!("denied: {denial}"),
            )
            .await;
            return Err(denial.into());
        }
        let Some(op) = stored("reading the running operation", || {
            self.store.current_operation(&vm.id)
        })
        .await?
        else {
            return Err(OperateError::NotLocked {
                vm: vm.name.clone(),
            });
        };
        let entry = format!(
            "unlocked: ended the {} by {} running since {} without Azure's answer. Reason: {reason}",
            op.action,
            op.requester_name,
            format_time(op.started_ms)
        );
        self.audit_required(actor, None, "unlock", Some(vm), &entry)
            .await?;
        let outcome = OperationOutcome::Failed {
            code: "Unlocked".into(),
            message: format!("freed by {} with `rdp-doctor unlock`: {reason}", actor.name),
        };
        stored("freeing the VM", || {
            self.store.finish_operation(op.id, &outcome)
        })
        .await?;
        Ok(op)
    }

    /// Keep a password in memory until the prompt is used, cancelled or expires, whichever is
    /// first: a timer drops it at the confirmation's expiry.
    fn keep_password(&self, id: &str, username: String, password: SecretString, expires_ms: i64) {
        if let Ok(mut passwords) = self.passwords.lock() {
            passwords.insert(id.to_string(), (username, password));
        }
        let passwords = Arc::downgrade(&self.passwords);
        let id = id.to_string();
        let wait = std::time::Duration::from_millis(
            u64::try_from(expires_ms.saturating_sub(now_ms())).unwrap_or(0),
        );
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(passwords) = passwords.upgrade() {
                if let Ok(mut passwords) = passwords.lock() {
                    passwords.remove(&id);
                }
            }
        });
    }

    /// How many passwords wait in memory for their prompt (for tests and metrics).
    pub fn passwords_waiting(&self) -> usize {
        self.passwords.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// An operation this process follows; dropping it (the operation ended, or its task was
/// cancelled) lets a later command follow it instead.
struct Held {
    live: Arc<Mutex<HashSet<i64>>>,
    id: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&self.id);
        }
    }
}

/// The lease on an operation this process runs or follows: renewed until dropped.
struct Lease {
    renewer: tokio::task::JoinHandle<()>,
    watch: tokio::sync::watch::Receiver<bool>,
}

impl Lease {
    /// Resolves once the lease is lost (never, while it is renewed).
    async fn lost(&mut self) {
        if self.watch.wait_for(|lost| *lost).await.is_err() {
            // The renewer ended without saying "lost" (it only ends that way when aborted).
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// What the person who confirmed hears when another replica took the operation over while
/// this one followed it: it is still running, and the new owner posts the outcome.
fn lease_lost(job: &Job<'_>, mut notes: Vec<String>) -> Outcome {
    notes.push(
        "another rdp-doctor replica took this operation over (this one had stopped renewing its lease) and posts its outcome in this channel".to_string(),
    );
    Outcome {
        action: job.action,
        vm: job.vm.clone(),
        confirmed_by: job.actor.name.clone(),
        result: Err(ArmError::Timeout {
            what: format!(
                "{} of {}: followed by another rdp-doctor replica now (operation still running)",
                job.action.as_str(),
                job.vm.name
            ),
            after: Duration::ZERO,
        }),
        still_running: true,
        after: None,
        changes: Vec::new(),
        notes,
        still_settling: None,
    }
}

/// A replica id for this process: the host's name and 32 random bits, so that two processes on
/// one host (or two pods that share a name across restarts) are different owners.
pub fn replica_id() -> String {
    let mut bytes = [0u8; 4];
    let suffix = match getrandom::getrandom(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        // No randomness: the process id still tells processes on one host apart.
        Err(_) => format!("pid{}", std::process::id()),
    };
    format!("{}-{suffix}", host_name())
}

/// The host's name (`/proc/sys/kernel/hostname`, `HOSTNAME`), or `rdp-doctor`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rdp-doctor".to_string())
}

/// `every`, give or take a quarter, at random.
fn jittered(every: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::getrandom(&mut byte);
    // 0.75 to 1.25 of `every`.
    every.mul_f64(0.75 + f64::from(byte[0]) / 510.0)
}

/// One operation being run or followed, and for whom.
struct Job<'a> {
    operation_id: i64,
    actor: &'a Actor,
    channel: Option<&'a str>,
    vm: &'a VmRef,
    action: ActionId,
    /// The address the re-check tests 3389 from (`request-jit` opens it for one address).
    recheck_from: Option<std::net::Ipv4Addr>,
    /// For a guest fix: what its script and the guest said.
    guest: GuestSeen,
}

/// What a guest fix's script reported and what reading the guest showed.
#[derive(Default)]
struct GuestSeen {
    /// The script's own words for what it changed.
    changed: Vec<String>,
    /// The re-check's line, once the guest was read (after a lost answer).
    rechecked: Option<String>,
}

/// How often a store write is tried before the failure is surfaced.
const STORE_ATTEMPTS: u32 = 4;

/// A store call, retried a few times with a short backoff when the database itself failed
/// (busy, I/O); refusals (a secret, a finished operation) come back at once.
async fn stored<T, F, Fut>(doing: &'static str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = std::time::Duration::from_millis(50);
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e @ StoreError::Database { .. }) if tries < STORE_ATTEMPTS => {
                tracing::warn!(error = %e, tries, "{doing}: the database failed; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            other => return other,
        }
    }
}

fn store_note(what: &str, e: &StoreError) -> String {
    format!("could not save {what} in the database after {STORE_ATTEMPTS} tries ({e})")
}

/// The requester of a confirmation: the person key the two-person rule compares, and a name.
struct Requester {
    key: String,
    name: String,
}

/// A fingerprint as a person reads it (its lines, without the internal step).
fn plan_summary(fingerprint: &str) -> String {
    fingerprint
        .lines()
        .filter(|l| !l.starts_with("step:"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn error_parts(e: &OperateError) -> (String, String) {
    match e {
        OperateError::Arm(a) => (a.code().unwrap_or("Failed").to_string(), a.to_string()),
        other => ("Refused".to_string(), other.to_string()),
    }
}

fn statuses(report: &Report) -> Vec<(String, Status, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.step.as_str().to_string(), f.status, f.summary.clone()))
        .collect()
}

fn snapshot_statuses(json: serde_json::Value) -> Vec<(String, Status, String)> {
    json["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            // A status this build does not know (a snapshot another version kept) is left
            // out, never taken for an error.
            let status = <Status as serde::Deserialize>::deserialize(&f["status"]).ok()?;
            Some((
                f["step"].as_str()?.to_string(),
                status,
                f["summary"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// What changed between two checks, one line per step whose status changed.
pub fn diff(before: Option<&Report>, after: Option<&Report>) -> Vec<String> {
    match (before, after) {
        (Some(b), Some(a)) => diff_statuses(&statuses(b), &statuses(a)),
        _ => Vec::new(),
    }
}

fn diff_statuses(
    before: &[(String, Status, String)],
    after: &[(String, Status, String)],
) -> Vec<String> {
    after
        .iter()
        .filter_map(|(step, status, summary)| {
            let old = before.iter().find(|(s, _, _)| s == step)?;
            (old.1 != *status).then(|| {
                format!(
                    "{step}: {} → {} ({summary})",
                    old.1.as_str(),
                    status.as_str()
                )
            })
        })
        .collect()
}

/// Fixes that boot the VM: after them the guest agent needs time to report again.
fn reboots(action: ActionId) -> bool {
    matches!(
        action,
        ActionId::Start | ActionId::Restart | ActionId::Redeploy
    )
}

/// What a VM that a fix booted still shows that is not settled; `None` once it runs with a
/// Ready guest agent.
fn unsettled(facts: &crate::diagnose::VmFacts) -> Option<String> {
    use crate::diagnose::AgentFacts;
    if !facts.is_running() {
        let power = facts.power_state.as_deref().unwrap_or("unknown");
        return Some(format!("the VM is {power}"));
    }
    match &facts.agent {
        AgentFacts::Ready { .. } => None,
        AgentFacts::NotReady { .. } => Some("agent Not Ready".to_string()),
        AgentFacts::Missing => Some("agent has not reported yet".to_string()),
    }
}

/// A wait as people say it: "45 s", "5 min".
fn duration_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// A UTC time for people, e.g. `2026-11-25 13:40 UTC`.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod guest_fix_tests;
