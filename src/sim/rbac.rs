//! Azure RBAC as ARM enforces it for the routes the simulator serves: which action a request
//! needs, on which scope, and whether a principal's role assignments grant it.
//!
//! What Azure does, with its sources:
//! - A request the caller's roles do not allow is answered 403 `AuthorizationFailed`: "The client
//!   '{clientId}' with object id '{objectId}' does not have authorization to perform action
//!   '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted,
//!   please refresh your credentials." (as quoted in pivotal-cf/terraforming-azure#71 for
//!   `Microsoft.Compute/virtualMachines/read` on a VM, Azure/azure-cli#29802 and
//!   Azure/CloudShell#572). The scope of a read of one resource is its id; the scope of a list
//!   stops at the provider namespace, e.g. `/subscriptions/{sub}/providers/Microsoft.Compute`
//!   (Azure/azure-sdk-for-net#1157, Azure/CloudShell#572). Authorisation comes before the
//!   resource is looked up, hence "or the scope is invalid".
//! - A role assigned at a scope applies to everything below it (Microsoft Learn, "Understand
//!   scope for Azure RBAC"). Actions match case-insensitively, `*` standing for any text
//!   (`*/read`, `Microsoft.Compute/virtualMachines/*`).
//! - Listing resource groups (`GET /subscriptions/{sub}/resourcegroups`) answers with the groups
//!   the caller may read, not 403, so a principal with a role on a few groups sees those
//!   (`az group list` under such a principal).
//! - The built-in roles modelled, with the actions of each that matter here (Microsoft Learn,
//!   "Azure built-in roles" for General, Compute and Networking): Reader
//!   (`acdd72a7-3385-48ef-bd42-f606fba81ae7`: `*/read`); Contributor
//!   (`b24988ac-6180-42a0-ab88-20f7382dd24c`: `*`, less authorisation writes); Virtual Machine
//!   Contributor (`9980e02c-c2be-4d73-94e8-173b1dc7cf3c`: `Microsoft.Compute/virtualMachines/*`,
//!   `Microsoft.Network/networkInterfaces/*`, `networkSecurityGroups/read` and `join/action` but
//!   not `securityRules/*`, `publicIPAddresses/read`, `virtualNetworks/read` but not
//!   `subnets/read`, `Microsoft.ResourceHealth/availabilityStatuses/read`,
//!   `Microsoft.Resources/subscriptions/resourceGroups/read`); Network Contributor
//!   (`4d97b98b-1d4f-4787-a291-c67834d212e7`: `Microsoft.Network/*`, Resource Health and
//!   resource groups read).
//!
//! - `Permissions_ListForResourceGroup` tells callers their own permissions in a group (one
//!   entry per role assignment at or above it); the simulator answers it for anyone.
//!
//! Operation-status URLs (`.../locations/{region}/operations/{id}`) are not checked: whoever
//! started an operation may follow it (a VM restart with a group-scoped role is followed to its
//! end by the az CLI).

use super::roles::built_in;
use super::route::{Route, VmAction};
use super::world::{Principal, World};
use super::Reply;

/// The action that lists resource groups (and reads one).
pub(crate) const READ_GROUPS: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";

/// Azure's action wildcard: `*` stands for any text; case-insensitive.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match pattern.split_once('*') {
        None => pattern == action,
        Some((prefix, suffix)) => {
            action.len() >= prefix.len() + suffix.len()
                && action.starts_with(prefix)
                && action.ends_with(suffix)
        }
    }
}

/// Whether `scope` is `within` or below it, segment by segment, ignoring case.
fn scope_within(scope: &str, within: &str) -> bool {
    let segs = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|x| !x.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (scope, within) = (segs(scope), segs(within));
    scope.len() >= within.len() && scope[..within.len()] == within[..]
}

/// Whether one of the principal's role assignments grants `action` on `scope`.
pub(crate) fn allows(principal: &Principal, action: &str, scope: &str) -> bool {
    principal.roles.iter().any(|assignment| {
        scope_within(scope, &assignment.scope) && {
            let custom: Vec<&str> = assignment.actions.iter().map(String::as_str).collect();
            let actions = built_in(&assignment.role).unwrap_or(&custom);
            actions.iter().any(|p| action_matches(p, action))
        }
    })
}

/// Who is calling: nobody in particular in a world without principals (today's single client
/// may do everything), else the principal the token was issued to, if it is one.
pub(crate) enum Caller<'w> {
    Anyone,
    Principal(&'w Principal),
    /// A client id the world does not list (a managed identity without roles, say): no role.
    Unknown(String),
}

impl<'w> Caller<'w> {
    pub(crate) fn of(world: &'w World, client_id: Option<&str>) -> Caller<'w> {
        if world.principals.is_empty() {
            return Caller::Anyone;
        }
        let client_id = client_id.unwrap_or_default();
        match world
            .principals
            .iter()
            .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
        {
            Some(principal) => Caller::Principal(principal),
            None => Caller::Unknown(client_id.to_owned()),
        }
    }

    pub(crate) fn allows(&self, action: &str, scope: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Principal(p) => allows(p, action, scope),
            Caller::Unknown(_) => false,
        }
    }

    /// The actions of each role assignment that applies at `scope` (the world's one client:
    /// everything).
    pub(crate) fn actions_at(&self, scope: &str) -> Vec<Vec<String>> {
        match self {
            Caller::Anyone => vec![vec!["*".to_owned()]],
            Caller::Unknown(_) => Vec::new(),
            Caller::Principal(p) => p
                .roles
                .iter()
                .filter(|a| scope_within(scope, &a.scope))
                .map(|a| match built_in(&a.role) {
                    Some(actions) => actions.iter().map(|x| (*x).to_owned()).collect(),
                    None => a.actions.clone(),
                })
                .collect(),
        }
    }

    /// ARM's 403 for `action` on `scope`.
    pub(crate) fn refusal(&self, action: &str, scope: &str) -> Reply {
        let (client, object) = match self {
            Caller::Principal(p) => (p.client_id.as_str(), p.object_id()),
            Caller::Unknown(id) => (id.as_str(), id.as_str()),
            Caller::Anyone => ("", ""),
        };
        Reply::arm_error(
            403,
            "AuthorizationFailed",
            &format!(
                "The client '{client}' with object id '{object}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        )
    }
}

/// The action a request needs and the scope ARM checks it on; `None` for what is not checked
/// (operation status) or is filtered instead of refused (the resource group list).
pub(crate) fn requirement(route: &Route, path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let upto = |n: usize| format!("/{}", segs[..n.min(segs.len())].join("/"));
    // A list's scope ends at the provider namespace; a resource's is its id; an action's is the
    // resource it acts on.
    let list_scope = || {
        let at = segs
            .iter()
            .position(|s| s.eq_ignore_ascii_case("providers"))
            .map_or(segs.len(), |i| i + 2);
        upto(at)
    };
    let (action, scope) = match route {
        Route::ListVms { .. } => (
            "Microsoft.Compute/virtualMachines/read".to_owned(),
            list_scope(),
        ),
        Route::GetVm { .. } => ("Microsoft.Compute/virtualMachines/read".to_owned(), upto(8)),
        Route::VmInstanceView { .. } => (
            "Microsoft.Compute/virtualMachines/instanceView/read".to_owned(),
            upto(8),
        ),
        Route::BootDiagnostics { .. } => (
            "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action".to_owned(),
            upto(8),
        ),
        Route::VmAction { action, .. } => (
            format!(
                "Microsoft.Compute/virtualMachines/{}/action",
                VmAction::as_str(*action)
            ),
            upto(8),
        ),
        // "Run scripts in your Windows VM by using action Run Commands": invoking one needs
        // `Microsoft.Compute/virtualMachines/runCommand/action` (Virtual Machine Contributor
        // and above; Reader has only `*/read`).
        Route::RunCommand { .. } => (
            "Microsoft.Compute/virtualMachines/runCommand/action".to_owned(),
            upto(8),
        ),
        Route::ResourceHealth { .. } => (
            "Microsoft.ResourceHealth/availabilityStatuses/read".to_owned(),
            upto(segs.len()),
        ),
        Route::ListHealth { .. } => (
            "Microsoft.ResourceHealth/availabilityStatuses/read".to_owned(),
            list_scope(),
        ),
        Route::ListNics { .. } => (
            "Microsoft.Network/networkInterfaces/read".to_owned(),
            list_scope(),
        ),
        Route::GetNic { .. } => (
            "Microsoft.Network/networkInterfaces/read".to_owned(),
            upto(8),
        ),
        Route::EffectiveNsgs { .. } => (
            "Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action".to_owned(),
            upto(8),
        ),
        Route::ListPublicIps { .. } => (
            "Microsoft.Network/publicIPAddresses/read".to_owned(),
            list_scope(),
        ),
        Route::ListBastions { .. } => (
            "Microsoft.Network/bastionHosts/read".to_owned(),
            list_scope(),
        ),
        Route::GetPublicIp { .. } => (
            "Microsoft.Network/publicIPAddresses/read".to_owned(),
            upto(8),
        ),
        Route::GetVnet { .. } => (
            "Microsoft.Network/virtualNetworks/read".to_owned(),
            upto(8),
        ),
        Route::GetSubnet { .. } => (
            "Microsoft.Network/virtualNetworks/subnets/read".to_owned(),
            upto(10),
        ),
        Route::GetNsg { .. } => (
            "Microsoft.Network/networkSecurityGroups/read".to_owned(),
            upto(8),
        ),
        Route::ListJitPolicies { .. } => (
            "Microsoft.Security/locations/jitNetworkAccessPolicies/read".to_owned(),
            list_scope(),
        ),
        Route::InitiateJit { .. } => (
            "Microsoft.Security/locations/jitNetworkAccessPolicies/initiate/action".to_owned(),
            upto(10),
        ),
        Route::EffectiveAdminRules { .. } => (
            "Microsoft.Network/virtualNetworks/listNetworkManagerEffectiveSecurityAdminRules/action"
                .to_owned(),
            upto(8),
        ),
        Route::ListExtensions { .. } | Route::GetExtension { .. } => (
            "Microsoft.Compute/virtualMachines/extensions/read".to_owned(),
            upto(segs.len()),
        ),
        Route::PutExtension { .. } => (
            "Microsoft.Compute/virtualMachines/extensions/write".to_owned(),
            upto(10),
        ),
        Route::GetSecurityRule { .. } => (
            "Microsoft.Network/networkSecurityGroups/securityRules/read".to_owned(),
            upto(10),
        ),
        Route::PutSecurityRule { .. } => (
            "Microsoft.Network/networkSecurityGroups/securityRules/write".to_owned(),
            upto(10),
        ),
        Route::GetRouteTable { .. } => ("Microsoft.Network/routeTables/read".to_owned(), upto(8)),
        Route::ListRoutes { .. } | Route::GetRouteEntry { .. } => (
            "Microsoft.Network/routeTables/routes/read".to_owned(),
            upto(segs.len()),
        ),
        Route::DeleteRouteEntry { .. } => (
            "Microsoft.Network/routeTables/routes/delete".to_owned(),
            upto(10),
        ),
        Route::EffectiveRouteTable { .. } => (
            "Microsoft.Network/networkInterfaces/effectiveRouteTable/action".to_owned(),
            upto(8),
        ),
        Route::ListNetworkWatchers { .. } => (
            "Microsoft.Network/networkWatchers/read".to_owned(),
            list_scope(),
        ),
        Route::IpFlowVerify { .. } => (
            "Microsoft.Network/networkWatchers/ipFlowVerify/action".to_owned(),
            upto(8),
        ),
        Route::NextHop { .. } => (
            "Microsoft.Network/networkWatchers/nextHop/action".to_owned(),
            upto(8),
        ),
        // A caller may always list its own permissions; the Activity Log is authorised on the
        // scope its filter names (`sim/activity.rs`).
        Route::ListResourceGroups { .. }
        | Route::ActivityLog { .. }
        | Route::ListPermissions { .. }
        | Route::NetworkOperationResult { .. }
        | Route::ComputeOperation { .. }
        | Route::NetworkOperation { .. }
        | Route::Unknown => return None,
    };
    Some((action, scope))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::RoleAssignment;

    fn principal(role: &str, scope: &str) -> Principal {
        Principal {
            client_id: "c".into(),
            client_secret: "s".into(),
            object_id: None,
            roles: vec![RoleAssignment {
                role: role.into(),
                actions: vec![],
                scope: scope.into(),
            }],
            name: None,
        }
    }

    #[test]
    fn roles_grant_their_actions_below_their_scope() {
        let rg = "/subscriptions/s/resourceGroups/rg-web";
        let vm = "/subscriptions/s/resourceGroups/RG-WEB/providers/Microsoft.Compute/virtualMachines/web-01";
        let reader = principal("Reader", rg);
        assert!(allows(
            &reader,
            "Microsoft.Compute/virtualMachines/read",
            vm
        ));
        assert!(!allows(
            &reader,
            "Microsoft.Compute/virtualMachines/restart/action",
            vm
        ));
        assert!(!allows(
            &reader,
            "Microsoft.Compute/virtualMachines/read",
            "/subscriptions/s/providers/Microsoft.Compute"
        ));
        assert!(!allows(
            &reader,
            "Microsoft.Compute/virtualMachines/read",
            "/subscriptions/s/resourceGroups/rg-web2"
        ));
        let vmc = principal("Virtual Machine Contributor", "/subscriptions/s");
        assert!(allows(
            &vmc,
            "Microsoft.Compute/virtualMachines/restart/action",
            vm
        ));
        assert!(!allows(
            &vmc,
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            vm
        ));
        let net = principal("Network Contributor", rg);
        assert!(allows(
            &net,
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            vm
        ));
        assert!(!allows(&net, "Microsoft.Compute/virtualMachines/read", vm));
    }

    #[test]
    fn a_refusal_is_azures_403_naming_client_action_and_scope() {
        let mut p = principal("Reader", "/subscriptions/s/resourceGroups/rg");
        p.object_id = Some("o".into());
        let reply = Caller::Principal(&p)
            .refusal("Microsoft.Compute/virtualMachines/read", "/subscriptions/s");
        assert_eq!(reply.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["error"]["code"], "AuthorizationFailed");
        assert_eq!(
            body["error"]["message"],
            "The client 'c' with object id 'o' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/s' or the scope is invalid. If access was recently granted, please refresh your credentials."
        );
    }

    #[test]
    fn a_world_file_gives_principals_their_roles() {
        let text = r#"
[[principal]]
client_id = "00000000-0000-0000-0000-00000000000b"
client_secret = "group-scoped-secret"
role = [
  { role = "Virtual Machine Contributor", scope = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web" },
  { actions = ["*/read"], scope = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-api" },
]
"#;
        let world = World::from_toml_str(text).expect("the README's example parses");
        let p = &world.principals[0];
        assert!(allows(
            p,
            "Microsoft.Network/networkInterfaces/read",
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-api"
        ));
        let unknown = text.replace("Virtual Machine Contributor", "Owner");
        let error = World::from_toml_str(&unknown).expect_err("unknown role");
        assert!(
            error.to_string().contains("unknown role 'Owner'"),
            "{error}"
        );
    }

    #[test]
    fn assignments_are_validated() {
        let ok = |role: &str, scope: &str| crate::sim::roles::validate(role, &[], scope);
        assert!(ok("Reader", "/subscriptions/s").is_ok());
        assert!(ok("reader", "/subscriptions/s/resourceGroups/rg").is_ok());
        assert!(ok("Owner-ish", "/subscriptions/s").is_err());
        assert!(ok("Reader", "/subscriptions/s/resourceGroups").is_err());
    }
}
