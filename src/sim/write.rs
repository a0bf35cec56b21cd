//! ARM writes: VM power actions (start, restart, redeploy, deallocate, powerOff), VM extensions
//! (with what VMAccessAgent does inside the guest) and NSG security rules.
//!
//! Each accepted write becomes a long-running operation (`lro.rs`) whose steps move the world
//! as the client polls: a restart shows the VM starting, then running. Preconditions and
//! errors follow Azure's (409 `OperationNotAllowed` on a deallocated VM, one extension per
//! handler...). Secrets in request bodies (`protectedSettings`) are read for their presence
//! only: they are never stored, echoed or logged.

use super::arm::{
    check_scope, compute_operation_url, effective_agent, lookup_vm, not_found, nsg_id,
    operation_not_found, rule_json, vm_id, Answer, Ctx, VmAction,
};
use super::lro::{Hook, NewOperation, Outcome, Poll};
use super::now_rfc3339;
use super::world::{
    AgentState, Allocation, Extension, Nsg, PowerState, Rule, Vm, World, VMACCESS_PUBLISHER,
    VMACCESS_TYPE,
};
use super::Reply;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Accepting a write

/// How an accepted write changes the world: now, at each poll, and when it finishes.
struct Plan {
    now: Vec<Hook>,
    steps: Vec<Hook>,
    on_complete: Option<Hook>,
    outcome: Outcome,
    /// How a GET shows the resource while the operation runs (see `lro::NewOperation`).
    pending_view: Option<Value>,
}

impl Plan {
    fn new(outcome: Outcome) -> Plan {
        Plan {
            now: Vec::new(),
            steps: Vec::new(),
            on_complete: None,
            outcome,
            pending_view: None,
        }
    }
}

impl Ctx<'_> {
    /// The failure `SimOptions::fail_operations` injects into this write, if any.
    fn injected_failure(&self) -> Option<Outcome> {
        let path = self.path.to_ascii_lowercase();
        self.fail_operations
            .iter()
            .find(|f| path.contains(&f.path_contains.to_ascii_lowercase()))
            .map(|f| Outcome::Failed {
                code: f.code.clone(),
                message: f.message.clone(),
            })
    }

    /// Registers the operation (an injected failure replaces the plan and leaves the world
    /// alone), applies the plan's immediate changes and returns the operation id.
    fn accept(&mut self, sub: &str, name: &str, resource: Option<String>, plan: Plan) -> String {
        let plan = match self.injected_failure() {
            Some(failed) => Plan::new(failed),
            None => plan,
        };
        for change in plan.now {
            change(self.world);
        }
        self.lro.begin(NewOperation {
            subscription: sub.to_owned(),
            polls: self.lro_polls,
            outcome: plan.outcome,
            name: name.to_owned(),
            resource,
            steps: plan.steps,
            on_complete: plan.on_complete,
            pending_view: plan.pending_view,
            ready_at: None,
        })
    }
}

/// A change to one VM, found again by subscription, group and name when the hook runs.
fn on_vm(vm: &Vm, change: impl FnOnce(&mut Vm) + Send + 'static) -> Hook {
    let (sub, rg, name) = (
        vm.subscription.clone(),
        vm.resource_group.clone(),
        vm.name.clone(),
    );
    Box::new(move |world: &mut World| {
        if let Some(vm) = world.find_vm_mut(&sub, &rg, &name) {
            change(vm);
        }
    })
}

/// The VM enters `state` with provisioning state "updating" (as during any CRP operation).
fn transition(vm: &Vm, state: PowerState) -> Hook {
    on_vm(vm, move |vm| {
        vm.power_state = state;
        vm.provisioning_state = "updating".to_owned();
    })
}

/// The VM ends in `state`, provisioned.
fn settle(vm: &Vm, state: PowerState) -> Hook {
    on_vm(vm, move |vm| {
        vm.power_state = state;
        vm.provisioning_state = "succeeded".to_owned();
    })
}

/// The VM is back, running and provisioned, and settles for `settle`: its agent has not
/// reported yet and Resource Health still shows the reboot.
fn back_running(vm: &Vm, settle: std::time::Duration) -> Hook {
    on_vm(vm, move |vm| {
        vm.power_state = PowerState::Running;
        vm.provisioning_state = "succeeded".to_owned();
        vm.settles_at = Some(std::time::Instant::now() + settle);
    })
}

/// A dynamic public IP gets a fresh address (`always`), or one only if it has none.
fn allocate_dynamic_ip(vm: &Vm, always: bool) -> Hook {
    let (sub, rg, name) = (
        vm.subscription.clone(),
        vm.resource_group.clone(),
        vm.name.clone(),
    );
    Box::new(move |world: &mut World| {
        let fresh = unused_public_address(world);
        if let Some(ip) = world
            .find_vm_mut(&sub, &rg, &name)
            .and_then(|vm| vm.public_ip.as_mut())
            .filter(|ip| ip.allocation == Allocation::Dynamic)
        {
            if always || ip.address.is_none() {
                ip.address = Some(fresh);
            }
        }
    })
}

/// The first address of 20.5.0.0/16 that no public IP of the world has.
fn unused_public_address(world: &World) -> String {
    let used: std::collections::HashSet<&str> = world
        .vms
        .iter()
        .filter_map(|v| v.public_ip.as_ref()?.address.as_deref())
        .collect();
    (0u32..)
        .map(|n| format!("20.5.{}.{}", (n / 250) % 256, 4 + n % 250))
        .find(|candidate| !used.contains(&candidate.as_str()))
        .unwrap_or_else(|| "20.5.255.254".to_owned())
}

fn not_allowed(action: &str, vm: &Vm, state: PowerState) -> Reply {
    Reply::arm_error(
        409,
        "OperationNotAllowed",
        &format!(
            "Operation '{action}' is not allowed on VM '{}' since the VM is {state}.",
            vm.name
        ),
    )
}

fn busy(action: &str, vm: &Vm, running: &str) -> Reply {
    Reply::arm_error(
        409,
        "Conflict",
        &format!(
            "Operation '{action}' is not allowed since the Virtual Machine '{}' is already in progress of another operation '{running}'. Please wait for that operation to complete and retry.",
            vm.name
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Power actions

/// `POST virtualMachines/{vm}/{start|restart|redeploy|deallocate|powerOff}`.
pub(crate) fn vm_action(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
    action: VmAction,
) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, name)?;
    let id = vm_id(vm);
    if let Some(running) = ctx.lro.running_on(&id) {
        return Err(busy(action.as_str(), vm, &running));
    }
    let state = vm.power_state;
    let deallocated = state == PowerState::Deallocated;
    let mut plan = Plan::new(Outcome::Succeeded);
    match action {
        VmAction::Start if state == PowerState::Running => return Ok(Reply::empty(200)),
        VmAction::Start => {
            plan.now = vec![
                transition(vm, PowerState::Starting),
                allocate_dynamic_ip(vm, false),
            ];
            plan.on_complete = Some(back_running(vm, ctx.settle));
        }
        VmAction::Restart | VmAction::Redeploy if deallocated => {
            return Err(not_allowed(action.as_str(), vm, state));
        }
        VmAction::Restart => {
            plan.now = vec![transition(vm, PowerState::Starting)];
            plan.on_complete = Some(back_running(vm, ctx.settle));
        }
        VmAction::Redeploy => {
            // Shut down, moved to a new host (a dynamic IP changes), powered back on.
            plan.now = vec![transition(vm, PowerState::Stopping)];
            plan.steps = vec![
                transition(vm, PowerState::Starting),
                allocate_dynamic_ip(vm, true),
            ];
            plan.on_complete = Some(back_running(vm, ctx.settle));
        }
        VmAction::Deallocate if deallocated => return Ok(Reply::empty(200)),
        VmAction::Deallocate => {
            plan.now = vec![transition(vm, PowerState::Deallocating)];
            plan.on_complete = Some(Box::new({
                let settle = settle(vm, PowerState::Deallocated);
                let release = on_vm(vm, |vm| {
                    if let Some(ip) = vm
                        .public_ip
                        .as_mut()
                        .filter(|ip| ip.allocation == Allocation::Dynamic)
                    {
                        ip.address = None;
                    }
                });
                move |world: &mut World| {
                    settle(world);
                    release(world);
                }
            }));
        }
        VmAction::PowerOff if deallocated => {
            return Err(not_allowed(action.as_str(), vm, state));
        }
        VmAction::PowerOff if state == PowerState::Stopped => return Ok(Reply::empty(200)),
        VmAction::PowerOff => {
            plan.now = vec![transition(vm, PowerState::Stopping)];
            plan.on_complete = Some(settle(vm, PowerState::Stopped));
        }
    }
    let location = vm.location.clone();
    let op = ctx.accept(sub, action.as_str(), Some(id), plan);
    let status = compute_operation_url(ctx.base, sub, &location, &op);
    let monitor = status.replacen("?api-version=", "?monitor=true&api-version=", 1);
    Ok(Reply::empty(202)
        .header("Azure-AsyncOperation", status)
        .header("Location", monitor)
        .header("Retry-After", ctx.retry_after.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Extensions

fn extension_id(vm: &Vm, name: &str) -> String {
    format!("{}/extensions/{name}", vm_id(vm))
}

fn settings_of(ext: &Extension) -> Value {
    serde_json::from_str(&ext.settings).unwrap_or_else(|_| json!({}))
}

/// The extension's status as the agent reports it (`VirtualMachineExtensionInstanceView`).
pub(crate) fn extension_instance_view_json(ext: &Extension) -> Value {
    let state = ext.provisioning_state.to_ascii_lowercase();
    let (code, level, display, default_message) = match state.as_str() {
        "succeeded" => (
            "ProvisioningState/succeeded",
            "Info",
            "Provisioning succeeded",
            "Enable succeeded.",
        ),
        // The handler's status code follows, as in Azure's `ProvisioningState/failed/1`.
        "failed" => (
            "ProvisioningState/failed/1",
            "Error",
            "Provisioning failed",
            "Enable failed.",
        ),
        _ => (
            "ProvisioningState/transitioning",
            "Info",
            "Transitioning",
            "Enable in progress.",
        ),
    };
    json!({
        "name": ext.name,
        "type": ext.handler(),
        "typeHandlerVersion": ext.type_handler_version,
        "statuses": [{
            "code": code,
            "level": level,
            "displayStatus": display,
            "message": ext.status_message.as_deref().unwrap_or(default_message),
            "time": now_rfc3339(),
        }],
    })
}

/// `vmAgent.extensionHandlers` of a Ready agent: one per installed handler.
pub(crate) fn extension_handlers_json(vm: &Vm) -> Value {
    let handlers: Vec<Value> = vm
        .extensions
        .iter()
        .map(|ext| {
            json!({
                "type": ext.handler(),
                "typeHandlerVersion": ext.type_handler_version,
                "status": {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Ready",
                },
            })
        })
        .collect();
    json!(handlers)
}

/// `VirtualMachineExtension` as ARM returns it: never with `protectedSettings`.
fn extension_json(vm: &Vm, ext: &Extension, with_instance_view: bool) -> Value {
    let mut properties = json!({
        "publisher": ext.publisher,
        "type": ext.kind,
        "typeHandlerVersion": ext.type_handler_version,
        "autoUpgradeMinorVersion": ext.auto_upgrade_minor_version,
        "provisioningState": ext.provisioning_state,
        "settings": settings_of(ext),
    });
    if let Some(tag) = &ext.force_update_tag {
        properties["forceUpdateTag"] = json!(tag);
    }
    if with_instance_view {
        properties["instanceView"] = extension_instance_view_json(ext);
    }
    json!({
        "name": ext.name,
        "id": extension_id(vm, &ext.name),
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": vm.location,
        "properties": properties,
    })
}

fn expand_instance_view(ctx: &Ctx<'_>) -> bool {
    ctx.query
        .get("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"))
}

/// `GET virtualMachines/{vm}/extensions`.
pub(crate) fn list_extensions(ctx: &mut Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, name)?;
    let expand = expand_instance_view(ctx);
    let value: Vec<Value> = vm
        .extensions
        .iter()
        .map(|e| extension_json(vm, e, expand))
        .collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}

fn extension_not_found(vm: &Vm, name: &str) -> Reply {
    not_found(
        &format!("Microsoft.Compute/virtualMachines/{}/extensions", vm.name),
        name,
        &vm.resource_group,
    )
}

/// `GET virtualMachines/{vm}/extensions/{name}`.
pub(crate) fn get_extension(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    vm_name: &str,
    name: &str,
) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, vm_name)?;
    let ext = vm
        .extensions
        .iter()
        .find(|e| e.is_named(name))
        .ok_or_else(|| extension_not_found(vm, name))?;
    Ok(Reply::json(
        200,
        &extension_json(vm, ext, expand_instance_view(ctx)),
    ))
}

/// The request body as JSON, or ARM's 400. The error names only the position, never content.
fn json_body(ctx: &Ctx<'_>) -> Result<Value, Reply> {
    serde_json::from_slice::<Value>(ctx.body).map_err(|e| {
        Reply::arm_error(
            400,
            "InvalidRequestContent",
            &format!(
                "The request content was invalid and could not be deserialized: syntax error at line {} column {}.",
                e.line(),
                e.column()
            ),
        )
    })
}

fn missing(parameter: &str) -> Reply {
    Reply::arm_error(
        400,
        "InvalidParameter",
        &format!("Required parameter '{parameter}' is missing (null)."),
    )
}

/// What the Windows VMAccess handler reads: `settings.UserName` and `protectedSettings.Password`,
/// spelled so (Azure PowerShell's Set-AzVMAccessExtension, Azure/azure-powershell
/// src/Compute/Compute/Extension/VMAccess/SetAzureVMAccessExtension.cs, and az CLI's Windows
/// `vm user update`, Azure/azure-cli src/azure-cli/azure/cli/command_modules/vm/custom.py
/// `_reset_windows_admin`), with a `typeHandlerVersion` of major version 2. ARM accepts any
/// JSON there; the handler in the guest is what fails, and the extension ends `Failed`. The
/// returned message is the simulator's wording (the handler's own is not published); it never
/// repeats a value.
fn windows_vmaccess_run(
    version: Option<&str>,
    settings: &Value,
    protected: Option<&Value>,
) -> Result<VmAccessRun, HandlerFailure> {
    let empty = serde_json::Map::new();
    let public = settings.as_object().unwrap_or(&empty);
    let private = match protected {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(HandlerFailure::ProtectedNotObject),
    };
    if public.keys().any(|k| k.eq_ignore_ascii_case("password")) {
        return Err(HandlerFailure::PasswordInPublic);
    }
    match version {
        Some(v) if v.split('.').next() == Some("2") => {}
        Some(v) => return Err(HandlerFailure::Version(v.to_owned())),
        None => return Err(HandlerFailure::NoVersion),
    }
    let unknown: Vec<String> = public
        .keys()
        .filter(|k| k.as_str() != "UserName")
        .map(|k| format!("settings.{k}"))
        .chain(
            private
                .keys()
                .filter(|k| k.as_str() != "Password")
                .map(|k| format!("protectedSettings.{k}")),
        )
        .collect();
    if !unknown.is_empty() {
        return Err(HandlerFailure::Unrecognized(unknown.join(", ")));
    }
    let password_given = private
        .get("Password")
        .is_some_and(|p| p.as_str().is_some_and(|p| !p.is_empty()));
    match public.get("UserName").map(Value::as_str) {
        None if password_given => Err(HandlerFailure::PasswordWithoutUser),
        None => Ok(VmAccessRun::ResetRdp),
        Some(Some(username)) if !username.is_empty() => Ok(VmAccessRun::ResetUser {
            username: username.to_owned(),
            password_given,
        }),
        Some(_) => Err(HandlerFailure::EmptyUser),
    }
}

/// Why the Windows VMAccess handler in the guest fails a run (the simulator's wording; it
/// never repeats a value of the settings).
#[derive(Debug, Clone, thiserror::Error)]
enum HandlerFailure {
    #[error("protectedSettings is not a JSON object.")]
    ProtectedNotObject,
    #[error("A password was sent in public settings, which are stored in clear and returned on every read. Send it as protectedSettings.Password.")]
    PasswordInPublic,
    #[error("typeHandlerVersion '{0}' is not a version of VMAccessAgent for Windows (2.x).")]
    Version(String),
    #[error("typeHandlerVersion is missing.")]
    NoVersion,
    #[error("Unrecognized setting(s) {0}: the handler reads settings.UserName and protectedSettings.Password.")]
    Unrecognized(String),
    #[error("protectedSettings.Password was sent without settings.UserName.")]
    PasswordWithoutUser,
    #[error("settings.UserName is empty or not a string.")]
    EmptyUser,
}

/// What a VMAccessAgent run does in the guest, decided from the PUT. Holds no password.
enum VmAccessRun {
    /// `settings: {}`: enable Remote Desktop on 3389 and its firewall rule.
    ResetRdp,
    /// `settings.username` (+ `protectedSettings.password`): create or enable the user as a
    /// local administrator and, with a password, set it.
    ResetUser {
        username: String,
        password_given: bool,
    },
}

impl VmAccessRun {
    fn apply(&self, vm: &mut Vm) -> String {
        match self {
            VmAccessRun::ResetRdp => {
                vm.rdp_enabled = true;
                vm.rdp_port = 3389;
                "Remote Desktop configuration was reset: Remote Desktop is enabled on port 3389 and its firewall rule is on.".to_owned()
            }
            VmAccessRun::ResetUser {
                username,
                password_given,
            } => {
                if !vm
                    .local_admins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(username))
                {
                    vm.local_admins.push(username.clone());
                }
                if *password_given {
                    vm.password_resets = vm.password_resets.saturating_add(1);
                    format!("The password of local administrator '{username}' was reset.")
                } else {
                    format!("Local administrator '{username}' is enabled.")
                }
            }
        }
    }
}

/// `PUT virtualMachines/{vm}/extensions/{name}` (`VirtualMachineExtensions_CreateOrUpdate`).
pub(crate) fn put_extension(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    vm_name: &str,
    name: &str,
) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, vm_name)?;
    let body = json_body(ctx)?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| missing("properties"))?;
    let required = |field: &str| {
        props
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| missing(&format!("properties.{field}")))
    };
    let publisher = required("publisher")?;
    let kind = required("type")?;
    // A VMAccessAgent without a version is accepted and then fails in the guest (below).
    let version = props
        .get("typeHandlerVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let windows_vmaccess = publisher.eq_ignore_ascii_case(VMACCESS_PUBLISHER)
        && kind.eq_ignore_ascii_case(VMACCESS_TYPE);
    if version.is_none() && !windows_vmaccess {
        return Err(missing("properties.typeHandlerVersion"));
    }
    let settings = match props.get("settings") {
        None | Some(Value::Null) => json!({}),
        Some(settings @ Value::Object(_)) => settings.clone(),
        Some(_) => return Err(Reply::arm_error(
            400,
            "InvalidParameter",
            "The value of parameter 'properties.settings' is invalid: it must be a JSON object.",
        )),
    };
    let protected = props.get("protectedSettings").filter(|p| !p.is_null());
    let force_update_tag = props
        .get("forceUpdateTag")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let auto_upgrade = props
        .get("autoUpgradeMinorVersion")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let id = vm_id(vm);
    if let Some(running) = ctx.lro.running_on(&id) {
        return Err(busy("extension update", vm, &running));
    }
    if vm.power_state != PowerState::Running {
        return Err(Reply::json(
            409,
            &json!({"error": {
                "code": "OperationNotAllowed",
                "message": "Cannot modify extensions in the VM when the VM is not running.",
                "internalErrorCode": "CannotModifyExtensionsWhenVMNotRunning",
            }}),
        ));
    }
    let handler = format!("{publisher}.{kind}");
    if let Some(other) = vm
        .extensions
        .iter()
        .find(|e| !e.is_named(name) && e.handler().eq_ignore_ascii_case(&handler))
    {
        let os = match vm.os {
            super::world::Os::Windows => "Windows",
            super::world::Os::Linux => "Linux",
        };
        return Err(Reply::json(
            400,
            &json!({"error": {
                "code": "BadRequest",
                "message": format!(
                    "Multiple VMExtensions per handler not supported for OS type '{os}'. VMExtension '{}' with handler '{}' already added or specified in input.",
                    other.name, other.handler()
                ),
                "internalErrorCode": "MultipleExtensionsPerHandlerNotAllowed",
            }}),
        ));
    }

    let existing = vm.extensions.iter().find(|e| e.is_named(name));
    let settings_text = settings.to_string();
    // ARM runs the handler again only when something changed (hence forceUpdateTag).
    let unchanged = existing.is_some_and(|e| {
        e.provisioning_state.eq_ignore_ascii_case("Succeeded")
            && Some(&e.type_handler_version) == version.as_ref()
            && e.force_update_tag == force_update_tag
            && settings_of(e) == settings
            && protected.is_none_or(|p| p.as_object().is_some_and(|m| m.is_empty()))
    });
    let created = existing.is_none();
    let stored_name = existing.map_or_else(|| name.to_owned(), |e| e.name.clone());
    let pending = Extension {
        name: stored_name.clone(),
        publisher,
        kind,
        type_handler_version: version.clone().unwrap_or_default(),
        auto_upgrade_minor_version: auto_upgrade,
        force_update_tag,
        settings: settings_text,
        provisioning_state: if created { "Creating" } else { "Updating" }.to_owned(),
        status_message: None,
    };
    let run = if windows_vmaccess && !unchanged {
        Some(windows_vmaccess_run(
            version.as_deref(),
            &settings,
            protected,
        ))
    } else {
        None
    };
    let agent_ready = effective_agent(vm).0 == AgentState::Ready;

    let mut plan = Plan::new(Outcome::Succeeded);
    let upsert = {
        let pending = pending.clone();
        on_vm(vm, move |vm| {
            match vm.extensions.iter_mut().find(|e| e.is_named(&pending.name)) {
                Some(slot) => *slot = pending,
                None => vm.extensions.push(pending),
            }
        })
    };
    plan.now.push(upsert);
    let finish = move |vm: &mut Vm, state: &str, message: String| {
        if let Some(ext) = vm.extensions.iter_mut().find(|e| e.is_named(&stored_name)) {
            ext.provisioning_state = state.to_owned();
            ext.status_message = Some(message);
        }
    };
    if let (true, Some(Err(failure))) = (agent_ready, &run) {
        // Azure's VM extension provisioning error, with the handler's message inside.
        plan.outcome = Outcome::Failed {
            code: "VMExtensionProvisioningError".to_owned(),
            message: format!(
                "VM has reported a failure when processing extension '{}' (publisher '{}' and type '{}'). Error message: '{failure}'. More information on troubleshooting is available at https://aka.ms/vmextensionwindowstroubleshoot.",
                pending.name, pending.publisher, pending.kind
            ),
        };
        let failure = failure.to_string();
        plan.on_complete = Some(on_vm(vm, move |vm| finish(vm, "Failed", failure)));
    } else if agent_ready {
        plan.on_complete = Some(on_vm(vm, move |vm| {
            let message = match &run {
                Some(Ok(run)) => run.apply(vm),
                _ => "Enable succeeded.".to_owned(),
            };
            finish(vm, "Succeeded", message);
        }));
    } else {
        let message = format!(
            "VM '{}' has not reported status for VM agent or extensions. Verify that the OS is up and healthy, the VM has a running VM agent, and that it can establish outbound connections to Azure storage. Please refer to https://aka.ms/vmextensionwindowstroubleshoot for additional VM agent troubleshooting information.",
            vm.name
        );
        plan.outcome = Outcome::Failed {
            code: "VMAgentStatusCommunicationError".to_owned(),
            message: message.clone(),
        };
        plan.on_complete = Some(on_vm(vm, move |vm| finish(vm, "Failed", message)));
    }

    let mut response = extension_json(vm, &pending, false);
    let location = vm.location.clone();
    let op = ctx.accept(sub, "extension update", Some(id), plan);
    // An injected failure leaves the world alone, but the answer still shows the accepted PUT.
    response["properties"]["provisioningState"] = json!(pending.provisioning_state);
    Ok(Reply::json(if created { 201 } else { 200 }, &response)
        .header(
            "Azure-AsyncOperation",
            compute_operation_url(ctx.base, sub, &location, &op),
        )
        .header("Retry-After", ctx.retry_after.to_string()))
}

// ---------------------------------------------------------------------------------------------
// NSG security rules

fn lookup_nsg<'w>(world: &'w World, sub: &str, rg: &str, name: &str) -> Result<&'w Nsg, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .find_nsg(sub, name)
        .filter(|n| n.resource_group.eq_ignore_ascii_case(rg))
        .ok_or_else(|| not_found("Microsoft.Network/networkSecurityGroups", name, rg))
}

/// `GET networkSecurityGroups/{nsg}/securityRules/{name}`.
pub(crate) fn get_security_rule(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    nsg: &str,
    name: &str,
) -> Answer {
    let nsg = lookup_nsg(ctx.world, sub, rg, nsg)?;
    if let Some(writing) = ctx
        .lro
        .pending_view(&format!("{}/securityRules/{name}", nsg_id(nsg)))
    {
        return Ok(Reply::json(200, &writing));
    }
    let rule = nsg
        .rules
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Reply::arm_error(
                404,
                "NotFound",
                &format!("Resource {}/securityRules/{name} not found.", nsg_id(nsg)),
            )
        })?;
    Ok(Reply::json(200, &rule_json(nsg, "securityRules", rule)))
}

fn bad_rule(code: &str, message: String) -> Reply {
    Reply::arm_error(400, code, &message)
}

/// One of `allowed`, matched case-insensitively and returned in Azure's spelling.
fn one_of(
    props: &Value,
    field: &str,
    allowed: &[&'static str],
    code: &str,
    rule: &str,
) -> Result<&'static str, Reply> {
    let value = props
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| missing(&format!("properties.{field}")))?;
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| {
            bad_rule(
                code,
                format!(
                    "Security rule {rule} has invalid {field} '{value}'. Allowed values: {}.",
                    allowed.join(", ")
                ),
            )
        })
}

/// A singular field or its plural array; `Ok(None)` when neither is given.
fn single_or_plural(
    props: &Value,
    single: &str,
    plural: &str,
) -> Result<(Option<String>, Vec<String>), Reply> {
    let invalid = |field: &str| {
        bad_rule(
            "InvalidRequestFormat",
            format!("Cannot parse the request: 'properties.{field}' has the wrong type."),
        )
    };
    let one = match props.get(single) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid(single)),
    };
    let many = match props.get(plural) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| invalid(plural)))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid(plural)),
    };
    Ok((one, many))
}

/// A field the world keeps singular: the singular, or a plural with exactly one entry.
fn only_single(props: &Value, single: &str, plural: &str) -> Result<Option<String>, Reply> {
    match single_or_plural(props, single, plural)? {
        (one, many) if many.is_empty() => Ok(one),
        (None, many) if many.len() == 1 => Ok(many.into_iter().next()),
        _ => Err(bad_rule(
            "InvalidRequestFormat",
            format!("The simulator models one '{single}' per rule, not several '{plural}'."),
        )),
    }
}

fn rule_from_body(name: &str, body: &Value) -> Result<Rule, Reply> {
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| missing("properties"))?;
    // Esp and Ah exist in Azure but are not modelled here.
    let protocol = one_of(
        props,
        "protocol",
        &["Tcp", "Udp", "Icmp", "*"],
        "SecurityRuleInvalidProtocol",
        name,
    )?;
    let access = one_of(
        props,
        "access",
        &["Allow", "Deny"],
        "SecurityRuleInvalidAccess",
        name,
    )?;
    let direction = one_of(
        props,
        "direction",
        &["Inbound", "Outbound"],
        "SecurityRuleInvalidDirection",
        name,
    )?;
    let priority = props
        .get("priority")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("properties.priority"))?;
    let priority = u32::try_from(priority)
        .ok()
        .filter(|p| (100..=4096).contains(p))
        .ok_or_else(|| {
            bad_rule(
                "SecurityRuleInvalidPriority",
                format!("Security rule {name} has invalid Priority. Value provided: {priority}. Allowed range 100-4096."),
            )
        })?;
    let (source, sources) =
        single_or_plural(props, "sourceAddressPrefix", "sourceAddressPrefixes")?;
    let (destination_port, destination_ports) =
        single_or_plural(props, "destinationPortRange", "destinationPortRanges")?;
    let source_port = only_single(props, "sourcePortRange", "sourcePortRanges")?;
    let destination = only_single(
        props,
        "destinationAddressPrefix",
        "destinationAddressPrefixes",
    )?;
    let description = props
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Rule {
        name: name.to_owned(),
        priority,
        direction: direction.to_owned(),
        access: access.to_owned(),
        protocol: protocol.to_owned(),
        source: if sources.is_empty() {
            Some(source.unwrap_or_else(|| "*".to_owned()))
        } else {
            None
        },
        sources,
        source_port: source_port.unwrap_or_else(|| "*".to_owned()),
        destination: Some(destination.unwrap_or_else(|| "*".to_owned())),
        destination_port: if destination_ports.is_empty() {
            Some(destination_port.unwrap_or_else(|| "*".to_owned()))
        } else {
            None
        },
        destination_ports,
        description,
    })
}

fn network_operation_status_url(base: &str, sub: &str, location: &str, id: &str) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operations/{id}?api-version=2024-03-01"
    )
}

/// `PUT networkSecurityGroups/{nsg}/securityRules/{name}`: the rule is in the NSG (and so in
/// the effective rules) once the operation is done.
pub(crate) fn put_security_rule(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    nsg_name: &str,
    name: &str,
) -> Answer {
    let nsg = lookup_nsg(ctx.world, sub, rg, nsg_name)?;
    let body = json_body(ctx)?;
    let existing = nsg.rules.iter().find(|r| r.name.eq_ignore_ascii_case(name));
    let name = existing.map_or(name, |r| r.name.as_str());
    let rule = rule_from_body(name, &body)?;
    if let Some(other) = nsg.rules.iter().find(|r| {
        !r.name.eq_ignore_ascii_case(name)
            && r.priority == rule.priority
            && r.direction == rule.direction
    }) {
        return Err(bad_rule(
            "SecurityRuleConflict",
            format!(
                "Security rule {name} conflicts with rule {}. Rules cannot have the same Priority and Direction. To learn more, see aka.ms/nsgrules.",
                other.name
            ),
        ));
    }
    let created = existing.is_none();
    let mut response = rule_json(nsg, "securityRules", &rule);
    response["properties"]["provisioningState"] = json!("Updating");
    let result = rule_json(nsg, "securityRules", &rule);
    // The operation holds the rule, so reads of it move an unwatched operation on.
    let rule_id = format!("{}/securityRules/{}", nsg_id(nsg), rule.name);
    let (nsg_sub, nsg_name, location) = (
        nsg.subscription.clone(),
        nsg.name.clone(),
        nsg.location.clone(),
    );
    let mut plan = Plan::new(Outcome::Body(result));
    // Azure shows the rule, `Updating`, as soon as the PUT is accepted.
    plan.pending_view = Some(response.clone());
    plan.on_complete = Some(Box::new(move |world: &mut World| {
        if let Some(nsg) = world
            .nsgs
            .iter_mut()
            .find(|n| n.subscription == nsg_sub && n.name == nsg_name)
        {
            match nsg
                .rules
                .iter_mut()
                .find(|r| r.name.eq_ignore_ascii_case(&rule.name))
            {
                Some(slot) => *slot = rule,
                None => nsg.rules.push(rule),
            }
        }
    }));
    let op = ctx.accept(sub, "security rule update", Some(rule_id), plan);
    Ok(Reply::json(if created { 201 } else { 200 }, &response)
        .header(
            "Azure-AsyncOperation",
            network_operation_status_url(ctx.base, sub, &location, &op),
        )
        .header("Retry-After", ctx.retry_after.to_string()))
}

/// `GET .../Microsoft.Network/locations/{loc}/operations/{id}`: Network's async status body.
pub(crate) fn network_operation_status(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    match ctx.lro.poll(sub, id, ctx.world) {
        None => Err(operation_not_found(id)),
        Some(Poll::InProgress { .. }) => Ok(Reply::json(200, &json!({"status": "InProgress"}))
            .header("Retry-After", ctx.retry_after.to_string())),
        Some(Poll::Done { outcome, .. }) => Ok(Reply::json(
            200,
            &match outcome {
                Outcome::Failed { code, message } => {
                    json!({"status": "Failed", "error": {"code": code, "message": message}})
                }
                Outcome::Succeeded | Outcome::Body(_) => json!({"status": "Succeeded"}),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_addresses_avoid_those_in_use() {
        let mut world = World::new().vm("a").vm("b");
        if let Some(ip) = world.vms[0].public_ip.as_mut() {
            ip.address = Some("20.5.0.4".to_owned());
        }
        assert_eq!(unused_public_address(&world), "20.5.0.5");
    }

    #[test]
    fn rules_from_bodies_take_singular_or_plural_fields() {
        let body = json!({"properties": {
            "protocol": "tcp", "access": "allow", "direction": "inbound", "priority": 310,
            "sourceAddressPrefixes": ["203.0.113.0/24", "198.51.100.7"],
            "destinationPortRange": "3389", "sourcePortRanges": ["*"],
        }});
        let rule = rule_from_body("allow-office", &body).expect("valid rule");
        assert_eq!(
            (
                rule.protocol.as_str(),
                rule.access.as_str(),
                rule.direction.as_str()
            ),
            ("Tcp", "Allow", "Inbound")
        );
        assert_eq!(rule.source, None);
        assert_eq!(rule.sources.len(), 2);
        assert_eq!(rule.source_port, "*");
        let bad = json!({"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 99}});
        assert!(rule_from_body("x", &bad).is_err());
    }

    #[test]
    fn extension_status_follows_provisioning_state() {
        let mut ext = Extension::vmaccess("enablevmAccess");
        assert_eq!(
            extension_instance_view_json(&ext)["statuses"][0]["code"],
            "ProvisioningState/succeeded"
        );
        ext.provisioning_state = "Creating".to_owned();
        assert_eq!(
            extension_instance_view_json(&ext)["statuses"][0]["displayStatus"],
            "Transitioning"
        );
        assert_eq!(
            extension_instance_view_json(&ext)["type"],
            "Microsoft.Compute.VMAccessAgent"
        );
    }
}
