//! ARM routes and JSON: turns a request path into a [`Route`] and the world into the shapes of
//! Microsoft's published examples (`tests/fixtures/arm-examples`).
//!
//! Authentication, throttling, faults and statistics happen before this module is called; it
//! only answers for the world.

use super::blob::{BlobKind, Signer, Storage};
use super::lro::{Outcome, Poll, Registry};
use super::world::{
    AgentState, Allocation, Health, ListedInstanceView, Nsg, Os, PowerState, PublicIp,
    RecommendedAction, Rule, Sku, Vm, World,
};
use super::{now_rfc3339, rfc3339, stable_uuid, FailOperation, Reply};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use time::{Duration, OffsetDateTime};

/// Query parameters, looked up case-insensitively like ARM does.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An ARM operation the simulator serves, with the path parameters it names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Route {
    ListVms {
        sub: String,
        rg: Option<String>,
    },
    GetVm {
        sub: String,
        rg: String,
        vm: String,
    },
    VmInstanceView {
        sub: String,
        rg: String,
        vm: String,
    },
    BootDiagnostics {
        sub: String,
        rg: String,
        vm: String,
    },
    ResourceHealth {
        sub: String,
        rg: String,
        vm: String,
    },
    ListHealth {
        sub: String,
        rg: Option<String>,
    },
    ListNics {
        sub: String,
        rg: Option<String>,
    },
    GetNic {
        sub: String,
        rg: String,
        nic: String,
    },
    EffectiveNsgs {
        sub: String,
        rg: String,
        nic: String,
    },
    ListPublicIps {
        sub: String,
        rg: Option<String>,
    },
    GetPublicIp {
        sub: String,
        rg: String,
        name: String,
    },
    GetSubnet {
        sub: String,
        rg: String,
        vnet: String,
        subnet: String,
    },
    GetNsg {
        sub: String,
        rg: String,
        name: String,
    },
    NetworkOperationResult {
        sub: String,
        id: String,
    },
    ComputeOperation {
        sub: String,
        id: String,
    },
    VmAction {
        sub: String,
        rg: String,
        vm: String,
        action: VmAction,
    },
    ListExtensions {
        sub: String,
        rg: String,
        vm: String,
    },
    GetExtension {
        sub: String,
        rg: String,
        vm: String,
        name: String,
    },
    PutExtension {
        sub: String,
        rg: String,
        vm: String,
        name: String,
    },
    GetSecurityRule {
        sub: String,
        rg: String,
        nsg: String,
        name: String,
    },
    PutSecurityRule {
        sub: String,
        rg: String,
        nsg: String,
        name: String,
    },
    NetworkOperation {
        sub: String,
        id: String,
    },
    /// `GET /subscriptions/{sub}/resourcegroups` (`ResourceGroups_List`, resources spec
    /// 2021-04-01).
    ListResourceGroups {
        sub: String,
    },
    /// `GET /subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.Authorization/permissions`
    /// (`Permissions_ListForResourceGroup`, authorization spec 2022-04-01, `GetPermissions.json`).
    ListPermissions {
        sub: String,
        rg: String,
    },
    Unknown,
}

/// The power actions of `POST virtualMachines/{vm}/{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmAction {
    Start,
    Restart,
    Redeploy,
    Deallocate,
    PowerOff,
}

impl VmAction {
    fn parse(segment: &str) -> Option<VmAction> {
        match segment.to_ascii_lowercase().as_str() {
            "start" => Some(VmAction::Start),
            "restart" => Some(VmAction::Restart),
            "redeploy" => Some(VmAction::Redeploy),
            "deallocate" => Some(VmAction::Deallocate),
            "poweroff" => Some(VmAction::PowerOff),
            _ => None,
        }
    }

    /// The path segment as ARM spells it, e.g. "powerOff".
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Restart => "restart",
            VmAction::Redeploy => "redeploy",
            VmAction::Deallocate => "deallocate",
            VmAction::PowerOff => "powerOff",
        }
    }
}

impl Route {
    /// Parses a method and path. Empty segments are ignored, so `//subscriptions/...` (a
    /// resource id with its leading slash inserted after the host) still matches.
    pub(crate) fn parse(method: &str, path: &str) -> Route {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        let s = |i: usize| segs[i].to_owned();
        let get = method.eq_ignore_ascii_case("GET");
        let post = method.eq_ignore_ascii_case("POST");
        let put = method.eq_ignore_ascii_case("PUT");
        const SUB: &str = "subscriptions";
        const RGS: &str = "resourcegroups";
        const P: &str = "providers";
        const C: &str = "microsoft.compute";
        const N: &str = "microsoft.network";
        const VMS: &str = "virtualmachines";
        const NSGS: &str = "networksecuritygroups";
        const NICS: &str = "networkinterfaces";
        const PIPS: &str = "publicipaddresses";
        const RH: &str = "microsoft.resourcehealth";
        const STATUSES: &str = "availabilitystatuses";
        if let [SUB, _, RGS, _, P, C, VMS, _, action] = l.as_slice() {
            if let (true, Some(action)) = (post, VmAction::parse(action)) {
                return Route::VmAction {
                    sub: s(1),
                    rg: s(3),
                    vm: s(7),
                    action,
                };
            }
        }
        match l.as_slice() {
            [SUB, _, RGS] if get => Route::ListResourceGroups { sub: s(1) },
            [SUB, _, RGS, _, P, "microsoft.authorization", "permissions"] if get => {
                Route::ListPermissions {
                    sub: s(1),
                    rg: s(3),
                }
            }
            [SUB, _, RGS, _, P, C, VMS, _, "extensions"] if get => Route::ListExtensions {
                sub: s(1),
                rg: s(3),
                vm: s(7),
            },
            [SUB, _, RGS, _, P, C, VMS, _, "extensions", _] if get => Route::GetExtension {
                sub: s(1),
                rg: s(3),
                vm: s(7),
                name: s(9),
            },
            [SUB, _, RGS, _, P, C, VMS, _, "extensions", _] if put => Route::PutExtension {
                sub: s(1),
                rg: s(3),
                vm: s(7),
                name: s(9),
            },
            [SUB, _, RGS, _, P, N, NSGS, _, "securityrules", _] if get => Route::GetSecurityRule {
                sub: s(1),
                rg: s(3),
                nsg: s(7),
                name: s(9),
            },
            [SUB, _, RGS, _, P, N, NSGS, _, "securityrules", _] if put => Route::PutSecurityRule {
                sub: s(1),
                rg: s(3),
                nsg: s(7),
                name: s(9),
            },
            [SUB, _, P, N, "locations", _, "operations", _] if get => Route::NetworkOperation {
                sub: s(1),
                id: s(7),
            },
            [SUB, _, P, C, VMS] if get => Route::ListVms {
                sub: s(1),
                rg: None,
            },
            [SUB, _, RGS, _, P, C, VMS] if get => Route::ListVms {
                sub: s(1),
                rg: Some(s(3)),
            },
            [SUB, _, RGS, _, P, C, VMS, _] if get => Route::GetVm {
                sub: s(1),
                rg: s(3),
                vm: s(7),
            },
            [SUB, _, RGS, _, P, C, VMS, _, "instanceview"] if get => Route::VmInstanceView {
                sub: s(1),
                rg: s(3),
                vm: s(7),
            },
            [SUB, _, RGS, _, P, C, VMS, _, "retrievebootdiagnosticsdata"] if post => {
                Route::BootDiagnostics {
                    sub: s(1),
                    rg: s(3),
                    vm: s(7),
                }
            }
            [SUB, _, RGS, _, P, C, VMS, _, P, RH, STATUSES, "current"] if get => {
                Route::ResourceHealth {
                    sub: s(1),
                    rg: s(3),
                    vm: s(7),
                }
            }
            [SUB, _, P, RH, STATUSES] if get => Route::ListHealth {
                sub: s(1),
                rg: None,
            },
            [SUB, _, RGS, _, P, RH, STATUSES] if get => Route::ListHealth {
                sub: s(1),
                rg: Some(s(3)),
            },
            [SUB, _, P, N, NICS] if get => Route::ListNics {
                sub: s(1),
                rg: None,
            },
            [SUB, _, RGS, _, P, N, NICS] if get => Route::ListNics {
                sub: s(1),
                rg: Some(s(3)),
            },
            [SUB, _, P, N, PIPS] if get => Route::ListPublicIps {
                sub: s(1),
                rg: None,
            },
            [SUB, _, RGS, _, P, N, PIPS] if get => Route::ListPublicIps {
                sub: s(1),
                rg: Some(s(3)),
            },
            [SUB, _, RGS, _, P, N, NICS, _] if get => Route::GetNic {
                sub: s(1),
                rg: s(3),
                nic: s(7),
            },
            [SUB, _, RGS, _, P, N, NICS, _, "effectivenetworksecuritygroups"] if post => {
                Route::EffectiveNsgs {
                    sub: s(1),
                    rg: s(3),
                    nic: s(7),
                }
            }
            [SUB, _, RGS, _, P, N, PIPS, _] if get => Route::GetPublicIp {
                sub: s(1),
                rg: s(3),
                name: s(7),
            },
            [SUB, _, RGS, _, P, N, "virtualnetworks", _, "subnets", _] if get => Route::GetSubnet {
                sub: s(1),
                rg: s(3),
                vnet: s(7),
                subnet: s(9),
            },
            [SUB, _, RGS, _, P, N, "networksecuritygroups", _] if get => Route::GetNsg {
                sub: s(1),
                rg: s(3),
                name: s(7),
            },
            [SUB, _, P, N, "locations", _, "operationresults", _] if get => {
                Route::NetworkOperationResult {
                    sub: s(1),
                    id: s(7),
                }
            }
            [SUB, _, P, C, "locations", _, "operations", _] if get => Route::ComputeOperation {
                sub: s(1),
                id: s(7),
            },
            _ => Route::Unknown,
        }
    }

    /// The key in `SimStats::by_route`, e.g. "GET virtualMachines".
    pub(crate) fn key(&self, method: &str) -> String {
        let name = match self {
            Route::ListVms { .. } => "GET virtualMachines (list)",
            Route::GetVm { .. } => "GET virtualMachines",
            Route::VmInstanceView { .. } => "GET virtualMachines/instanceView",
            Route::BootDiagnostics { .. } => "POST virtualMachines/retrieveBootDiagnosticsData",
            Route::ResourceHealth { .. } => "GET availabilityStatuses/current",
            Route::ListHealth { .. } => "GET availabilityStatuses (list)",
            Route::ListNics { .. } => "GET networkInterfaces (list)",
            Route::ListPublicIps { .. } => "GET publicIPAddresses (list)",
            Route::GetNic { .. } => "GET networkInterfaces",
            Route::EffectiveNsgs { .. } => "POST networkInterfaces/effectiveNetworkSecurityGroups",
            Route::GetPublicIp { .. } => "GET publicIPAddresses",
            Route::GetSubnet { .. } => "GET virtualNetworks/subnets",
            Route::GetNsg { .. } => "GET networkSecurityGroups",
            Route::NetworkOperationResult { .. } => "GET Microsoft.Network/operationResults",
            Route::ComputeOperation { .. } => "GET Microsoft.Compute/operations",
            Route::VmAction { action, .. } => {
                return format!("POST virtualMachines/{}", action.as_str())
            }
            Route::ListExtensions { .. } => "GET virtualMachines/extensions (list)",
            Route::GetExtension { .. } => "GET virtualMachines/extensions",
            Route::PutExtension { .. } => "PUT virtualMachines/extensions",
            Route::GetSecurityRule { .. } => "GET networkSecurityGroups/securityRules",
            Route::PutSecurityRule { .. } => "PUT networkSecurityGroups/securityRules",
            Route::NetworkOperation { .. } => "GET Microsoft.Network/operations",
            Route::ListResourceGroups { .. } => "GET resourcegroups (list)",
            Route::ListPermissions { .. } => "GET Microsoft.Authorization/permissions",
            Route::Unknown => return format!("{} unknown", method.to_ascii_uppercase()),
        };
        name.to_owned()
    }

    /// Whether the route only reads (for `x-ms-ratelimit-remaining-subscription-reads`).
    /// The POSTs served so far are reads in ARM's accounting too (they change nothing).
    pub(crate) fn is_read(&self, method: &str) -> bool {
        method.eq_ignore_ascii_case("GET")
            || matches!(
                self,
                Route::EffectiveNsgs { .. } | Route::BootDiagnostics { .. }
            )
    }
}

/// What a route handler may use.
pub(crate) struct Ctx<'a> {
    pub world: &'a mut World,
    /// The simulator's own URL, e.g. "http://127.0.0.1:1234".
    pub base: &'a str,
    pub lro: &'a Registry,
    pub signer: &'a Signer,
    pub lro_polls: u32,
    pub retry_after: u64,
    pub query: &'a Query,
    pub method: &'a str,
    pub path: &'a str,
    /// The request body (empty for GET).
    pub body: &'a [u8],
    /// Writes that are accepted but end Failed (`SimOptions::fail_operations`).
    pub fail_operations: &'a [FailOperation],
    /// How long a VM a power action brought back takes to settle (`SimOptions::settle`).
    pub settle: std::time::Duration,
    /// The client id the request's token was issued to, if Entra knows one.
    pub client_id: Option<&'a str>,
}

/// Answers an authenticated, unthrottled ARM request.
pub(crate) fn handle(route: &Route, ctx: &mut Ctx<'_>) -> Reply {
    if ctx.method.eq_ignore_ascii_case("GET") {
        ctx.lro.advance_unwatched(ctx.path, ctx.world);
    }
    let result = match route {
        Route::ListVms { sub, rg } => list_vms(ctx, sub, rg.as_deref()),
        Route::GetVm { sub, rg, vm } => lookup_vm(ctx.world, sub, rg, vm)
            .map(|vm| Reply::json(200, &vm_json(vm, expands(ctx.query, "instanceView")))),
        Route::VmInstanceView { sub, rg, vm } => {
            lookup_vm(ctx.world, sub, rg, vm).map(|vm| Reply::json(200, &instance_view_json(vm)))
        }
        Route::BootDiagnostics { sub, rg, vm } => boot_diagnostics(ctx, sub, rg, vm),
        Route::ResourceHealth { sub, rg, vm } => resource_health(ctx, sub, rg, vm),
        Route::ListHealth { sub, rg } => list_health(ctx, sub, rg.as_deref()),
        Route::ListNics { sub, rg } => list_nics(ctx, sub, rg.as_deref()),
        Route::GetNic { sub, rg, nic } => lookup_nic(ctx.world, sub, rg, nic).map(|vm| {
            let nsg = nic_nsg(ctx.world, vm);
            let expand = expands(ctx.query, PUBLIC_IP_EXPAND);
            Reply::json(200, &nic_json(vm, nsg, expand))
        }),
        Route::EffectiveNsgs { sub, rg, nic } => effective_nsgs(ctx, sub, rg, nic),
        Route::ListPublicIps { sub, rg } => list_public_ips(ctx, sub, rg.as_deref()),
        Route::GetPublicIp { sub, rg, name } => get_public_ip(ctx.world, sub, rg, name),
        Route::GetSubnet {
            sub,
            rg,
            vnet,
            subnet,
        } => get_subnet(ctx.world, sub, rg, vnet, subnet),
        Route::GetNsg { sub, rg, name } => get_nsg(ctx.world, sub, rg, name),
        Route::NetworkOperationResult { sub, id } => network_operation(ctx, sub, id),
        Route::ComputeOperation { sub, id } => compute_operation(ctx, sub, id),
        Route::VmAction {
            sub,
            rg,
            vm,
            action,
        } => super::write::vm_action(ctx, sub, rg, vm, *action),
        Route::ListExtensions { sub, rg, vm } => super::write::list_extensions(ctx, sub, rg, vm),
        Route::GetExtension { sub, rg, vm, name } => {
            super::write::get_extension(ctx, sub, rg, vm, name)
        }
        Route::PutExtension { sub, rg, vm, name } => {
            super::write::put_extension(ctx, sub, rg, vm, name)
        }
        Route::GetSecurityRule { sub, rg, nsg, name } => {
            super::write::get_security_rule(ctx, sub, rg, nsg, name)
        }
        Route::PutSecurityRule { sub, rg, nsg, name } => {
            super::write::put_security_rule(ctx, sub, rg, nsg, name)
        }
        Route::NetworkOperation { sub, id } => super::write::network_operation_status(ctx, sub, id),
        Route::ListResourceGroups { sub } => list_resource_groups(ctx, sub),
        Route::ListPermissions { sub, rg } => list_permissions(ctx, sub, rg),
        Route::Unknown => Err(Reply::arm_error(
            404,
            "NotFound",
            &format!(
                "The simulator does not serve {} {}. See src/sim/arm.rs for the routes it knows.",
                ctx.method, ctx.path
            ),
        )),
    };
    result.unwrap_or_else(|reply| reply)
}

pub(crate) type Answer = Result<Reply, Reply>;

// ---------------------------------------------------------------------------------------------
// Ids and lookups

fn rg_prefix(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

pub(crate) fn vm_id(vm: &Vm) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{}",
        rg_prefix(&vm.subscription, &vm.resource_group),
        vm.name
    )
}

fn nic_id(vm: &Vm) -> String {
    format!(
        "{}/providers/Microsoft.Network/networkInterfaces/{}",
        rg_prefix(&vm.subscription, &vm.resource_group),
        vm.nic_name()
    )
}

fn ipconfig_id(vm: &Vm) -> String {
    format!("{}/ipConfigurations/ipconfig1", nic_id(vm))
}

fn public_ip_id(vm: &Vm, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/publicIPAddresses/{name}",
        rg_prefix(&vm.subscription, &vm.resource_group)
    )
}

fn subnet_id(vm: &Vm) -> String {
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

fn lookup_nic<'w>(world: &'w World, sub: &str, rg: &str, nic: &str) -> Result<&'w Vm, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .vms
        .iter()
        .find(|v| {
            v.subscription.eq_ignore_ascii_case(sub)
                && v.resource_group.eq_ignore_ascii_case(rg)
                && v.nic_name().eq_ignore_ascii_case(nic)
        })
        .ok_or_else(|| not_found("Microsoft.Network/networkInterfaces", nic, rg))
}

// ---------------------------------------------------------------------------------------------
// Lists

/// The VMs of a subscription, or of one of its resource groups, in the order they were added.
fn vms_in_scope<'w>(world: &'w World, sub: &str, rg: Option<&str>) -> Vec<&'w Vm> {
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
fn expands(query: &Query, what: &str) -> bool {
    query.get("$expand").is_some_and(|expand| {
        expand
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(what))
    })
}

/// One page of a list: which of its items this answer holds, and the link to the next page.
struct Page {
    items: Range<usize>,
    next_link: Option<String>,
}

impl Page {
    /// The page of `total` items that `$skiptoken` asks for, `World::page_size` at a time. The
    /// `nextLink` repeats the request's path, api-version (`api_version` if it had none) and
    /// `$expand`: clients follow it as it is, without adding their own parameters again.
    fn of(ctx: &Ctx<'_>, total: usize, api_version: &str) -> Result<Page, Reply> {
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
    fn reply(self, value: Vec<Value>) -> Reply {
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
// Compute

/// The subscription's resource groups the caller may read, as `ResourceGroups_List` answers
/// (`ResourceGroups_List.json` in the resources spec, 2021-04-01): ARM filters the list by the
/// caller's role assignments instead of refusing it.
fn list_resource_groups(ctx: &Ctx<'_>, sub: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    let caller = super::rbac::Caller::of(ctx.world, ctx.client_id);
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
        );
    for (vm_sub, rg, location) in located {
        if vm_sub.eq_ignore_ascii_case(sub)
            && !groups.iter().any(|(g, _)| g.eq_ignore_ascii_case(rg))
        {
            groups.push((rg.clone(), location.clone()));
        }
    }
    groups.retain(|(rg, _)| caller.allows(super::rbac::READ_GROUPS, &rg_prefix(sub, rg)));
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
fn list_permissions(ctx: &Ctx<'_>, sub: &str, rg: &str) -> Answer {
    check_scope(ctx.world, sub, Some(rg))?;
    let caller = super::rbac::Caller::of(ctx.world, ctx.client_id);
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

fn list_vms(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
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
                    "extensionHandlers": super::write::extension_handlers_json(vm),
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
            .map(super::write::extension_instance_view_json)
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

fn boot_diagnostics(ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
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
// Resource Health

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
fn resource_health(ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str) -> Answer {
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
fn list_health(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
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

// ---------------------------------------------------------------------------------------------
// Network

fn mac_address(vm: &Vm) -> String {
    let hex = stable_uuid(&nic_id(vm))
        .replace('-', "")
        .to_ascii_uppercase();
    format!("00-0D-3A-{}-{}-{}", &hex[0..2], &hex[2..4], &hex[4..6])
}

/// The `$expand` of a NIC GET that puts the whole public IP in its IP configuration.
const PUBLIC_IP_EXPAND: &str = "ipConfigurations/publicIPAddress";

/// The NSG on a VM's NIC.
fn nic_nsg<'w>(world: &'w World, vm: &Vm) -> Option<&'w Nsg> {
    vm.nic_nsg
        .as_deref()
        .and_then(|n| world.find_nsg(&vm.subscription, n))
}

/// NSGs by subscription and name (lowercase), so a list page finds each NIC's NSG without
/// scanning them all.
struct NsgIndex<'w>(HashMap<(String, String), &'w Nsg>);

impl<'w> NsgIndex<'w> {
    fn new(world: &'w World) -> NsgIndex<'w> {
        let mut index = HashMap::new();
        for nsg in &world.nsgs {
            let key = (
                nsg.subscription.to_ascii_lowercase(),
                nsg.name.to_ascii_lowercase(),
            );
            // The first of a name wins, as in `World::find_nsg`.
            index.entry(key).or_insert(nsg);
        }
        NsgIndex(index)
    }

    /// The NSG on a VM's NIC.
    fn nic_nsg(&self, vm: &Vm) -> Option<&'w Nsg> {
        let name = vm.nic_nsg.as_deref()?;
        let key = (
            vm.subscription.to_ascii_lowercase(),
            name.to_ascii_lowercase(),
        );
        self.0.get(&key).copied()
    }
}

/// A VM's NIC with its NSG `nsg`. The public IP is an `{"id"}` reference, or the whole
/// resource (as `GET publicIPAddresses/{name}` serves it) with `expand_public_ip`.
pub(crate) fn nic_json(vm: &Vm, nsg: Option<&Nsg>, expand_public_ip: bool) -> Value {
    let mut ip_props = json!({
        "provisioningState": "Succeeded",
        "privateIPAddress": vm.private_ip,
        "privateIPAllocationMethod": "Dynamic",
        "subnet": {"id": subnet_id(vm)},
        "primary": true,
        "privateIPAddressVersion": "IPv4",
    });
    if let Some(ip) = &vm.public_ip {
        ip_props["publicIPAddress"] = if expand_public_ip {
            public_ip_json(vm, ip)
        } else {
            json!({"id": public_ip_id(vm, &ip.name)})
        };
    }
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "ipConfigurations": [{
            "name": "ipconfig1",
            "id": ipconfig_id(vm),
            "properties": ip_props,
        }],
        "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
        "macAddress": mac_address(vm),
        "enableAcceleratedNetworking": false,
        "enableIPForwarding": false,
        "primary": true,
        "virtualMachine": {"id": vm_id(vm)},
        "nicType": "Standard",
    });
    if let Some(nsg) = nsg {
        properties["networkSecurityGroup"] = json!({"id": nsg_id(nsg)});
    }
    json!({
        "name": vm.nic_name(),
        "id": nic_id(vm),
        "location": vm.location,
        "properties": properties,
        "type": "Microsoft.Network/networkInterfaces",
    })
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Network/networkInterfaces`:
/// one NIC per VM in scope, paged.
fn list_nics(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let vms = vms_in_scope(ctx.world, sub, rg);
    let page = Page::of(ctx, vms.len(), "2024-03-01")?;
    let nsgs = NsgIndex::new(ctx.world);
    let value = vms[page.items.clone()]
        .iter()
        .map(|vm| nic_json(vm, nsgs.nic_nsg(vm), false))
        .collect();
    Ok(page.reply(value))
}

/// A public IP address resource as `GET publicIPAddresses/{name}` serves it.
fn public_ip_json(vm: &Vm, ip: &PublicIp) -> Value {
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "resourceGuid": stable_uuid(&public_ip_id(vm, &ip.name)),
        "publicIPAddressVersion": "IPv4",
        "publicIPAllocationMethod": match ip.allocation { Allocation::Static => "Static", Allocation::Dynamic => "Dynamic" },
        "idleTimeoutInMinutes": 4,
        "ipConfiguration": {"id": ipconfig_id(vm)},
        "ipTags": [],
    });
    if let Some(address) = &ip.address {
        properties["ipAddress"] = json!(address);
    }
    let sku = match ip.sku {
        Sku::Standard => "Standard",
        Sku::Basic => "Basic",
    };
    json!({
        "name": ip.name,
        "id": public_ip_id(vm, &ip.name),
        "location": vm.location,
        "sku": {"name": sku, "tier": "Regional"},
        "properties": properties,
        "type": "Microsoft.Network/publicIPAddresses",
    })
}

fn get_public_ip(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let (vm, ip) = vms_in_scope(world, sub, Some(rg))
        .into_iter()
        .find_map(|v| {
            v.public_ip
                .as_ref()
                .filter(|ip| ip.name.eq_ignore_ascii_case(name))
                .map(|ip| (v, ip))
        })
        .ok_or_else(|| not_found("Microsoft.Network/publicIPAddresses", name, rg))?;
    Ok(Reply::json(200, &public_ip_json(vm, ip)))
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Network/publicIPAddresses`:
/// the public IP of every VM in scope that has one, paged.
fn list_public_ips(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let ips: Vec<(&Vm, &PublicIp)> = vms_in_scope(ctx.world, sub, rg)
        .into_iter()
        .filter_map(|vm| vm.public_ip.as_ref().map(|ip| (vm, ip)))
        .collect();
    let page = Page::of(ctx, ips.len(), "2024-03-01")?;
    let value = ips[page.items.clone()]
        .iter()
        .map(|(vm, ip)| public_ip_json(vm, ip))
        .collect();
    Ok(page.reply(value))
}

/// "10.0.1.4" -> ("10.0.1.0/24", "10.0.0.0/16").
fn prefixes_of(ip: &str) -> (String, String) {
    let octets: Vec<&str> = ip.split('.').collect();
    match octets.as_slice() {
        [a, b, c, _] => (format!("{a}.{b}.{c}.0/24"), format!("{a}.{b}.0.0/16")),
        _ => ("10.0.1.0/24".to_owned(), "10.0.0.0/16".to_owned()),
    }
}

/// The smallest prefix, at most /24, holding the private addresses of every VM on a subnet (a
/// fleet spans several /24s).
fn subnet_prefix(on_subnet: &[&Vm]) -> String {
    let addresses: Option<Vec<u32>> = on_subnet
        .iter()
        .map(|v| {
            v.private_ip
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .map(u32::from)
        })
        .collect();
    match addresses.as_deref() {
        Some([base, rest @ ..]) => {
            let differing = rest.iter().fold(0, |bits, a| bits | (a ^ base));
            // At most 24, so the length is always valid.
            let length = differing.leading_zeros().min(24) as u8;
            ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::from(*base), length)
                .trunc()
                .to_string()
        }
        _ => prefixes_of(on_subnet.first().map_or("", |v| v.private_ip.as_str())).0,
    }
}

fn get_subnet(world: &World, sub: &str, rg: &str, vnet: &str, subnet: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let in_vnet: Vec<&Vm> = world
        .vms
        .iter()
        .filter(|v| {
            v.subscription.eq_ignore_ascii_case(sub)
                && v.resource_group.eq_ignore_ascii_case(rg)
                && v.vnet_name().eq_ignore_ascii_case(vnet)
        })
        .collect();
    if in_vnet.is_empty() {
        return Err(not_found("Microsoft.Network/virtualNetworks", vnet, rg));
    }
    let on_subnet: Vec<&Vm> = in_vnet
        .into_iter()
        .filter(|v| v.subnet.eq_ignore_ascii_case(subnet))
        .collect();
    let Some(first) = on_subnet.first() else {
        return Err(Reply::arm_error(
            404,
            "NotFound",
            &format!(
                "Resource {}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet} not found.",
                rg_prefix(sub, rg)
            ),
        ));
    };
    let mut properties = json!({
        "addressPrefix": subnet_prefix(&on_subnet),
        "provisioningState": "Succeeded",
        "ipConfigurations": on_subnet.iter().map(|v| json!({"id": ipconfig_id(v)})).collect::<Vec<_>>(),
        "privateEndpointNetworkPolicies": "Disabled",
        "privateLinkServiceNetworkPolicies": "Enabled",
    });
    if let Some(nsg) = first
        .subnet_nsg
        .as_deref()
        .and_then(|n| world.find_nsg(sub, n))
    {
        properties["networkSecurityGroup"] = json!({"id": nsg_id(nsg)});
    }
    Ok(Reply::json(
        200,
        &json!({
            "id": subnet_id(first),
            "name": first.subnet,
            "properties": properties,
            "type": "Microsoft.Network/virtualNetworks/subnets",
        }),
    ))
}

/// Azure's six default rules, as in NetworkSecurityGroupGet.json.
pub(crate) fn default_rules() -> Vec<Rule> {
    let rule = |name: &str,
                priority,
                direction: &str,
                access: &str,
                src: &str,
                dst: &str,
                description: &str| Rule {
        name: name.to_owned(),
        priority,
        direction: direction.to_owned(),
        access: access.to_owned(),
        protocol: "*".to_owned(),
        source: Some(src.to_owned()),
        sources: Vec::new(),
        source_port: "*".to_owned(),
        destination: Some(dst.to_owned()),
        destination_port: Some("*".to_owned()),
        destination_ports: Vec::new(),
        description: Some(description.to_owned()),
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Inbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow inbound traffic from all VMs in VNET",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Inbound",
            "Allow",
            "AzureLoadBalancer",
            "*",
            "Allow inbound traffic from azure load balancer",
        ),
        rule(
            "DenyAllInBound",
            65500,
            "Inbound",
            "Deny",
            "*",
            "*",
            "Deny all inbound traffic",
        ),
        rule(
            "AllowVnetOutBound",
            65000,
            "Outbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow outbound traffic from all VMs to all VMs in VNET",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            "Outbound",
            "Allow",
            "*",
            "Internet",
            "Allow outbound traffic from all VMs to Internet",
        ),
        rule(
            "DenyAllOutBound",
            65500,
            "Outbound",
            "Deny",
            "*",
            "*",
            "Deny all outbound traffic",
        ),
    ]
}

pub(crate) fn rule_json(nsg: &Nsg, collection: &str, rule: &Rule) -> Value {
    let mut props = json!({
        "provisioningState": "Succeeded",
        "protocol": rule.protocol,
        "sourcePortRange": rule.source_port,
        "destinationAddressPrefix": rule.destination.as_deref().unwrap_or("*"),
        "access": rule.access,
        "priority": rule.priority,
        "direction": rule.direction,
    });
    if let Some(description) = &rule.description {
        props["description"] = json!(description);
    }
    if rule.destination_ports.is_empty() {
        props["destinationPortRange"] = json!(rule.destination_port.as_deref().unwrap_or("*"));
    } else {
        props["destinationPortRanges"] = json!(rule.destination_ports);
    }
    if rule.sources.is_empty() {
        props["sourceAddressPrefix"] = json!(rule.source.as_deref().unwrap_or("*"));
    } else {
        props["sourceAddressPrefixes"] = json!(rule.sources);
    }
    json!({
        "name": rule.name,
        "id": format!("{}/{collection}/{}", nsg_id(nsg), rule.name),
        "type": format!("Microsoft.Network/networkSecurityGroups/{collection}"),
        "properties": props,
    })
}

fn get_nsg(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let nsg = world
        .find_nsg(sub, name)
        .filter(|n| n.resource_group.eq_ignore_ascii_case(rg))
        .ok_or_else(|| not_found("Microsoft.Network/networkSecurityGroups", name, rg))?;
    let in_sub = |v: &&Vm| v.subscription.eq_ignore_ascii_case(sub);
    let uses = |r: &Option<String>| {
        r.as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&nsg.name))
    };
    let nics: Vec<Value> = world
        .vms
        .iter()
        .filter(in_sub)
        .filter(|v| uses(&v.nic_nsg))
        .map(|v| json!({"id": nic_id(v)}))
        .collect();
    let mut subnets: Vec<String> = world
        .vms
        .iter()
        .filter(in_sub)
        .filter(|v| uses(&v.subnet_nsg))
        .map(subnet_id)
        .collect();
    subnets.dedup();
    Ok(Reply::json(
        200,
        &json!({
            "name": nsg.name,
            "id": nsg_id(nsg),
            "etag": format!("W/\"{}\"", stable_uuid(&format!("etag{}", nsg_id(nsg)))),
            "type": "Microsoft.Network/networkSecurityGroups",
            "location": nsg.location,
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": stable_uuid(&nsg_id(nsg)),
                "securityRules": nsg.rules.iter().map(|r| rule_json(nsg, "securityRules", r)).collect::<Vec<_>>(),
                "defaultSecurityRules": default_rules().iter().map(|r| rule_json(nsg, "defaultSecurityRules", r)).collect::<Vec<_>>(),
                "networkInterfaces": nics,
                "subnets": subnets.into_iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            },
        }),
    ))
}

/// Public IPv4 space: 0.0.0.0/0 without 0/8, 10/8, 172.16/12, 192.168/16 and 224/3.
const INTERNET: &[&str] = &[
    "32.0.0.0/3",
    "4.0.0.0/6",
    "2.0.0.0/7",
    "1.0.0.0/8",
    "8.0.0.0/7",
    "11.0.0.0/8",
    "12.0.0.0/6",
    "16.0.0.0/4",
    "64.0.0.0/2",
    "128.0.0.0/3",
    "160.0.0.0/5",
    "168.0.0.0/6",
    "172.0.0.0/12",
    "172.32.0.0/11",
    "172.64.0.0/10",
    "172.128.0.0/9",
    "173.0.0.0/8",
    "174.0.0.0/7",
    "176.0.0.0/4",
    "192.0.0.0/9",
    "192.128.0.0/11",
    "192.160.0.0/13",
    "192.169.0.0/16",
    "192.170.0.0/15",
    "192.172.0.0/14",
    "192.176.0.0/12",
    "192.192.0.0/10",
    "193.0.0.0/8",
    "194.0.0.0/7",
    "196.0.0.0/6",
    "200.0.0.0/5",
    "208.0.0.0/4",
];

const AZURE_DNS_AND_PROBES: &str = "168.63.129.16/32";

/// The CIDRs a service tag stands for, or `None` for a plain prefix.
fn expand_tag(tag: &str, vm: &Vm) -> Option<Vec<String>> {
    match tag.to_ascii_lowercase().as_str() {
        "internet" => Some(INTERNET.iter().map(|s| (*s).to_owned()).collect()),
        "virtualnetwork" => Some(vec![
            prefixes_of(&vm.private_ip).1,
            AZURE_DNS_AND_PROBES.to_owned(),
        ]),
        "azureloadbalancer" => Some(vec![AZURE_DNS_AND_PROBES.to_owned()]),
        _ => None,
    }
}

/// "*" -> "0.0.0.0/0", "1.2.3.4" -> "1.2.3.4/32"; tags and CIDRs stay.
fn effective_prefix(prefix: &str) -> String {
    if prefix == "*" {
        "0.0.0.0/0".to_owned()
    } else if !prefix.contains('/') && prefix.parse::<std::net::Ipv4Addr>().is_ok() {
        format!("{prefix}/32")
    } else {
        prefix.to_owned()
    }
}

/// "*" -> "0-65535", "3389" -> "3389-3389"; ranges stay.
fn effective_ports(ports: &str) -> String {
    if ports == "*" {
        "0-65535".to_owned()
    } else if ports.contains('-') {
        ports.to_owned()
    } else {
        format!("{ports}-{ports}")
    }
}

fn effective_rule(collection: &str, rule: &Rule, vm: &Vm, tags: &mut Map<String, Value>) -> Value {
    let mut expand = |prefixes: &[String]| -> Vec<String> {
        let mut expanded = Vec::new();
        for prefix in prefixes {
            if let Some(cidrs) = expand_tag(prefix, vm) {
                tags.insert(prefix.clone(), json!(cidrs));
                expanded.extend(cidrs);
            }
        }
        expanded
    };
    let sources = rule.source_prefixes();
    let destinations = vec![rule.destination.clone().unwrap_or_else(|| "*".to_owned())];
    let expanded_sources = expand(&sources);
    let expanded_destinations = expand(&destinations);
    let mut out = json!({
        "name": format!("{collection}/{}", rule.name),
        "protocol": if rule.protocol == "*" { "All" } else { rule.protocol.as_str() },
        "sourcePortRange": effective_ports(&rule.source_port),
        "destinationAddressPrefix": effective_prefix(&destinations[0]),
        "access": rule.access,
        "priority": rule.priority,
        "direction": rule.direction,
    });
    if rule.destination_ports.is_empty() {
        out["destinationPortRange"] = json!(effective_ports(&rule.destination_port_list()[0]));
    } else {
        out["destinationPortRanges"] = json!(rule
            .destination_ports
            .iter()
            .map(|p| effective_ports(p))
            .collect::<Vec<_>>());
    }
    if rule.sources.is_empty() {
        out["sourceAddressPrefix"] = json!(effective_prefix(&sources[0]));
    } else {
        out["sourceAddressPrefixes"] = json!(sources
            .iter()
            .map(|p| effective_prefix(p))
            .collect::<Vec<_>>());
    }
    if !expanded_sources.is_empty() {
        out["expandedSourceAddressPrefix"] = json!(expanded_sources);
    }
    if !expanded_destinations.is_empty() {
        out["expandedDestinationAddressPrefix"] = json!(expanded_destinations);
    }
    out
}

fn effective_group(nsg: &Nsg, association: Value, vm: &Vm) -> Value {
    let mut tags = Map::new();
    let mut custom: Vec<&Rule> = nsg.rules.iter().collect();
    custom.sort_by_key(|r| (r.direction != "Inbound", r.priority));
    let mut rules: Vec<Value> = custom
        .into_iter()
        .map(|r| effective_rule("securityRules", r, vm, &mut tags))
        .collect();
    rules.extend(
        default_rules()
            .iter()
            .map(|r| effective_rule("defaultSecurityRules", r, vm, &mut tags)),
    );
    json!({
        "networkSecurityGroup": {"id": nsg_id(nsg)},
        "association": association,
        "effectiveSecurityRules": rules,
        // The swagger types tagMap as a string: ARM sends the map JSON-encoded.
        "tagMap": Value::Object(tags).to_string(),
    })
}

/// The effective NSG list of a VM's NIC: subnet NSG first, then NIC NSG.
pub(crate) fn effective_nsg_list(world: &World, vm: &Vm) -> Value {
    let mut groups = Vec::new();
    if let Some(nsg) = vm
        .subnet_nsg
        .as_deref()
        .and_then(|n| world.find_nsg(&vm.subscription, n))
    {
        groups.push(effective_group(
            nsg,
            json!({"subnet": {"id": subnet_id(vm)}}),
            vm,
        ));
    }
    if let Some(nsg) = vm
        .nic_nsg
        .as_deref()
        .and_then(|n| world.find_nsg(&vm.subscription, n))
    {
        groups.push(effective_group(
            nsg,
            json!({"networkInterface": {"id": nic_id(vm)}}),
            vm,
        ));
    }
    json!({ "value": groups })
}

fn network_operation_url(base: &str, sub: &str, location: &str, id: &str) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operationResults/{id}?api-version=2024-03-01"
    )
}

fn effective_nsgs(ctx: &mut Ctx<'_>, sub: &str, rg: &str, nic: &str) -> Answer {
    let vm = lookup_nic(ctx.world, sub, rg, nic)?;
    if vm.power_state != PowerState::Running {
        return Err(Reply::arm_error(
            400,
            "NicNotAttachedToRunningVm",
            &format!(
                "Network interface {} is not attached to a running virtual machine. Effective security rules are only available while the virtual machine '{}' is running.",
                nic_id(vm),
                vm.name
            ),
        ));
    }
    let result = effective_nsg_list(ctx.world, vm);
    let location = vm.location.clone();
    let id = ctx
        .lro
        .start(sub, ctx.lro_polls, Outcome::Body(result), None);
    let accepted = Reply::empty(202).header(
        "Location",
        network_operation_url(ctx.base, sub, &location, &id),
    );
    // `Retry-After: 0` with `lro_polls = 0`: a client polls the Location at once and gets the
    // result, two requests in all.
    Ok(accepted.header("Retry-After", ctx.retry_after.to_string()))
}

pub(crate) fn operation_not_found(id: &str) -> Reply {
    Reply::arm_error(
        404,
        "OperationNotFound",
        &format!("The operation '{id}' was not found."),
    )
}

fn network_operation(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    match ctx.lro.poll(sub, id, ctx.world) {
        None => Err(operation_not_found(id)),
        Some(Poll::InProgress { .. }) => Ok(Reply::empty(202)
            .header("Location", format!("{}{}", ctx.base, current_url(ctx)))
            .header("Retry-After", ctx.retry_after.to_string())),
        Some(Poll::Done { outcome, .. }) => match outcome {
            Outcome::Body(body) => Ok(Reply::json(200, &body)),
            Outcome::Succeeded => Ok(Reply::empty(204)),
            Outcome::Failed { code, message } => Err(Reply::arm_error(400, &code, &message)),
        },
    }
}

fn current_url(ctx: &Ctx<'_>) -> String {
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

/// `GET .../Microsoft.Compute/locations/{loc}/operations/{id}`: the `Azure-AsyncOperation` status,
/// or with `monitor=true` the `Location` form (202 while running, then 200).
fn compute_operation(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
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
    fn routes_parse_case_insensitively_and_ignore_double_slashes() {
        assert_eq!(
            Route::parse("GET", "//subscriptions/s/resourceGroups/RG/providers/microsoft.compute/VirtualMachines/web-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current"),
            Route::ResourceHealth { sub: "s".into(), rg: "RG".into(), vm: "web-01".into() }
        );
        assert_eq!(
            Route::parse(
                "POST",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            ),
            Route::Unknown
        );
    }

    #[test]
    fn list_routes_take_a_resource_group_or_the_whole_subscription() {
        let route = |path: &str| Route::parse("GET", path);
        assert_eq!(
            route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces"
            ),
            Route::ListNics {
                sub: "s".into(),
                rg: Some("rg".into())
            }
        );
        assert_eq!(
            route("/subscriptions/s/providers/microsoft.network/publicIPAddresses"),
            Route::ListPublicIps {
                sub: "s".into(),
                rg: None
            }
        );
        assert_eq!(
            route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ResourceHealth/availabilityStatuses"),
            Route::ListHealth { sub: "s".into(), rg: Some("rg".into()) }
        );
        assert_eq!(
            route("/subscriptions/s/providers/Microsoft.ResourceHealth/availabilityStatuses"),
            Route::ListHealth {
                sub: "s".into(),
                rg: None
            }
        );
        assert_eq!(
            Route::parse(
                "POST",
                "/subscriptions/s/providers/Microsoft.Network/networkInterfaces"
            ),
            Route::Unknown
        );
    }

    #[test]
    fn a_subnet_prefix_covers_every_address_on_it() {
        let world = World::new().fleet("rg", "vm", 300);
        let on_subnet: Vec<&Vm> = world.vms.iter().collect();
        assert_eq!(subnet_prefix(&on_subnet), "10.1.0.0/23");
        assert_eq!(subnet_prefix(&on_subnet[..1]), "10.1.0.0/24");
        let single = World::new().vm("web-01");
        assert_eq!(subnet_prefix(&[&single.vms[0]]), "10.0.1.0/24");
    }

    #[test]
    fn expand_matches_one_item_of_a_comma_separated_list() {
        let query = Query::parse(Some("api-version=1&%24expand=foo,%20InstanceView"));
        assert!(expands(&query, "instanceView"));
        assert!(!expands(&query, "instance"));
        assert!(!expands(&Query::parse(None), "instanceView"));
    }

    #[test]
    fn effective_rules_normalise_ports_prefixes_and_protocols() {
        let world = World::new().vm("web-01").nsg_denies_rdp();
        let vm = &world.vms[0];
        let list = effective_nsg_list(&world, vm);
        let groups = list["value"].as_array().expect("array");
        assert_eq!(groups.len(), 2);
        assert!(groups[0]["association"]["subnet"]["id"].is_string());
        let deny = &groups[0]["effectiveSecurityRules"][0];
        assert_eq!(deny["name"], "securityRules/deny-rdp-internet");
        assert_eq!(deny["destinationPortRange"], "3389-3389");
        assert_eq!(deny["sourcePortRange"], "0-65535");
        assert_eq!(deny["sourceAddressPrefix"], "Internet");
        assert!(deny["expandedSourceAddressPrefix"]
            .as_array()
            .is_some_and(|a| a.len() > 10));
        let allow = &groups[1]["effectiveSecurityRules"][0];
        assert_eq!(allow["sourceAddressPrefix"], "0.0.0.0/0");
        let last = &groups[1]["effectiveSecurityRules"][6];
        assert_eq!(last["name"], "defaultSecurityRules/DenyAllOutBound");
        assert_eq!(last["protocol"], "All");
        assert!(groups[0]["tagMap"]
            .as_str()
            .is_some_and(|t| t.contains("Internet")));
    }

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
}
