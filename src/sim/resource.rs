//! What every resource provider's handlers share: the request context ([`Ctx`]), resource ids,
//! lookups with ARM's errors, paged lists, and accepting a write as a long-running operation
//! (`lro.rs`).

use super::blob::Signer;
use super::lro::{Hook, NewOperation, Outcome, Registry};
use super::route::Query;
use super::world::{Nsg, Vm, World};
use super::{FailOperation, Reply};
use serde_json::{json, Value};
use std::ops::Range;

// ---------------------------------------------------------------------------------------------
// The request

/// What a route handler may use.
pub(crate) struct Ctx<'a> {
    pub world: &'a mut World,
    /// The simulator's own URL, e.g. "http://127.0.0.1:1234".
    pub base: &'a str,
    pub lro: &'a Registry,
    pub signer: &'a Signer,
    pub lro_polls: u32,
    pub retry_after: u64,
    /// How long effective security rules take to compute.
    pub effective_nsg_time: std::time::Duration,
    pub query: &'a Query,
    pub method: &'a str,
    pub path: &'a str,
    /// The request body (empty for GET).
    pub body: &'a [u8],
    /// Writes that are accepted but end Failed (`SimOptions::fail_operations`).
    pub fail_operations: &'a [FailOperation],
    /// How long a VM a power action brought back takes to settle (`SimOptions::settle`).
    pub settle: std::time::Duration,
    /// How long a Run Command takes (`SimOptions::run_command_delay`).
    pub run_command_delay: std::time::Duration,
    /// The client id the request's token was issued to, if Entra knows one.
    pub client_id: Option<&'a str>,
    /// The Activity Log.
    pub activity: &'a super::activity::Log,
}

pub(crate) type Answer = Result<Reply, Reply>;

/// The request's path and query as received (re-encoded), e.g. for a `Location` pointing back at it.
pub(crate) fn current_url(ctx: &Ctx<'_>) -> String {
    let query: Vec<String> = ctx
        .query
        .0
        .iter()
        .map(|(k, v)| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish()
        })
        .collect();
    if query.is_empty() {
        ctx.path.to_owned()
    } else {
        format!("{}?{}", ctx.path, query.join("&"))
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and lookups

pub(crate) fn rg_prefix(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

pub(crate) fn vm_id(vm: &Vm) -> String {
    vm.id()
}

pub(crate) fn nic_id(vm: &Vm) -> String {
    format!(
        "{}/providers/Microsoft.Network/networkInterfaces/{}",
        rg_prefix(&vm.subscription, &vm.resource_group),
        vm.nic_name()
    )
}

pub(crate) fn ipconfig_id(vm: &Vm) -> String {
    format!("{}/ipConfigurations/ipconfig1", nic_id(vm))
}

pub(crate) fn public_ip_id(vm: &Vm, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/publicIPAddresses/{name}",
        rg_prefix(&vm.subscription, &vm.resource_group)
    )
}

pub(crate) fn subnet_id(vm: &Vm) -> String {
    format!(
        "{}/providers/Microsoft.Network/virtualNetworks/{}/subnets/{}",
        rg_prefix(&vm.subscription, &vm.resource_group),
        vm.vnet_name(),
        vm.subnet
    )
}

pub(crate) fn nsg_id(nsg: &Nsg) -> String {
    format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/{}",
        rg_prefix(&nsg.subscription, &nsg.resource_group),
        nsg.name
    )
}

pub(crate) fn not_found(kind: &str, name: &str, rg: &str) -> Reply {
    Reply::arm_error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

/// Subscription and resource group exist, or the error ARM gives.
pub(crate) fn check_scope(world: &World, sub: &str, rg: Option<&str>) -> Result<(), Reply> {
    if world.subscription_entry(sub).is_none() {
        return Err(Reply::arm_error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        ));
    }
    match rg {
        Some(rg) if !world.has_resource_group(sub, rg) => Err(Reply::arm_error(
            404,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn lookup_vm<'w>(
    world: &'w World,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<&'w Vm, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .find_vm(sub, rg, name)
        .ok_or_else(|| not_found("Microsoft.Compute/virtualMachines", name, rg))
}

pub(crate) fn lookup_nic<'w>(
    world: &'w World,
    sub: &str,
    rg: &str,
    nic: &str,
) -> Result<&'w Vm, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .vms
        .iter()
        .find(|v| v.is_in(sub, rg) && v.nic_name().eq_ignore_ascii_case(nic))
        .ok_or_else(|| not_found("Microsoft.Network/networkInterfaces", nic, rg))
}

// ---------------------------------------------------------------------------------------------
// Lists

/// The VMs of a subscription, or of one of its resource groups, in the order they were added.
pub(crate) fn vms_in_scope<'w>(world: &'w World, sub: &str, rg: Option<&str>) -> Vec<&'w Vm> {
    world
        .vms
        .iter()
        .filter(|v| {
            v.subscription.eq_ignore_ascii_case(sub)
                && rg.is_none_or(|rg| v.resource_group.eq_ignore_ascii_case(rg))
        })
        .collect()
}

/// Whether `$expand` (a comma-separated list) names `what`, case-insensitively.
pub(crate) fn expands(query: &Query, what: &str) -> bool {
    query.get("$expand").is_some_and(|expand| {
        expand
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(what))
    })
}

/// One page of a list: which of its items this answer holds, and the link to the next page.
pub(crate) struct Page {
    pub(crate) items: Range<usize>,
    next_link: Option<String>,
}

impl Page {
    /// The page of `total` items that `$skiptoken` asks for, `World::page_size` at a time. The
    /// `nextLink` repeats the request's path, api-version (`api_version` if it had none) and
    /// `$expand`: clients follow it as it is, without adding their own parameters again.
    pub(crate) fn of(ctx: &Ctx<'_>, total: usize, api_version: &str) -> Result<Page, Reply> {
        let skip = match ctx.query.get("$skiptoken") {
            None => 0,
            Some(token) => token.parse::<usize>().map_err(|_| {
                Reply::arm_error(
                    400,
                    "InvalidSkipToken",
                    &format!("The skip token '{token}' is not valid."),
                )
            })?,
        };
        let start = skip.min(total);
        let end = skip.saturating_add(ctx.world.page_size.max(1)).min(total);
        let next_link = (end < total).then(|| {
            let version = ctx.query.get("api-version").unwrap_or(api_version);
            let mut link = format!("{}{}?api-version={}", ctx.base, ctx.path, encode(version));
            if let Some(expand) = ctx.query.get("$expand") {
                link.push_str(&format!("&$expand={}", encode(expand)));
            }
            link.push_str(&format!("&$skiptoken={end}"));
            link
        });
        Ok(Page {
            items: start..end,
            next_link,
        })
    }

    /// `{"value": [...], "nextLink"?}`.
    pub(crate) fn reply(self, value: Vec<Value>) -> Reply {
        let mut body = json!({ "value": value });
        if let Some(link) = self.next_link {
            body["nextLink"] = json!(link);
        }
        Reply::json(200, &body)
    }
}

/// A query value as it goes into a URL.
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Accepting a write

/// How an accepted write changes the world: now, at each poll, and when it finishes.
pub(crate) struct Plan {
    pub(crate) now: Vec<Hook>,
    pub(crate) steps: Vec<Hook>,
    pub(crate) on_complete: Option<Hook>,
    pub(crate) outcome: Outcome,
    /// How a GET shows the resource while the operation runs (see `lro::NewOperation`).
    pub(crate) pending_view: Option<Value>,
    /// It answers "in progress" for at least this long (see `lro::NewOperation::ready_at`).
    pub(crate) takes: Option<std::time::Duration>,
}

impl Plan {
    pub(crate) fn new(outcome: Outcome) -> Plan {
        Plan {
            now: Vec::new(),
            steps: Vec::new(),
            on_complete: None,
            outcome,
            pending_view: None,
            takes: None,
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
    pub(crate) fn accept(
        &mut self,
        sub: &str,
        name: &str,
        resource: Option<String>,
        plan: Plan,
    ) -> String {
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
            ready_at: plan.takes.map(|t| std::time::Instant::now() + t),
        })
    }
}

/// The request body as JSON, or ARM's 400. The error names only the position, never content.
pub(crate) fn json_body(ctx: &Ctx<'_>) -> Result<Value, Reply> {
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

pub(crate) fn missing(parameter: &str) -> Reply {
    Reply::arm_error(
        400,
        "InvalidParameter",
        &format!("Required parameter '{parameter}' is missing (null)."),
    )
}

pub(crate) fn operation_not_found(id: &str) -> Reply {
    Reply::arm_error(
        404,
        "OperationNotFound",
        &format!("The operation '{id}' was not found."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_matches_one_item_of_a_comma_separated_list() {
        let query = Query::parse(Some("api-version=1&%24expand=foo,%20InstanceView"));
        assert!(expands(&query, "instanceView"));
        assert!(!expands(&query, "instance"));
        assert!(!expands(&Query::parse(None), "instanceView"));
    }
}
