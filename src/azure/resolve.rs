//! Finding the VM a person means (`name`, `resource-group/name`, or a full resource id) in the
//! subscriptions' VM lists.

use super::{Arm, ArmError};
use crate::domain::{candidates_text, suggestions_text, ResourceId};
pub use crate::domain::{QueryError, VmQuery, VmRef, VmSummary};
use futures::StreamExt;

/// Why a query found no single VM.
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

impl From<QueryError> for ResolveError {
    fn from(e: QueryError) -> ResolveError {
        match e {
            QueryError::InvalidName(text) => ResolveError::InvalidName(text),
            QueryError::Classic { input } => ResolveError::Classic { input },
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
            Err(QueryError::Classic { .. })
        ));
        assert!(matches!(
            VmQuery::parse("/subscriptions/1/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic"),
            Err(QueryError::InvalidName(_))
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
