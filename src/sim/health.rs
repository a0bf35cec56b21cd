//! Microsoft.ResourceHealth: a VM's current availability status and the lists of them.

use super::resource::{check_scope, expands, lookup_vm, vm_id, vms_in_scope, Answer, Ctx, Page};
use super::world::{Health, RecommendedAction, Vm, World};
use super::{rfc3339, Reply};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

/// Resource Health answers 409 with its own flat error body when the subscription has not
/// registered `Microsoft.ResourceHealth`.
fn check_health_registered(world: &World, sub: &str) -> Result<(), Reply> {
    let registered = world
        .subscription_entry(sub)
        .is_some_and(|s| s.resource_health_registered);
    if registered {
        return Ok(());
    }
    // Resource Health's own error shape is flat, unlike the rest of ARM.
    Err(Reply::json(
        409,
        &json!({
            "code": "MissingSubscriptionRegistration",
            "message": format!("The subscription '{sub}' is not registered to use namespace 'Microsoft.ResourceHealth'. See https://aka.ms/rps-not-found for how to register subscriptions."),
            "details": null,
        }),
    ))
}

/// `GET {vmId}/providers/Microsoft.ResourceHealth/availabilityStatuses/current`.
pub(crate) fn resource_health(ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    check_health_registered(ctx.world, sub)?;
    let vm = lookup_vm(ctx.world, sub, rg, name)?;
    let expand = expands(ctx.query, "recommendedactions");
    Ok(Reply::json(
        200,
        &availability_status_json(vm, expand, OffsetDateTime::now_utc()),
    ))
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.ResourceHealth/availabilityStatuses`:
/// the current status of every VM in scope (the only resources the world has), paged.
pub(crate) fn list_health(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, None)?;
    check_health_registered(ctx.world, sub)?;
    check_scope(ctx.world, sub, rg)?;
    let vms = vms_in_scope(ctx.world, sub, rg);
    let expand = expands(ctx.query, "recommendedactions");
    let now = OffsetDateTime::now_utc();
    let mut statuses: Vec<Value> = vms
        .iter()
        .map(|vm| availability_status_json(vm, expand, now))
        .collect();
    // The other resources of each group with a VM (disks here) are listed too.
    let mut groups: Vec<&str> = vms.iter().map(|vm| vm.resource_group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        for i in 0..ctx.world.other_resources_per_group {
            let id = format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute/disks/{group}-disk-{i}");
            statuses.push(json!({
                "id": format!("{id}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"),
                "name": "current",
                "type": "Microsoft.ResourceHealth/AvailabilityStatuses",
                "properties": {"availabilityState": "Available", "reportedTime": rfc3339(now)},
            }));
        }
    }
    let page = Page::of(ctx, statuses.len(), "2024-02-01")?;
    let value = statuses[page.items.clone()].to_vec();
    Ok(page.reply(value))
}

/// What Resource Health shows while a VM settles after a restart, start or redeploy someone
/// asked for (the `VirtualMachineRestarted` annotation: customer initiated).
fn restart_health() -> Health {
    Health {
        state: "Unavailable".to_owned(),
        summary: Some("Your virtual machine is unavailable: it is rebooting as requested by an authorized user or process.".to_owned()),
        reason_type: Some("Customer Initiated".to_owned()),
        reason_chronicity: Some("Transient".to_owned()),
        detailed_status: None,
        occurred: None,
        recommended_actions: Vec::new(),
    }
}

/// A VM's current availability status; `recommendedActions` only with `expand_actions`.
fn availability_status_json(vm: &Vm, expand_actions: bool, now: OffsetDateTime) -> Value {
    let restarting = restart_health();
    // Resource Health lags behind a restart: it still shows the reboot while the VM settles.
    let health = if vm.settling() && vm.health.state.eq_ignore_ascii_case("available") {
        &restarting
    } else {
        &vm.health
    };
    let summary = health.summary.clone().unwrap_or_else(|| {
        match health.state.to_ascii_lowercase().as_str() {
            "available" => "There aren't any known Azure platform problems affecting this virtual machine.",
            "unavailable" => "We're sorry, your virtual machine isn't available because an unexpected problem occurred.",
            "degraded" => "We're sorry, your virtual machine is degraded.",
            _ => "We are currently unable to determine the health of this virtual machine.",
        }
        .to_owned()
    });
    let mut properties = json!({
        "availabilityState": health.state,
        "title": health.state,
        "summary": summary,
        "occuredTime": health.occurred.clone().unwrap_or_else(|| rfc3339(now - Duration::hours(1))),
        "reportedTime": rfc3339(now),
    });
    for (key, value) in [
        ("reasonType", &health.reason_type),
        ("reasonChronicity", &health.reason_chronicity),
        ("detailedStatus", &health.detailed_status),
    ] {
        if let Some(value) = value {
            properties[key] = json!(value);
        }
    }
    if expand_actions && !health.recommended_actions.is_empty() {
        let actions: Vec<Value> = health
            .recommended_actions
            .iter()
            .map(|a| match a {
                RecommendedAction::Text(action) => json!({
                    "action": action,
                    "actionUrl": "<#ResourceBlade>",
                    "actionUrlText": "resource blade",
                }),
                RecommendedAction::Link {
                    action,
                    url,
                    url_text,
                } => json!({"action": action, "actionUrl": url, "actionUrlText": url_text}),
            })
            .collect();
        properties["recommendedActions"] = json!(actions);
    }
    json!({
        "id": format!("{}/providers/Microsoft.ResourceHealth/availabilityStatuses/current", vm_id(vm)),
        "name": "current",
        "type": "Microsoft.ResourceHealth/AvailabilityStatuses",
        "location": vm.location,
        "properties": properties,
    })
}
