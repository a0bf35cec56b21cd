//! ARM: answers an authenticated, unthrottled request for the world, by handing its [`Route`]
//! to the module of the resource provider that owns it (`compute`, `network`, `health`,
//! `authorization`), in the shapes of Microsoft's published examples
//! (`tests/fixtures/arm-examples`).
//!
//! Authentication, throttling, faults and statistics happen before this module is called; it
//! only answers for the world.

use super::resource::{expands, lookup_nic, lookup_vm, Ctx};
use super::route::Route;
use super::{activity, authorization, compute, health, network, security, Reply};

/// Answers an authenticated, unthrottled ARM request.
pub(crate) fn handle(route: &Route, ctx: &mut Ctx<'_>) -> Reply {
    if ctx.method.eq_ignore_ascii_case("GET") {
        ctx.lro.advance_unwatched(ctx.path, ctx.world);
    }
    // Defender removes a JIT request's allow rule when its end time passes.
    ctx.world.expire_jit();
    let result = match route {
        Route::ListVms { sub, rg } => compute::list_vms(ctx, sub, rg.as_deref()),
        Route::GetVm { sub, rg, vm } => lookup_vm(ctx.world, sub, rg, vm).map(|vm| {
            Reply::json(
                200,
                &compute::vm_json(vm, expands(ctx.query, "instanceView")),
            )
        }),
        Route::VmInstanceView { sub, rg, vm } => lookup_vm(ctx.world, sub, rg, vm)
            .map(|vm| Reply::json(200, &compute::instance_view_json(vm))),
        Route::BootDiagnostics { sub, rg, vm } => compute::boot_diagnostics(ctx, sub, rg, vm),
        Route::ResourceHealth { sub, rg, vm } => health::resource_health(ctx, sub, rg, vm),
        Route::ListHealth { sub, rg } => health::list_health(ctx, sub, rg.as_deref()),
        Route::ListNics { sub, rg } => network::list_nics(ctx, sub, rg.as_deref()),
        Route::GetNic { sub, rg, nic } => lookup_nic(ctx.world, sub, rg, nic).map(|vm| {
            let nsg = network::nic_nsg(ctx.world, vm);
            let expand = expands(ctx.query, network::PUBLIC_IP_EXPAND);
            Reply::json(200, &network::nic_json(vm, nsg, expand))
        }),
        Route::EffectiveNsgs { sub, rg, nic } => network::effective_nsgs(ctx, sub, rg, nic),
        Route::ListPublicIps { sub, rg } => network::list_public_ips(ctx, sub, rg.as_deref()),
        Route::GetPublicIp { sub, rg, name } => network::get_public_ip(ctx.world, sub, rg, name),
        Route::GetVnet { sub, rg, vnet } => network::get_vnet(ctx.world, sub, rg, vnet),
        Route::GetSubnet {
            sub,
            rg,
            vnet,
            subnet,
        } => network::get_subnet(ctx.world, sub, rg, vnet, subnet),
        Route::GetNsg { sub, rg, name } => network::get_nsg(ctx.world, sub, rg, name),
        Route::ListBastions { sub, rg } => network::list_bastions(ctx, sub, rg.as_deref()),
        Route::EffectiveAdminRules { sub, rg, vnet } => {
            network::effective_admin_rules(ctx, sub, rg, vnet)
        }
        Route::NetworkOperationResult { sub, id } => network::network_operation(ctx, sub, id),
        Route::ComputeOperation { sub, id } => compute::compute_operation(ctx, sub, id),
        Route::VmAction {
            sub,
            rg,
            vm,
            action,
        } => compute::vm_action(ctx, sub, rg, vm, *action),
        Route::RunCommand { sub, rg, vm } => compute::run_command(ctx, sub, rg, vm),
        Route::ListExtensions { sub, rg, vm } => compute::list_extensions(ctx, sub, rg, vm),
        Route::GetExtension { sub, rg, vm, name } => compute::get_extension(ctx, sub, rg, vm, name),
        Route::PutExtension { sub, rg, vm, name } => compute::put_extension(ctx, sub, rg, vm, name),
        Route::GetSecurityRule { sub, rg, nsg, name } => {
            network::get_security_rule(ctx, sub, rg, nsg, name)
        }
        Route::PutSecurityRule { sub, rg, nsg, name } => {
            network::put_security_rule(ctx, sub, rg, nsg, name)
        }
        Route::NetworkOperation { sub, id } => network::network_operation_status(ctx, sub, id),
        Route::GetRouteTable { sub, rg, table } => {
            network::get_route_table(ctx.world, sub, rg, table)
        }
        Route::ListRoutes { sub, rg, table } => network::list_routes(ctx.world, sub, rg, table),
        Route::GetRouteEntry {
            sub,
            rg,
            table,
            name,
        } => network::get_route(ctx, sub, rg, table, name),
        Route::DeleteRouteEntry {
            sub,
            rg,
            table,
            name,
        } => network::delete_route(ctx, sub, rg, table, name),
        Route::EffectiveRouteTable { sub, rg, nic } => {
            network::effective_route_table(ctx, sub, rg, nic)
        }
        Route::ListNetworkWatchers { sub } => network::list_network_watchers(ctx.world, sub),
        Route::IpFlowVerify { sub, rg, watcher } => network::ip_flow_verify(ctx, sub, rg, watcher),
        Route::NextHop { sub, rg, watcher } => network::next_hop(ctx, sub, rg, watcher),
        Route::ListResourceGroups { sub } => authorization::list_resource_groups(ctx, sub),
        Route::ListPermissions { sub, rg } => authorization::list_permissions(ctx, sub, rg),
        Route::ListJitPolicies { sub } => security::list_jit_policies(ctx, sub),
        Route::InitiateJit {
            sub,
            rg,
            location,
            name,
        } => security::initiate(ctx, sub, rg, location, name),
        Route::ActivityLog { sub } => activity::list(ctx, sub),
        Route::Unknown => Err(Reply::arm_error(
            404,
            "NotFound",
            &format!(
                "The simulator does not serve {} {}. See src/sim/route.rs for the routes it knows.",
                ctx.method, ctx.path
            ),
        )),
    };
    result.unwrap_or_else(|reply| reply)
}
