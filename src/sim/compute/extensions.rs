//! VM extensions, with what VMAccessAgent does inside the guest. Preconditions and errors
//! follow Azure's (one extension per handler...). Secrets in request bodies
//! (`protectedSettings`) are read for their presence only: they are never stored, echoed or
//! logged.

use super::{busy, compute_operation_url, effective_agent, on_vm};
use crate::sim::lro::Outcome;
use crate::sim::resource::{json_body, lookup_vm, missing, not_found, vm_id, Answer, Ctx, Plan};
use crate::sim::world::{
    AgentState, Extension, Os, PowerState, Vm, VMACCESS_PUBLISHER, VMACCESS_TYPE,
};
use crate::sim::{now_rfc3339, Reply};
use serde_json::{json, Value};

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
                vm.guest.firewall_rdp_rule = true;
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
            Os::Windows => "Windows",
            Os::Linux => "Linux",
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

#[cfg(test)]
mod tests {
    use super::*;

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
