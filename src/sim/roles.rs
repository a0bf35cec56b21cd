//! The built-in Azure roles the simulator models (their sources are in `rbac.rs`) and the check
//! that a world's role assignment names one. Plain data: the world validates against it and
//! `rbac` evaluates with it, so neither needs the other for this.

/// The built-in roles the simulator knows, with the actions (of those its routes need) they
/// grant.
const BUILT_IN: &[(&str, &[&str])] = &[
    ("Reader", &["*/read"]),
    ("Contributor", &["*"]),
    (
        "Virtual Machine Contributor",
        &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/availabilitySets/*",
            "Microsoft.Compute/locations/*",
            "Microsoft.Compute/virtualMachines/*",
            "Microsoft.Compute/disks/read",
            "Microsoft.Network/locations/*",
            "Microsoft.Network/networkInterfaces/*",
            "Microsoft.Network/networkSecurityGroups/join/action",
            "Microsoft.Network/networkSecurityGroups/read",
            "Microsoft.Network/publicIPAddresses/join/action",
            "Microsoft.Network/publicIPAddresses/read",
            "Microsoft.Network/virtualNetworks/read",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Storage/storageAccounts/read",
        ],
    ),
    (
        "Network Contributor",
        &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Network/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
    ),
];

/// A role assignment names a known built-in role or gives actions, at a subscription or
/// resource-group scope.
pub(super) fn validate(role: &str, actions: &[String], scope: &str) -> anyhow::Result<()> {
    if role.is_empty() == actions.is_empty() {
        anyhow::bail!(
            "a role assignment at '{}' needs either a built-in role name or a custom role's actions",
            scope
        );
    }
    if !role.is_empty() && built_in(role).is_none() {
        let known: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        anyhow::bail!(
            "unknown role '{}' (the simulator models {})",
            role,
            known.join(", ")
        );
    }
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    let valid = match segs.as_slice() {
        [s, _] => s.eq_ignore_ascii_case("subscriptions"),
        [s, _, g, _] => {
            s.eq_ignore_ascii_case("subscriptions") && g.eq_ignore_ascii_case("resourceGroups")
        }
        _ => false,
    };
    if !valid {
        anyhow::bail!(
            "scope '{}' is neither /subscriptions/ID nor /subscriptions/ID/resourceGroups/NAME",
            scope
        );
    }
    Ok(())
}

pub(super) fn built_in(role: &str) -> Option<&'static [&'static str]> {
    BUILT_IN
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(role))
        .map(|(_, actions)| *actions)
}
