//! ARM's routing table: turns a request's method and path into a [`Route`], names it for the
//! statistics ([`Route::key`]) and says which VM's Compute buckets it spends
//! ([`Route::compute_get`]).

/// Query parameters, looked up case-insensitively like ARM does.
pub(crate) struct Query(pub(crate) Vec<(String, String)>);

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
    /// `GET virtualNetworks/{vnet}` (`VirtualNetworks_Get`, network spec 2024-03-01).
    GetVnet {
        sub: String,
        rg: String,
        vnet: String,
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
    /// `GET bastionHosts` of a subscription or a resource group (network spec 2024-03-01).
    ListBastions {
        sub: String,
        rg: Option<String>,
    },
    /// `POST virtualNetworks/{vnet}/listNetworkManagerEffectiveSecurityAdminRules` (network
    /// spec 2024-03-01).
    EffectiveAdminRules {
        sub: String,
        rg: String,
        vnet: String,
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
    /// `POST .../virtualMachines/{vm}/runCommand` (`VirtualMachines_RunCommand`, compute spec
    /// 2024-07-01).
    RunCommand {
        sub: String,
        rg: String,
        vm: String,
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
    GetRouteTable {
        sub: String,
        rg: String,
        table: String,
    },
    ListRoutes {
        sub: String,
        rg: String,
        table: String,
    },
    GetRouteEntry {
        sub: String,
        rg: String,
        table: String,
        name: String,
    },
    DeleteRouteEntry {
        sub: String,
        rg: String,
        table: String,
        name: String,
    },
    EffectiveRouteTable {
        sub: String,
        rg: String,
        nic: String,
    },
    /// `NetworkWatchers_ListAll`.
    ListNetworkWatchers {
        sub: String,
    },
    IpFlowVerify {
        sub: String,
        rg: String,
        watcher: String,
    },
    NextHop {
        sub: String,
        rg: String,
        watcher: String,
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
    /// `JitNetworkAccessPolicies_List` (security spec 2020-01-01).
    ListJitPolicies {
        sub: String,
    },
    /// `JitNetworkAccessPolicies_Initiate` (security spec 2020-01-01).
    InitiateJit {
        sub: String,
        rg: String,
        location: String,
        name: String,
    },
    /// `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`
    /// (`ActivityLogs_List`, monitor spec 2015-04-01).
    ActivityLog {
        sub: String,
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
        let delete = method.eq_ignore_ascii_case("DELETE");
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
            [SUB, _, P, "microsoft.security", "jitnetworkaccesspolicies"] if get => {
                Route::ListJitPolicies { sub: s(1) }
            }
            [SUB, _, RGS, _, P, "microsoft.security", "locations", _, "jitnetworkaccesspolicies", _, "initiate"]
                if post =>
            {
                Route::InitiateJit {
                    sub: s(1),
                    rg: s(3),
                    location: s(7),
                    name: s(9),
                }
            }
            [SUB, _, RGS, _, P, "microsoft.authorization", "permissions"] if get => {
                Route::ListPermissions {
                    sub: s(1),
                    rg: s(3),
                }
            }
            [SUB, _, RGS, _, P, C, VMS, _, "runcommand"] if post => Route::RunCommand {
                sub: s(1),
                rg: s(3),
                vm: s(7),
            },
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
            [SUB, _, RGS, _, P, N, "routetables", _] if get => Route::GetRouteTable {
                sub: s(1),
                rg: s(3),
                table: s(7),
            },
            [SUB, _, RGS, _, P, N, "routetables", _, "routes"] if get => Route::ListRoutes {
                sub: s(1),
                rg: s(3),
                table: s(7),
            },
            [SUB, _, RGS, _, P, N, "routetables", _, "routes", _] if get => Route::GetRouteEntry {
                sub: s(1),
                rg: s(3),
                table: s(7),
                name: s(9),
            },
            [SUB, _, RGS, _, P, N, "routetables", _, "routes", _] if delete => {
                Route::DeleteRouteEntry {
                    sub: s(1),
                    rg: s(3),
                    table: s(7),
                    name: s(9),
                }
            }
            [SUB, _, RGS, _, P, N, NICS, _, "effectiveroutetable"] if post => {
                Route::EffectiveRouteTable {
                    sub: s(1),
                    rg: s(3),
                    nic: s(7),
                }
            }
            [SUB, _, P, "microsoft.insights", "eventtypes", "management", "values"] if get => {
                Route::ActivityLog { sub: s(1) }
            }
            [SUB, _, P, N, "networkwatchers"] if get => Route::ListNetworkWatchers { sub: s(1) },
            [SUB, _, RGS, _, P, N, "networkwatchers", _, "ipflowverify"] if post => {
                Route::IpFlowVerify {
                    sub: s(1),
                    rg: s(3),
                    watcher: s(7),
                }
            }
            [SUB, _, RGS, _, P, N, "networkwatchers", _, "nexthop"] if post => Route::NextHop {
                sub: s(1),
                rg: s(3),
                watcher: s(7),
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
            [SUB, _, RGS, _, P, N, "virtualnetworks", _] if get => Route::GetVnet {
                sub: s(1),
                rg: s(3),
                vnet: s(7),
            },
            [SUB, _, RGS, _, P, N, "virtualnetworks", _, "subnets", _] if get => Route::GetSubnet {
                sub: s(1),
                rg: s(3),
                vnet: s(7),
                subnet: s(9),
            },
            [SUB, _, RGS, _, P, N, "virtualnetworks", _, "listnetworkmanagereffectivesecurityadminrules"]
                if post =>
            {
                Route::EffectiveAdminRules {
                    sub: s(1),
                    rg: s(3),
                    vnet: s(7),
                }
            }
            [SUB, _, P, N, "bastionhosts"] if get => Route::ListBastions {
                sub: s(1),
                rg: None,
            },
            [SUB, _, RGS, _, P, N, "bastionhosts"] if get => Route::ListBastions {
                sub: s(1),
                rg: Some(s(3)),
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

    /// The VM whose Compute "Low Cost Get" buckets this request spends (subscription,
    /// resource group, VM): a GET of the VM or its instance view, and
    /// `retrieveBootDiagnosticsData` (Microsoft's "Compute throttling limits").
    pub(crate) fn compute_get(&self) -> Option<(&str, &str, &str)> {
        match self {
            Route::GetVm { sub, rg, vm }
            | Route::VmInstanceView { sub, rg, vm }
            | Route::BootDiagnostics { sub, rg, vm } => Some((sub, rg, vm)),
            _ => None,
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
            Route::ListBastions { .. } => "GET bastionHosts (list)",
            Route::GetNic { .. } => "GET networkInterfaces",
            Route::EffectiveNsgs { .. } => "POST networkInterfaces/effectiveNetworkSecurityGroups",
            Route::GetPublicIp { .. } => "GET publicIPAddresses",
            Route::GetVnet { .. } => "GET virtualNetworks",
            Route::GetSubnet { .. } => "GET virtualNetworks/subnets",
            Route::GetNsg { .. } => "GET networkSecurityGroups",
            Route::EffectiveAdminRules { .. } => {
                "POST virtualNetworks/listNetworkManagerEffectiveSecurityAdminRules"
            }
            Route::NetworkOperationResult { .. } => "GET Microsoft.Network/operationResults",
            Route::ComputeOperation { .. } => "GET Microsoft.Compute/operations",
            Route::VmAction { action, .. } => {
                return format!("POST virtualMachines/{}", action.as_str())
            }
            Route::RunCommand { .. } => "POST virtualMachines/runCommand",
            Route::ListExtensions { .. } => "GET virtualMachines/extensions (list)",
            Route::GetExtension { .. } => "GET virtualMachines/extensions",
            Route::PutExtension { .. } => "PUT virtualMachines/extensions",
            Route::GetSecurityRule { .. } => "GET networkSecurityGroups/securityRules",
            Route::PutSecurityRule { .. } => "PUT networkSecurityGroups/securityRules",
            Route::NetworkOperation { .. } => "GET Microsoft.Network/operations",
            Route::GetRouteTable { .. } => "GET routeTables",
            Route::ListRoutes { .. } => "GET routeTables/routes (list)",
            Route::GetRouteEntry { .. } => "GET routeTables/routes",
            Route::DeleteRouteEntry { .. } => "DELETE routeTables/routes",
            Route::EffectiveRouteTable { .. } => "POST networkInterfaces/effectiveRouteTable",
            Route::ListNetworkWatchers { .. } => "GET networkWatchers (list)",
            Route::IpFlowVerify { .. } => "POST networkWatchers/ipFlowVerify",
            Route::NextHop { .. } => "POST networkWatchers/nextHop",
            Route::ListResourceGroups { .. } => "GET resourcegroups (list)",
            Route::ListPermissions { .. } => "GET Microsoft.Authorization/permissions",
            Route::ListJitPolicies { .. } => "GET jitNetworkAccessPolicies (list)",
            Route::InitiateJit { .. } => "POST jitNetworkAccessPolicies/initiate",
            Route::ActivityLog { .. } => "GET Microsoft.Insights/eventtypes/management/values",
            Route::Unknown => return format!("{} unknown", method.to_ascii_uppercase()),
        };
        name.to_owned()
    }
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
            route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v"
            ),
            Route::GetVnet {
                sub: "s".into(),
                rg: "rg".into(),
                vnet: "v".into()
            }
        );
        assert_eq!(
            route("/subscriptions/s/providers/Microsoft.Network/bastionHosts"),
            Route::ListBastions {
                sub: "s".into(),
                rg: None
            }
        );
        assert_eq!(
            route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/bastionHosts"),
            Route::ListBastions {
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
}
