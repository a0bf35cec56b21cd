//! Microsoft.Resources and Microsoft.Authorization: the resource groups the caller may see and
//! the Permissions API.

use super::rbac;
use super::resource::{check_scope, rg_prefix, Answer, Ctx, Page};
use super::Reply;
use serde_json::{json, Value};

/// The subscription's resource groups the caller may read, as `ResourceGroups_List` answers
/// (`ResourceGroups_List.json` in the resources spec, 2021-04-01): ARM filters the list by the
/// caller's role assignments instead of refusing it.
pub(crate) fn list_resource_groups(ctx: &Ctx<'_>, sub: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    let caller = rbac::Caller::of(ctx.world, ctx.client_id);
    let mut groups: Vec<(String, String)> = Vec::new();
    let located = ctx
        .world
        .vms
        .iter()
        .map(|v| (&v.subscription, &v.resource_group, &v.location))
        .chain(
            ctx.world
                .nsgs
                .iter()
                .map(|n| (&n.subscription, &n.resource_group, &n.location)),
        )
        .chain(
            ctx.world
                .bastions
                .iter()
                .map(|b| (&b.subscription, &b.resource_group, &b.location)),
        );
    for (vm_sub, rg, location) in located {
        if vm_sub.eq_ignore_ascii_case(sub)
            && !groups.iter().any(|(g, _)| g.eq_ignore_ascii_case(rg))
        {
            groups.push((rg.clone(), location.clone()));
        }
    }
    groups.retain(|(rg, _)| caller.allows(rbac::READ_GROUPS, &rg_prefix(sub, rg)));
    groups.sort_by_key(|(rg, _)| rg.to_ascii_lowercase());
    let page = Page::of(ctx, groups.len(), "2021-04-01")?;
    let value = groups[page.items.clone()]
        .iter()
        .map(|(rg, location)| {
            json!({
                "id": rg_prefix(sub, rg),
                "name": rg,
                "type": "Microsoft.Resources/resourceGroups",
                "location": location,
                "properties": { "provisioningState": "Succeeded" },
            })
        })
        .collect();
    Ok(page.reply(value))
}

/// The caller's permissions in a resource group: one entry per role assignment at the group or
/// above it, as `Permissions_ListForResourceGroup` answers (authorization spec 2022-04-01,
/// `GetPermissions.json`: `{"value": [{"actions", "notActions", "dataActions",
/// "notDataActions"}]}`).
pub(crate) fn list_permissions(ctx: &Ctx<'_>, sub: &str, rg: &str) -> Answer {
    check_scope(ctx.world, sub, Some(rg))?;
    let caller = rbac::Caller::of(ctx.world, ctx.client_id);
    let value: Vec<Value> = caller
        .actions_at(&rg_prefix(sub, rg))
        .into_iter()
        .map(|actions| {
            json!({
                "actions": actions,
                "notActions": [],
                "dataActions": [],
                "notDataActions": [],
            })
        })
        .collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}
