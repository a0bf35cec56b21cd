//! Fixes behind confirmations: request → authorise → plan from live facts → stored confirmation;
//! confirm → authorise the confirmer (and the two-person rule) → exactly-once → per-VM lock →
//! preconditions re-read → ARM write → follow → re-check → what changed. Everything is audited.
//!
//! **Architecture Invariant:** nothing here changes a VM without a stored, unexpired, single-use
//! confirmation from an authorised actor; the store's atomic `confirm` and per-VM lock decide.
//! Passwords never reach the store: they wait in memory (`SecretString`) next to the
//! confirmation id and are dropped once used or when the confirmation lapses.

use super::catalog::Catalog;
use super::fix::{self, FixRequest, Plan, PlanError};
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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    #[error("{vm} is busy: {action} by {holder} has been running since {since}. One change per VM at a time.")]
    Locked {
        vm: String,
        holder: String,
        action: String,
        since: String,
    },
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
    #[error("The password was only kept in memory and is gone (the bot restarted or the prompt lapsed). Ask again.")]
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

/// A confirmation waiting for a click (or a `rdp-doctor confirm ID`). The plan names the VM
/// fully (name, resource group, subscription).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub confirmation_id: String,
    pub plan: Plan,
    pub expires_ms: i64,
    pub two_person: bool,
    pub requester: String,
}

/// How a confirmed fix ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: ActionId,
    pub vm: VmRef,
    pub confirmed_by: String,
    pub result: Result<(), ArmError>,
    /// The check after the fix (only when it succeeded and the re-check ran).
    pub after: Option<Report>,
    /// Lines such as "nsg: fail → pass".
    pub changes: Vec<String>,
}

/// Progress of a running fix, for front ends to render.
#[derive(Debug, Clone)]
pub enum Progress {
    Sent { action: ActionId, vm: String },
    Waiting,
    Rechecking,
}

/// The operator: one per process.
#[derive(Clone)]
pub struct Operator {
    pub arm: Arm,
    pub catalog: Arc<Catalog>,
    pub store: Store,
    pub policy: Arc<Policy>,
    pub subscriptions: Vec<String>,
    /// Passwords by confirmation id, in memory only.
    passwords: Arc<Mutex<HashMap<String, (String, SecretString)>>>,
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
        }
    }

    pub async fn audit(
        &self,
        actor: &Actor,
        channel: Option<&str>,
        command: &str,
        vm: Option<&VmRef>,
        result: &str,
    ) {
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
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }

    /// The level `action` needs (`commands/rdp.toml`; admin if it does not say).
    pub fn permission(&self, action: ActionId) -> crate::runbook::catalog::Permission {
        self.catalog
            .step(action.as_str())
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
        self.policy.authorize(actor, self.permission(action), vm)?;
        self.ensure_free(vm).await?;
        let facts = fix::facts(&self.arm, vm).await?;
        let plan = fix::plan(&self.arm, &facts, &request).await?;
        self.authorize_plan(actor, &plan)?;
        let requester = self.policy.person_key(&actor.id);
        self.prompt(&requester, &actor.name, channel, request, plan)
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

    /// Store a prompt for `plan`; a password waits in memory under its id.
    async fn prompt(
        &self,
        requester: &str,
        requester_name: &str,
        channel: Option<&str>,
        request: FixRequest,
        plan: Plan,
    ) -> Result<Prompt, OperateError> {
        let action = request.action();
        let vm = &plan.vm;
        let created = now_ms();
        let ttl = self.policy.confirm_ttl().as_millis() as i64;
        let mut summary = plan.consequences.clone();
        summary.extend(plan.warnings.iter().cloned());
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
        if let FixRequest::ResetPassword { username, password } = request {
            if let Ok(mut passwords) = self.passwords.lock() {
                passwords.insert(confirmation.id.clone(), (username, password));
            }
        }
        Ok(Prompt {
            confirmation_id: confirmation.id,
            plan,
            expires_ms: confirmation.expires_ms,
            two_person: self.policy.two_person(action.as_str()),
            requester: requester_name.to_string(),
        })
    }

    async fn ensure_free(&self, vm: &VmRef) -> Result<(), OperateError> {
        if let Some(op) = self.store.current_operation(&vm.id).await? {
            return Err(OperateError::Locked {
                vm: vm.name.clone(),
                holder: op.requester_name,
                action: op.action,
                since: format_time(op.started_ms),
            });
        }
        Ok(())
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
        let Some(pending) = self.store.get_confirmation(confirmation_id).await? else {
            return Err(OperateError::NotFound);
        };
        let action = ActionId::parse(&pending.action).ok_or(OperateError::NotFound)?;
        let vm = VmRef::from_stored(&pending.vm_id, &pending.vm_name);
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
        let two_person = self.policy.two_person(action.as_str());
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
        self.audit(
            actor,
            confirmation.channel.as_deref(),
            "confirm",
            Some(&vm),
            &format!("confirmed {} {}", action.as_str(), short(confirmation_id)),
        )
        .await;
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
            ActionId::OpenRdpPort => {
                let source = params["source"].as_str().unwrap_or("");
                let source = if source == "*" {
                    fix::RdpSource::Anywhere
                } else {
                    fix::parse_source(source).map_err(|e| {
                        OperateError::Refused(fix::Refusal {
                            reason: e,
                            instead: None,
                        })
                    })?
                };
                FixRequest::OpenRdpPort { source }
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
        vm: &VmRef,
        action: ActionId,
        request: FixRequest,
        confirmation_id: Option<&str>,
        shown: Option<&str>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, OperateError> {
        let locked = self
            .store
            .start_operation(&NewOperation {
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
            })
            .await?;
        let operation = match locked {
            Ok(op) => op,
            Err(l) => {
                let error = OperateError::Locked {
                    vm: vm.name.clone(),
                    holder: l.holder_name,
                    action: l.action,
                    since: format_time(l.since_ms),
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
        let _ = self
            .store
            .set_operation_message(operation.id, channel, None)
            .await;
        let before = self.snapshot(vm).await;
        // Preconditions from facts read just before the write, not when the prompt was shown.
        // The confirmer is authorised on what the plan changes *now*, and the plan must be the
        // one the prompt showed: another NSG, priority or consequence runs nothing.
        let sent = async {
            let facts = fix::facts(&self.arm, vm).await?;
            let plan = fix::plan(&self.arm, &facts, &request).await?;
            self.authorize_plan(actor, &plan)?;
            if let Some(shown) = shown {
                if plan.fingerprint() != shown {
                    return Err(PlanDrift::Changed(shown.to_string(), Box::new(plan)));
                }
            }
            let handle = fix::execute(&self.arm, &plan, &request).await?;
            Ok::<OperationHandle, PlanDrift>(handle)
        }
        .await;
        let sent = match sent {
            Ok(handle) => Ok(handle),
            Err(PlanDrift::Failed(e)) => Err(e),
            Err(PlanDrift::Changed(was, plan)) => {
                let now = plan.fingerprint();
                match self
                    .prompt(&requester.key, &requester.name, channel, request, *plan)
                    .await
                {
                    Ok(fresh) => Err(OperateError::PlanChanged {
                        was: plan_summary(&was),
                        now: plan_summary(&now),
                        fresh: Box::new(fresh),
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        let handle = match sent {
            Ok(h) => h,
            Err(e) => {
                let (code, message) = error_parts(&e);
                let _ = self
                    .store
                    .finish_operation(operation.id, &OperationOutcome::Failed { code, message })
                    .await;
                self.audit(
                    actor,
                    channel,
                    action.as_str(),
                    Some(vm),
                    &format!("failed: {e}"),
                )
                .await;
                return Err(e);
            }
        };
        progress(Progress::Sent {
            action,
            vm: vm.name.clone(),
        });
        let _ = self
            .store
            .set_operation_url(operation.id, &handle.to_json())
            .await;
        progress(Progress::Waiting);
        let result = self
            .arm
            .wait(&handle, &format!("{} of {}", action.as_str(), vm.name))
            .await;
        self.finish(
            operation.id,
            actor,
            channel,
            vm,
            action,
            result,
            before,
            progress,
        )
        .await
    }

    /// Record the end of an operation, re-check on success and say what changed.
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
        let outcome = match &result {
            Ok(()) => OperationOutcome::Succeeded,
            Err(e) => OperationOutcome::Failed {
                code: e.code().unwrap_or("Failed").to_string(),
                message: e.to_string(),
            },
        };
        let _ = self.store.finish_operation(operation_id, &outcome).await;
        self.audit(
            actor,
            channel,
            action.as_str(),
            Some(vm),
            &match &result {
                Ok(()) => "succeeded".to_string(),
                Err(e) => format!("failed: {e}"),
            },
        )
        .await;
        let mut after = None;
        let mut changes = Vec::new();
        if result.is_ok() {
            progress(Progress::Rechecking);
            after = self.snapshot(vm).await;
            changes = diff(before.as_ref(), after.as_ref());
        }
        Ok(Outcome {
            action,
            vm: vm.clone(),
            confirmed_by: actor.name.clone(),
            result,
            after,
            changes,
        })
    }

    /// Run the checks and keep the report as the VM's latest snapshot.
    pub async fn snapshot(&self, vm: &VmRef) -> Option<Report> {
        let report = self.check(VmSummary::unlisted(vm.clone())).await.ok()?;
        if let Ok(json) = serde_json::to_string(&report) {
            let _ = self.store.save_snapshot(&vm.id, now_ms(), &json).await;
        }
        Some(report)
    }

    async fn check(&self, summary: VmSummary) -> Result<Report, super::CheckError> {
        super::check(
            &self.arm,
            &self.catalog,
            summary,
            &CheckOptions::default(),
            &|_| {},
        )
        .await
    }

    /// After a restart: follow every operation that was running, from its stored URL.
    pub async fn resume(
        &self,
        on_done: &(dyn Fn(&crate::store::Operation, &Outcome) + Send + Sync),
    ) -> Result<usize, OperateError> {
        let running = self.store.running_operations().await?;
        let count = running.len();
        for op in running {
            let Some(action) = ActionId::parse(&op.action) else {
                continue;
            };
            let vm = VmRef::from_stored(&op.vm_id, &op.vm_name);
            let actor = Actor {
                id: op.requester.clone(),
                name: op.requester_name.clone(),
                role_ids: Vec::new(),
                source: crate::policy::ActorSource::Cli,
            };
            let handle = op.azure_url.as_deref().and_then(OperationHandle::from_json);
            let result = match handle {
                Some(h) => self.arm.wait(&h, &format!("{} of {}", action.as_str(), vm.name)).await,
                None => Err(ArmError::OperationFailed {
                    status: "unknown".into(),
                    code: "Interrupted".into(),
                    message: "rdp-doctor stopped before Azure accepted the request; check the VM and ask again".into(),
                }),
            };
            let before = self
                .store
                .latest_snapshot(&vm.id)
                .await
                .ok()
                .flatten()
                .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&json).ok())
                .map(snapshot_statuses);
            let outcome = self
                .finish(
                    op.id,
                    &actor,
                    op.channel.as_deref(),
                    &vm,
                    action,
                    result,
                    None,
                    &|_| {},
                )
                .await?;
            let mut outcome = outcome;
            if let (Some(before), Some(after)) = (before, outcome.after.as_ref()) {
                outcome.changes = diff_statuses(&before, &statuses(after));
            }
            on_done(&op, &outcome);
        }
        Ok(count)
    }
}

/// The requester of a confirmation: the person key the two-person rule compares, and a name.
struct Requester {
    key: String,
    name: String,
}

/// Why `run` sent nothing: a failure, or a plan that is not the one the prompt showed.
enum PlanDrift {
    Failed(OperateError),
    Changed(String, Box<Plan>),
}

impl From<OperateError> for PlanDrift {
    fn from(e: OperateError) -> PlanDrift {
        PlanDrift::Failed(e)
    }
}

impl From<ArmError> for PlanDrift {
    fn from(e: ArmError) -> PlanDrift {
        PlanDrift::Failed(e.into())
    }
}

impl From<PlanError> for PlanDrift {
    fn from(e: PlanError) -> PlanDrift {
        PlanDrift::Failed(e.into())
    }
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
            let status = match f["status"].as_str()? {
                "pass" => Status::Pass,
                "warn" => Status::Warn,
                "fail" => Status::Fail,
                "skip" => Status::Skip,
                _ => Status::Error,
            };
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
