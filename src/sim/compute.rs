//! Microsoft.Compute: VMs (lists, GET, instance view), boot diagnostics, power actions (start,
//! restart, redeploy, deallocate, powerOff) and Compute's operation status; VM extensions are in
//! `extensions`.
//!
//! Each accepted write becomes a long-running operation (`lro.rs`) whose steps move the world
//! as the client polls: a restart shows the VM starting, then running. Preconditions and
//! errors follow Azure's (409 `OperationNotAllowed` on a deallocated VM...).

mod extensions;
mod run_command;

pub(crate) use extensions::{get_extension, list_extensions, put_extension};
pub(crate) use run_command::run_command;

use super::blob::{BlobKind, Storage};
use super::lro::{Hook, Outcome, Poll};
use super::resource::{
    check_scope, current_url, expands, lookup_vm, nic_id, operation_not_found, rg_prefix, vm_id,
    vms_in_scope, Answer, Ctx, Page, Plan,
};
use super::route::VmAction;
use super::world::{AgentState, Allocation, ListedInstanceView, Os, PowerState, Vm, World};
use super::{now_rfc3339, rfc3339, stable_uuid, Reply};
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------------------------
// Virtual machines

pub(crate) fn list_vms(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let vms = vms_in_scope(ctx.world, sub, rg);
    let page = Page::of(ctx, vms.len(), "2024-07-01")?;
    let expand = expands(ctx.query, "instanceView");
    let answer = ctx.world.vm_list_instance_view;
    if expand && answer == ListedInstanceView::Refused && ctx.query.get("$filter").is_none() {
        return Err(Reply::arm_error(
            400,
            "InvalidParameter",
            "The value 'instanceView' of parameter '$expand' can only be specified together with a valid $filter (virtualMachineScaleSet/id eq ...).",
        ));
    }
    let value = vms[page.items.clone()]
        .iter()
        .map(|vm| {
            let mut json = vm_json(vm, expand);
            if answer == ListedInstanceView::StatusOnly {
                if let Some(view) = json["properties"]["instanceView"].as_object_mut() {
                    for guest in ["vmAgent", "computerName", "osName", "osVersion"] {
                        view.remove(guest);
                    }
                }
            }
            json
        })
        .collect();
    Ok(page.reply(value))
}

/// `provisioningState` of the model: the first segment, capitalised ("failed/X" -> "Failed").
fn model_provisioning_state(state: &str) -> String {
    capitalise(state.split('/').next().unwrap_or(state))
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn os_disk_name(vm: &Vm) -> String {
    format!(
        "{}_OsDisk_1_{}",
        vm.name,
        stable_uuid(&vm_id(vm)).replace('-', "")
    )
}

pub(crate) fn vm_json(vm: &Vm, with_instance_view: bool) -> Value {
    let (image, os_config) = match vm.os {
        Os::Windows => (
            json!({"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer", "sku": "2022-datacenter-azure-edition", "version": "latest"}),
            json!({"windowsConfiguration": {"provisionVMAgent": true, "enableAutomaticUpdates": true}}),
        ),
        Os::Linux => (
            json!({"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}),
            json!({"linuxConfiguration": {"disablePasswordAuthentication": true, "provisionVMAgent": true}}),
        ),
    };
    let disk = os_disk_name(vm);
    let mut os_profile = json!({
        "computerName": vm.name,
        "adminUsername": "azureadmin",
        "secrets": [],
    });
    if let (Some(profile), Value::Object(config)) = (os_profile.as_object_mut(), os_config) {
        profile.extend(config);
    }
    let mut properties = json!({
        "vmId": stable_uuid(&vm_id(vm)),
        "hardwareProfile": {"vmSize": vm.vm_size},
        "storageProfile": {
            "imageReference": image,
            "osDisk": {
                "osType": match vm.os { Os::Windows => "Windows", Os::Linux => "Linux" },
                "name": disk,
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {
                    "storageAccountType": "Premium_LRS",
                    "id": format!("{}/providers/Microsoft.Compute/disks/{disk}", rg_prefix(&vm.subscription, &vm.resource_group)),
                },
                "diskSizeGB": match vm.os { Os::Windows => 127, Os::Linux => 30 },
            },
            "dataDisks": [],
        },
        "osProfile": os_profile,
        "networkProfile": {
            "networkInterfaces": [{"id": nic_id(vm), "properties": {"primary": true}}],
        },
        "diagnosticsProfile": {"bootDiagnostics": boot_diagnostics_json(vm)},
        "provisioningState": model_provisioning_state(&vm.provisioning_state),
        "timeCreated": "2024-03-11T09:21:44.5046412+00:00",
    });
    if with_instance_view {
        properties["instanceView"] = instance_view_json(vm);
    }
    json!({
        "name": vm.name,
        "id": vm_id(vm),
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": {},
        "properties": properties,
    })
}

/// `diagnosticsProfile.bootDiagnostics`: `storageUri` only for a customer's storage account.
fn boot_diagnostics_json(vm: &Vm) -> Value {
    let mut boot = json!({"enabled": vm.boot_diagnostics});
    if let Some(uri) = Storage::of(vm).storage_uri() {
        boot["storageUri"] = json!(uri);
    }
    boot
}

/// The instance view's `bootDiagnostics`: the blobs' plain (unsigned) URIs in a customer's
/// account, named as Azure names them; nothing for managed storage.
fn boot_diagnostics_instance_view(vm: &Vm) -> Option<Value> {
    let uri = Storage::of(vm)
        .storage_uri()
        .filter(|_| vm.boot_diagnostics)?;
    let vm_id = stable_uuid(&vm_id(vm));
    let short: String = vm
        .name
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(9)
        .collect();
    let container = format!("{uri}bootdiagnostics-{short}-{vm_id}");
    Some(json!({
        "consoleScreenshotBlobUri": format!("{container}/{}.{vm_id}{}", vm.name, BlobKind::Screenshot.suffix()),
        "serialConsoleLogBlobUri": format!("{container}/{}.{vm_id}{}", vm.name, BlobKind::SerialLog.suffix()),
    }))
}

/// The agent as the instance view shows it: the configured state only while the VM runs.
pub(crate) fn effective_agent(vm: &Vm) -> (AgentState, String) {
    let configured = vm
        .agent_message
        .clone()
        .unwrap_or_else(|| "VM status blob not found.".to_owned());
    match vm.power_state {
        // Back from a start, restart or redeploy: the agent has not reported yet.
        PowerState::Running if vm.agent == AgentState::Ready && vm.settling() => {
            (AgentState::NotReady, "VM status blob not found.".to_owned())
        }
        PowerState::Running => (vm.agent, configured),
        PowerState::Starting => (AgentState::NotReady, "VM status blob not found.".to_owned()),
        PowerState::Deallocated | PowerState::Deallocating => (AgentState::Missing, String::new()),
        PowerState::Stopped | PowerState::Stopping | PowerState::Unknown | PowerState::Absent => {
            (AgentState::NotReady, "VM Agent is unresponsive.".to_owned())
        }
    }
}

fn provisioning_status(vm: &Vm, time: &str) -> Value {
    let state = &vm.provisioning_state;
    let (first, detail) = match state.split_once('/') {
        Some((first, detail)) => (first.to_ascii_lowercase(), Some(detail)),
        None => (state.to_ascii_lowercase(), None),
    };
    let code = match detail {
        Some(detail) => format!("ProvisioningState/{first}/{detail}"),
        None => format!("ProvisioningState/{first}"),
    };
    let failed = first == "failed";
    let display = match first.as_str() {
        "succeeded" => "Provisioning succeeded".to_owned(),
        "failed" => "Provisioning failed".to_owned(),
        other => capitalise(other),
    };
    let mut status = json!({
        "code": code,
        "level": if failed { "Error" } else { "Info" },
        "displayStatus": display,
        "time": time,
    });
    if let (true, Some(detail)) = (failed, detail) {
        status["message"] = json!(format!(
            "The operation failed with error code '{detail}'. Redeploy or restart the VM, or contact support if the problem persists."
        ));
    }
    status
}

fn power_status(state: PowerState) -> Option<Value> {
    let display = match state {
        PowerState::Absent => return None,
        PowerState::Unknown => "VM status unknown".to_owned(),
        other => format!("VM {}", other.as_str()),
    };
    Some(json!({
        "code": format!("PowerState/{}", state.as_str()),
        "level": "Info",
        "displayStatus": display,
    }))
}

pub(crate) fn instance_view_json(vm: &Vm) -> Value {
    let now = now_rfc3339();
    let mut statuses = vec![provisioning_status(vm, &now)];
    statuses.extend(power_status(vm.power_state));
    let mut view = Map::new();
    let (agent, message) = effective_agent(vm);
    match agent {
        AgentState::Ready => {
            let (os_name, os_version) = match vm.os {
                Os::Windows => (
                    "Windows Server 2022 Datacenter",
                    "Microsoft Windows NT 10.0.20348.0",
                ),
                Os::Linux => ("ubuntu", "22.04"),
            };
            view.insert("computerName".into(), json!(vm.name));
            view.insert("osName".into(), json!(os_name));
            view.insert("osVersion".into(), json!(os_version));
            view.insert(
                "vmAgent".into(),
                json!({
                    "vmAgentVersion": "2.7.41491.949",
                    "statuses": [{
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Ready",
                        "message": "GuestAgent is running and accepting new configurations.",
                        "time": now,
                    }],
                    "extensionHandlers": extensions::extension_handlers_json(vm),
                }),
            );
        }
        AgentState::NotReady => {
            view.insert(
                "vmAgent".into(),
                json!({
                    "vmAgentVersion": "Unknown",
                    "statuses": [{
                        "code": "ProvisioningState/Unavailable",
                        "level": "Warning",
                        "displayStatus": "Not Ready",
                        "message": message,
                        "time": now,
                    }],
                }),
            );
        }
        AgentState::Missing => {}
    }
    view.insert(
        "disks".into(),
        json!([{
            "name": os_disk_name(vm),
            "statuses": [{
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": now,
            }],
        }]),
    );
    let allocated = !matches!(
        vm.power_state,
        PowerState::Deallocated | PowerState::Deallocating
    );
    if allocated && !vm.extensions.is_empty() {
        let extensions: Vec<Value> = vm
            .extensions
            .iter()
            .map(extensions::extension_instance_view_json)
            .collect();
        view.insert("extensions".into(), json!(extensions));
    }
    if let Some(boot) = boot_diagnostics_instance_view(vm) {
        view.insert("bootDiagnostics".into(), boot);
    }
    view.insert("hyperVGeneration".into(), json!("V2"));
    view.insert("statuses".into(), json!(statuses));
    Value::Object(view)
}

pub(crate) fn boot_diagnostics(ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
    let vm = lookup_vm(ctx.world, sub, rg, name)?;
    let minutes = match ctx.query.get("sasUriExpirationTimeInMinutes") {
        None => 120,
        Some(text) => match text.parse::<i64>() {
            Ok(m) if (1..=1440).contains(&m) => m,
            _ => {
                return Err(Reply::arm_error(
                    400,
                    "InvalidParameter",
                    "The value of parameter sasUriExpirationTimeInMinutes is invalid. It must be between 1 and 1440.",
                ))
            }
        },
    };
    if !vm.boot_diagnostics {
        return Err(Reply::arm_error(
            409,
            "OperationNotAllowed",
            &format!(
                "Boot diagnostics is not enabled for this virtual machine '{}'. Enable boot diagnostics (diagnosticsProfile.bootDiagnostics.enabled) and try again.",
                vm.name
            ),
        ));
    }
    let expiry = rfc3339(OffsetDateTime::now_utc() + Duration::minutes(minutes));
    let url = |kind: BlobKind| {
        let path = format!(
            "/_blob/{}/{}/{}/{}{}",
            Storage::of(vm).account(),
            vm.subscription,
            vm.resource_group,
            vm.name,
            kind.suffix()
        );
        let sig = ctx.signer.sign(&path, &expiry);
        format!(
            "{}{path}?sv=2024-08-04&se={expiry}&sr=b&sp=r&sig={sig}",
            ctx.base
        )
    };
    Ok(Reply::json(
        200,
        &json!({
            "consoleScreenshotBlobUri": url(BlobKind::Screenshot),
            "serialConsoleLogBlobUri": url(BlobKind::SerialLog),
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Power actions

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
// Operations

/// `GET .../Microsoft.Compute/locations/{loc}/operations/{id}`: the `Azure-AsyncOperation` status,
/// or with `monitor=true` the `Location` form (202 while running, then 200).
pub(crate) fn compute_operation(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    let monitor = ctx
        .query
        .get("monitor")
        .is_some_and(|m| m.eq_ignore_ascii_case("true"));
    if monitor {
        return match ctx.lro.poll(sub, id, ctx.world) {
            None => Err(operation_not_found(id)),
            Some(Poll::InProgress { .. }) => Ok(Reply::empty(202)
                .header("Location", format!("{}{}", ctx.base, current_url(ctx)))
                .header("Retry-After", ctx.retry_after.to_string())),
            Some(Poll::Done { outcome, .. }) => match outcome {
                Outcome::Body(body) => Ok(Reply::json(200, &body)),
                Outcome::Succeeded => Ok(Reply::empty(200)),
                Outcome::Failed { code, message } => Err(Reply::arm_error(400, &code, &message)),
            },
        };
    }
    match ctx.lro.poll(sub, id, ctx.world) {
        None => Err(operation_not_found(id)),
        Some(Poll::InProgress { started }) => Ok(Reply::json(
            200,
            &json!({"startTime": rfc3339(started), "status": "InProgress", "name": id}),
        )
        .header("Retry-After", ctx.retry_after.to_string())),
        Some(Poll::Done {
            started,
            ended,
            outcome,
        }) => {
            let mut body = json!({
                "startTime": rfc3339(started),
                "endTime": rfc3339(ended),
                "status": "Succeeded",
                "name": id,
            });
            match outcome {
                Outcome::Succeeded => {}
                Outcome::Body(output) => body["properties"] = json!({"output": output}),
                Outcome::Failed { code, message } => {
                    body["status"] = json!("Failed");
                    body["error"] = json!({"code": code, "message": message});
                }
            }
            Ok(Reply::json(200, &body))
        }
    }
}

/// Where an operation's status can be polled, for write operations that use
/// `Azure-AsyncOperation` (restart, start, redeploy, extensions).
pub(crate) fn compute_operation_url(base: &str, sub: &str, location: &str, id: &str) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/{id}?api-version=2024-07-01"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_view_follows_power_state() {
        let world = World::new()
            .vm("a")
            .deallocated()
            .vm("b")
            .agent_not_ready("VM Agent is unresponsive.");
        let off = instance_view_json(&world.vms[0]);
        assert!(off.get("vmAgent").is_none());
        assert_eq!(off["statuses"][1]["code"], "PowerState/deallocated");
        let sick = instance_view_json(&world.vms[1]);
        assert_eq!(sick["vmAgent"]["statuses"][0]["displayStatus"], "Not Ready");
        assert!(sick.get("osName").is_none());
    }

    #[test]
    fn fresh_addresses_avoid_those_in_use() {
        let mut world = World::new().vm("a").vm("b");
        if let Some(ip) = world.vms[0].public_ip.as_mut() {
            ip.address = Some("20.5.0.4".to_owned());
        }
        assert_eq!(unused_public_address(&world), "20.5.0.5");
    }
}
