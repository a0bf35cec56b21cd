//! Microsoft.Security: Defender for Cloud's just-in-time VM access, in the shapes of the
//! security REST spec 2020-01-01 (`jitNetworkAccessPolicies.json`):
//! `JitNetworkAccessPolicies_List` (`GET /subscriptions/{sub}/providers/Microsoft.Security/
//! jitNetworkAccessPolicies`, as `GetJitNetworkAccessPoliciesSubscription_example.json`) and
//! `JitNetworkAccessPolicies_Initiate` (`POST …/locations/{loc}/jitNetworkAccessPolicies/{name}/
//! initiate`, answered 202 with the request as `InitiateJitNetworkAccessPolicy_example.json`).
//! An initiate adds an allow rule for the requested source to the VM's NIC NSG ahead of
//! Defender's deny, and the rule leaves when the request ends (`World::expire_jit`; Microsoft
//! Learn, "Enable just-in-time access on VMs"). The 400s' codes and messages are ours: no
//! recorded refusal was found.

use super::resource::{check_scope, rg_prefix, vm_id, Answer, Ctx};
use super::world::{JitPolicy, JitRequest, Vm, World, JIT_RULE_PREFIX};
use super::Reply;
use serde_json::{json, Value};

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(super::rfc3339)
        .unwrap_or_default()
}

fn parse_utc(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn policy_id(policy: &JitPolicy) -> String {
    format!(
        "{}/providers/Microsoft.Security/locations/{}/jitNetworkAccessPolicies/{}",
        rg_prefix(&policy.subscription, &policy.resource_group),
        policy.location,
        policy.name
    )
}

fn policy_vms<'w>(world: &'w World, policy: &'w JitPolicy) -> impl Iterator<Item = &'w Vm> {
    world.vms.iter().filter(move |vm| {
        vm.subscription.eq_ignore_ascii_case(&policy.subscription)
            && vm
                .resource_group
                .eq_ignore_ascii_case(&policy.resource_group)
            && policy.vms.iter().any(|n| n.eq_ignore_ascii_case(&vm.name))
    })
}

fn request_json(world: &World, request: &JitRequest, status: &str) -> Value {
    let vm = world
        .vms
        .iter()
        .find(|v| v.is_in(&request.subscription, &request.resource_group) && v.name == request.vm);
    json!({
        "virtualMachines": [{
            "id": vm.map(vm_id).unwrap_or_default(),
            "ports": [{
                "number": request.port,
                "allowedSourceAddressPrefix": request.source,
                "endTimeUtc": utc(request.end),
                "status": status,
                "statusReason": "UserRequested",
            }],
        }],
        "startTimeUtc": utc(request.start),
        "requestor": request.requestor,
        "justification": request.justification,
    })
}

fn policy_json(world: &World, policy: &JitPolicy) -> Value {
    let vms: Vec<Value> = policy_vms(world, policy)
        .map(|vm| {
            let ports: Vec<Value> = policy
                .ports
                .iter()
                .map(|p| {
                    json!({
                        "number": p.number,
                        "protocol": "*",
                        "allowedSourceAddressPrefix": p.allowed_source,
                        "maxRequestAccessDuration": p.max_duration,
                    })
                })
                .collect();
            json!({"id": vm_id(vm), "ports": ports})
        })
        .collect();
    let requests: Vec<Value> = world
        .jit_requests
        .iter()
        .filter(|r| {
            r.policy == policy.name
                && r.subscription.eq_ignore_ascii_case(&policy.subscription)
                && r.resource_group
                    .eq_ignore_ascii_case(&policy.resource_group)
        })
        .map(|r| request_json(world, r, "Initiated"))
        .collect();
    json!({
        "kind": "Basic",
        "properties": {
            "virtualMachines": vms,
            "requests": requests,
            "provisioningState": "Succeeded",
        },
        "id": policy_id(policy),
        "name": policy.name,
        "type": "Microsoft.Security/locations/jitNetworkAccessPolicies",
        "location": policy.location,
    })
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Security/jitNetworkAccessPolicies`.
pub(crate) fn list_jit_policies(ctx: &mut Ctx<'_>, sub: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    let value: Vec<Value> = ctx
        .world
        .jit_policies
        .iter()
        .filter(|p| p.subscription.eq_ignore_ascii_case(sub))
        .map(|p| policy_json(ctx.world, p))
        .collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}

fn bad_request(message: &str) -> Reply {
    Reply::arm_error(400, "BadRequest", message)
}

/// `POST …/locations/{loc}/jitNetworkAccessPolicies/{name}/initiate`.
pub(crate) fn initiate(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    location: &str,
    name: &str,
) -> Answer {
    check_scope(ctx.world, sub, Some(rg))?;
    let Some(policy) = ctx
        .world
        .jit_policies
        .iter()
        .find(|p| {
            p.subscription.eq_ignore_ascii_case(sub)
                && p.resource_group.eq_ignore_ascii_case(rg)
                && p.location.eq_ignore_ascii_case(location)
                && p.name.eq_ignore_ascii_case(name)
        })
        .cloned()
    else {
        return Err(Reply::arm_error(
            404,
            "ResourceNotFound",
            &format!("Just-in-time network access policy '{name}' was not found."),
        ));
    };
    let body = super::resource::json_body(ctx)?;
    let requested = body["virtualMachines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let [vm_request] = requested.as_slice() else {
        return Err(bad_request(
            "Exactly one virtual machine must be requested.",
        ));
    };
    let vm_ref = vm_request["id"].as_str().unwrap_or_default();
    let Some(vm) = policy_vms(ctx.world, &policy)
        .find(|vm| vm_id(vm).eq_ignore_ascii_case(vm_ref))
        .cloned()
    else {
        return Err(bad_request(&format!(
            "Virtual machine '{vm_ref}' is not protected by just-in-time network access policy '{name}'."
        )));
    };
    let ports = vm_request["ports"].as_array().cloned().unwrap_or_default();
    let [port] = ports.as_slice() else {
        return Err(bad_request("Exactly one port must be requested."));
    };
    let number = port["number"].as_u64().unwrap_or(0);
    let Some(allowed) = policy.ports.iter().find(|p| u64::from(p.number) == number) else {
        return Err(bad_request(&format!(
            "Port {number} is not configured in just-in-time network access policy '{name}'."
        )));
    };
    let source = port["allowedSourceAddressPrefix"]
        .as_str()
        .unwrap_or_default();
    if source.is_empty() || source == "*" {
        return Err(bad_request(
            "allowedSourceAddressPrefix must name the requester's address.",
        ));
    }
    if allowed.allowed_source != "*" && !allowed.allowed_source.eq_ignore_ascii_case(source) {
        return Err(bad_request(&format!(
            "Source '{source}' is not allowed for port {number}: the policy allows '{}'.",
            allowed.allowed_source
        )));
    }
    let now = ctx.world.now_unix();
    let Some(end) = port["endTimeUtc"].as_str().and_then(parse_utc) else {
        return Err(bad_request("endTimeUtc must be a UTC date and time."));
    };
    let max_hours = super::world::jit_duration_hours(&allowed.max_duration).unwrap_or(3);
    if end <= now || end > now + i64::from(max_hours) * 3600 + 60 {
        return Err(bad_request(&format!(
            "endTimeUtc must be within the policy's maximum request access duration, {}.",
            allowed.max_duration
        )));
    }
    let requestor = ctx.client_id.unwrap_or("unknown").to_owned();
    // The allow rule ahead of the deny; a new request for the same source replaces the old.
    let nsg_name = vm.nic_nsg.clone().unwrap_or_default();
    let existing = ctx
        .world
        .jit_requests
        .iter()
        .position(|r| r.vm == vm.name && r.source == source && u64::from(r.port) == number);
    let rule_name = match existing {
        Some(i) => ctx.world.jit_requests.remove(i).rule,
        None => format!(
            "{JIT_RULE_PREFIX}_{}",
            super::stable_uuid(&format!("{}/{source}/{now}", vm_id(&vm)))
                .replace('-', "")
                .to_ascii_uppercase()
        ),
    };
    let taken: Vec<u32> = ctx
        .world
        .vm_nsg(&vm, &nsg_name)
        .map(|n| n.rules.iter().map(|r| r.priority).collect())
        .unwrap_or_default();
    let priority = (super::world::JIT_ALLOW_PRIORITY..super::world::JIT_DENY_PRIORITY)
        .find(|p| !taken.contains(p))
        .unwrap_or(super::world::JIT_ALLOW_PRIORITY);
    if let Some(nsg) = ctx
        .world
        .vm_nsg_mut(&vm.subscription, &vm.resource_group, &nsg_name)
    {
        nsg.rules.retain(|r| r.name != rule_name);
        let mut rule = super::world::Rule::inbound_tcp(
            &rule_name,
            priority,
            "Allow",
            source,
            &number.to_string(),
        );
        rule.protocol = "*".to_owned();
        rule.destination = Some(vm.private_ip.clone());
        nsg.rules.push(rule);
    }
    let request = JitRequest {
        policy: policy.name.clone(),
        subscription: policy.subscription.clone(),
        resource_group: policy.resource_group.clone(),
        vm: vm.name.clone(),
        port: number as u16,
        source: source.to_owned(),
        requestor,
        justification: body["justification"].as_str().map(str::to_owned),
        start: now,
        end,
        rule: rule_name,
    };
    let answer = request_json(ctx.world, &request, "Initiating");
    ctx.world.jit_requests.push(request);
    Ok(Reply::json(202, &answer))
}
