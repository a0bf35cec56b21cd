//! Finding the VM a person means: `name`, `resource-group/name`, or a full resource id.

use super::{Arm, ArmError, ResourceId};
use futures::StreamExt;
use serde::Serialize;

/// A VM we have found: enough to address every ARM call about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRef {
    pub name: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub id: String,
}

impl VmRef {
    /// A VM known only by its stored resource id (and display name).
    pub fn from_stored(id: &str, name: &str) -> VmRef {
        let parsed = ResourceId::parse(id).ok();
        VmRef {
            name: name.to_string(),
            resource_group: parsed
                .as_ref()
                .map(|p| p.resource_group.clone())
                .unwrap_or_default(),
            subscription_id: parsed.map(|p| p.subscription_id).unwrap_or_default(),
            id: id.to_string(),
        }
    }

    pub fn from_id(id: &ResourceId) -> VmRef {
        VmRef {
            name: id.name.clone(),
            resource_group: id.resource_group.clone(),
            subscription_id: id.subscription_id.clone(),
            id: id.to_string(),
        }
    }
}

/// A VM as a subscription's VM list shows it (no instance view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSummary {
    pub vm: VmRef,
    pub location: String,
    pub windows: Option<bool>,
    pub nic_ids: Vec<String>,
    pub boot_diagnostics_enabled: bool,
}

impl VmSummary {
    /// A VM not taken from a list: the check reads its NIC, OS and boot-diagnostics setting
    /// from the VM itself, so no subscription needs listing again.
    pub fn unlisted(vm: VmRef) -> VmSummary {
        VmSummary {
            vm,
            location: String::new(),
            windows: None,
            nic_ids: Vec::new(),
            boot_diagnostics_enabled: false,
        }
    }
}

/// What a person typed, validated before any call to Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmQuery {
    Name(String),
    InGroup {
        resource_group: String,
        name: String,
    },
    Id(ResourceId),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{input} is a classic (Azure Service Manager) VM. Azure retired classic VMs in 2023; this runbook covers Azure Resource Manager VMs. Migrate it, or look for its Resource Manager replacement")]
    Classic { input: String },
    #[error("no VM named {name} in {scope}{}", suggestions_text(.suggestions))]
    NotFound {
        name: String,
        scope: String,
        suggestions: Vec<VmRef>,
    },
    #[error("{} VMs are named {name}; say which one with RESOURCE-GROUP/NAME or the full id:\n{}", .candidates.len(), candidates_text(.candidates))]
    Ambiguous {
        name: String,
        candidates: Vec<VmRef>,
    },
    #[error(transparent)]
    Arm(#[from] ArmError),
}

fn suggestions_text(suggestions: &[VmRef]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let names: Vec<String> = suggestions
        .iter()
        .map(|v| format!("{} ({})", v.name, v.resource_group))
        .collect();
    format!(". Did you mean: {}?", names.join(", "))
}

fn candidates_text(candidates: &[VmRef]) -> String {
    candidates
        .iter()
        .map(|v| {
            format!(
                "  {}/{}  (subscription {})",
                v.resource_group, v.name, v.subscription_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Azure's naming rules for a VM resource: 1-64 characters of letters, digits, `_`, `.`, `-`;
/// starts with a letter or digit; ends with a letter, digit or `_`.
pub fn validate_vm_name(name: &str) -> Result<(), ResolveError> {
    static RULE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RULE.get_or_init(|| {
        regex::Regex::new(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?$")
            .expect("static regex")
    });
    if re.is_match(name) {
        Ok(())
    } else {
        Err(ResolveError::InvalidName(format!(
            "{name:?} is not a valid Azure VM name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit and ending with a letter, digit or '_'"
        )))
    }
}

/// Azure's naming rules for a resource group.
pub fn validate_group(group: &str) -> Result<(), ResolveError> {
    let ok = !group.is_empty()
        && group.chars().count() <= 90
        && !group.ends_with('.')
        && group
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ResolveError::InvalidName(format!(
            "{group:?} is not a valid resource group name: use up to 90 letters, digits, '_', '-', '.', '(' or ')', not ending with '.'"
        )))
    }
}

impl VmQuery {
    pub fn parse(input: &str) -> Result<VmQuery, ResolveError> {
        let input = input.trim();
        if input.starts_with('/') {
            if input
                .to_ascii_lowercase()
                .contains("/microsoft.classiccompute/")
            {
                return Err(ResolveError::Classic {
                    input: input.to_string(),
                });
            }
            let id =
                ResourceId::parse(input).map_err(|e| ResolveError::InvalidName(e.to_string()))?;
            if !id.namespace.eq_ignore_ascii_case("Microsoft.Compute")
                || !id.resource_type.eq_ignore_ascii_case("virtualMachines")
            {
                return Err(ResolveError::InvalidName(format!(
                    "{input} is a {}/{} id, not a virtual machine (Microsoft.Compute/virtualMachines)",
                    id.namespace, id.resource_type
                )));
            }
            validate_vm_name(&id.name)?;
            return Ok(VmQuery::Id(id));
        }
        match input.split_once('/') {
            Some((group, name)) => {
                validate_group(group)?;
                validate_vm_name(name)?;
                Ok(VmQuery::InGroup {
                    resource_group: group.to_string(),
                    name: name.to_string(),
                })
            }
            None => {
                validate_vm_name(input)?;
                Ok(VmQuery::Name(input.to_string()))
            }
        }
    }
}

/// Levenshtein distance, case-insensitive; names are short so the quadratic table is fine.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// Up to five names closest to `name`: close in spelling, or containing it.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a VmRef>) -> Vec<VmRef> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &VmRef)> = candidates
        .filter_map(|vm| {
            let d = distance(name, &vm.name);
            let contains =
                vm.name.to_lowercase().contains(&lower) || lower.contains(&vm.name.to_lowercase());
            let limit = (name.chars().count() / 3).max(2);
            (d <= limit || contains).then_some((if contains { d.min(1) } else { d }, vm))
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored
        .into_iter()
        .take(5)
        .map(|(_, vm)| vm.clone())
        .collect()
}

/// Pick the VM(s) a query names from a VM list.
pub fn pick(query: &VmQuery, vms: &[VmSummary], scope: &str) -> Result<VmSummary, ResolveError> {
    let (name, group) = match query {
        VmQuery::Name(name) => (name, None),
        VmQuery::InGroup {
            resource_group,
            name,
        } => (name, Some(resource_group)),
        VmQuery::Id(id) => (&id.name, Some(&id.resource_group)),
    };
    let matches: Vec<&VmSummary> = vms
        .iter()
        .filter(|s| s.vm.name.eq_ignore_ascii_case(name))
        .filter(|s| group.is_none_or(|g| s.vm.resource_group.eq_ignore_ascii_case(g)))
        .filter(|s| match query {
            VmQuery::Id(id) => {
                s.vm.subscription_id
                    .eq_ignore_ascii_case(&id.subscription_id)
            }
            _ => true,
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ResolveError::NotFound {
            name: match group {
                Some(g) => format!("{g}/{name}"),
                None => name.clone(),
            },
            scope: scope.to_string(),
            suggestions: closest(name, vms.iter().map(|s| &s.vm)),
        }),
        many => {
            let mut candidates: Vec<VmRef> = many.iter().map(|s| s.vm.clone()).collect();
            candidates.sort_by(|a, b| {
                (&a.subscription_id, &a.resource_group)
                    .cmp(&(&b.subscription_id, &b.resource_group))
            });
            Err(ResolveError::Ambiguous {
                name: name.clone(),
                candidates,
            })
        }
    }
}

impl Arm {
    /// Every VM of a subscription, following `nextLink` pages.
    pub async fn list_vms(&self, subscription_id: &str) -> Result<Vec<VmSummary>, ArmError> {
        let what = format!("listing the VMs of subscription {subscription_id}");
        let mut pages = self
            .compute
            .virtual_machines_client()
            .list_all(subscription_id)
            .into_stream();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, &what))?;
            for vm in page.value {
                if let Some(summary) = summarise(vm) {
                    out.push(summary);
                }
            }
        }
        Ok(out)
    }

    /// Resolve a query against the given subscriptions (listed concurrently).
    pub async fn resolve(
        &self,
        query: &VmQuery,
        subscriptions: &[String],
    ) -> Result<VmSummary, ResolveError> {
        let subscriptions: Vec<String> = match query {
            VmQuery::Id(id) => vec![id.subscription_id.clone()],
            _ => subscriptions.to_vec(),
        };
        if subscriptions.is_empty() {
            return Err(ResolveError::Arm(ArmError::Config(
                "no subscription to search: set AZURE_SUBSCRIPTION_ID (comma-separated for several), pass --subscription, or give the VM's full resource id".into(),
            )));
        }
        let lists = futures::future::join_all(subscriptions.iter().map(|s| self.list_vms(s))).await;
        let mut all = Vec::new();
        for list in lists {
            all.extend(list?);
        }
        pick(query, &all, &scope_text(&subscriptions))
    }
}

/// "subscription X" or "subscriptions X, Y", for not-found messages.
pub(crate) fn scope_text(subscriptions: &[String]) -> String {
    if subscriptions.len() == 1 {
        format!("subscription {}", subscriptions[0])
    } else {
        format!("subscriptions {}", subscriptions.join(", "))
    }
}

pub(crate) fn summarise(
    vm: azure_mgmt_compute::package_2024_07_01::models::VirtualMachine,
) -> Option<VmSummary> {
    let id = ResourceId::parse(vm.resource.id.as_deref()?).ok()?;
    let properties = vm.properties.unwrap_or_default();
    let windows = properties
        .storage_profile
        .as_ref()
        .and_then(|s| s.os_disk.as_ref())
        .and_then(|d| d.os_type.as_ref())
        .map(|t| {
            matches!(
                t,
                azure_mgmt_compute::package_2024_07_01::models::os_disk::OsType::Windows
            )
        });
    Some(VmSummary {
        vm: VmRef::from_id(&id),
        location: vm.resource.location,
        windows,
        nic_ids: super::read::nic_ids(properties.network_profile.as_ref()),
        boot_diagnostics_enabled: properties
            .diagnostics_profile
            .as_ref()
            .and_then(|d| d.boot_diagnostics.as_ref())
            .and_then(|b| b.enabled)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, group: &str, sub: &str) -> VmSummary {
        VmSummary {
            vm: VmRef {
                name: name.into(),
                resource_group: group.into(),
                subscription_id: sub.into(),
                id: format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"),
            },
            location: "westeurope".into(),
            windows: Some(true),
            nic_ids: vec![],
            boot_diagnostics_enabled: true,
        }
    }

    #[test]
    fn queries_parse_and_validate() {
        assert_eq!(
            VmQuery::parse("web-01").unwrap(),
            VmQuery::Name("web-01".into())
        );
        assert_eq!(
            VmQuery::parse("rg-web/web-01").unwrap(),
            VmQuery::InGroup {
                resource_group: "rg-web".into(),
                name: "web-01".into()
            }
        );
        assert!(matches!(
            VmQuery::parse("/subscriptions/1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01"),
            Ok(VmQuery::Id(_))
        ));
        for bad in [
            "-web",
            "web-",
            "web 01",
            "",
            "a/b/c",
            "x".repeat(65).as_str(),
            "web;rm",
        ] {
            assert!(VmQuery::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            VmQuery::parse("/subscriptions/1/resourceGroups/rg/providers/Microsoft.ClassicCompute/virtualMachines/old"),
            Err(ResolveError::Classic { .. })
        ));
        assert!(matches!(
            VmQuery::parse("/subscriptions/1/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic"),
            Err(ResolveError::InvalidName(_))
        ));
    }

    #[test]
    fn picking_finds_one_many_or_suggests() {
        let vms = vec![
            vm("web-01", "rg-web", "1"),
            vm("web-02", "rg-web", "1"),
            vm("api-01", "rg-api-east", "1"),
            vm("api-01", "rg-api-west", "2"),
        ];
        assert_eq!(
            pick(&VmQuery::Name("WEB-01".into()), &vms, "s")
                .unwrap()
                .vm
                .name,
            "web-01"
        );
        match pick(&VmQuery::Name("api-01".into()), &vms, "s") {
            Err(ResolveError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 2),
            other => panic!("expected ambiguity, got {other:?}"),
        }
        let one = pick(
            &VmQuery::InGroup {
                resource_group: "rg-api-west".into(),
                name: "api-01".into(),
            },
            &vms,
            "s",
        )
        .unwrap();
        assert_eq!(one.vm.subscription_id, "2");
        match pick(&VmQuery::Name("web-03".into()), &vms, "s") {
            Err(ResolveError::NotFound { suggestions, .. }) => {
                let names: Vec<_> = suggestions.iter().map(|v| v.name.as_str()).collect();
                assert_eq!(names, vec!["web-01", "web-02"]);
            }
            other => panic!("expected not found, got {other:?}"),
        }
    }
}
