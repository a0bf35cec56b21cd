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

/// Levenshtein distance (`strsim`), case-insensitive.
fn distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(&a.to_lowercase(), &b.to_lowercase())
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

/// A subscription whose VM list Azure refused this principal (403 `AuthorizationFailed`), and
/// the resource groups whose VMs were listed instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub subscription_id: String,
    /// The action and scope Azure named in its refusal.
    pub action: String,
    pub scope: String,
    /// The resource groups ARM listed for the principal, whose VMs it could list.
    pub groups: Vec<String>,
}

/// What a principal can see of one subscription's VMs.
#[derive(Debug, Clone, Default)]
pub struct Visible {
    pub vms: Vec<VmSummary>,
    pub limited: Option<Limited>,
}

/// `(action, scope)` from an `AuthorizationFailed` message ("... does not have authorization
/// to perform action 'A' over scope 'S' or the scope is invalid ...").
pub fn refused_action(error: &ArmError) -> Option<(String, String)> {
    let ArmError::Forbidden { message, .. } = error else {
        return None;
    };
    if !is_authorization_failed(error) {
        return None;
    }
    let quoted = |after: &str| -> Option<String> {
        let rest = &message[message.find(after)? + after.len()..];
        Some(rest[..rest.find('\'')?].to_string())
    };
    Some((quoted("action '")?, quoted("scope '")?))
}

/// A 403 `AuthorizationFailed`: the principal lacks a role for what it asked.
pub fn is_authorization_failed(error: &ArmError) -> bool {
    matches!(error, ArmError::Forbidden { code, .. } if code == "AuthorizationFailed")
}

/// Where a name was looked for, for a not-found message: the subscriptions, and for each one
/// whose list Azure refused, which action on which scope and the groups searched instead.
pub fn searched_text(subscriptions: &[String], limited: &[Limited]) -> String {
    if limited.is_empty() {
        return scope_text(subscriptions);
    }
    let mut parts: Vec<String> = Vec::new();
    for sub in subscriptions {
        match limited
            .iter()
            .find(|l| l.subscription_id.eq_ignore_ascii_case(sub))
        {
            None => parts.push(format!("subscription {sub}")),
            Some(l) => parts.push(format!(
                "resource group{} {} of subscription {sub}",
                if l.groups.len() == 1 { "" } else { "s" },
                l.groups.join(", ")
            )),
        }
    }
    let refusals: Vec<String> = limited
        .iter()
        .map(|l| format!("'{}' over scope '{}'", l.action, l.scope))
        .collect();
    format!(
        "{}; Azure refused rdp-doctor's identity {} (AuthorizationFailed), so the rest was not searched: give the VM as RESOURCE-GROUP/NAME or its full id (read directly, no list needed), or grant the identity Reader on the subscription",
        parts.join(", "),
        refusals.join(" and ")
    )
}

impl Arm {
    /// Every VM of a subscription, following `nextLink` pages.
    pub async fn list_vms(&self, subscription_id: &str) -> Result<Vec<VmSummary>, ArmError> {
        let what = format!("listing the VMs of subscription {subscription_id}");
        let pages = self
            .compute
            .virtual_machines_client()
            .list_all(subscription_id)
            .into_stream();
        self.collect_vms(pages, &what).await
    }

    /// Every VM of a resource group, following `nextLink` pages.
    pub async fn list_group_vms(
        &self,
        subscription_id: &str,
        resource_group: &str,
    ) -> Result<Vec<VmSummary>, ArmError> {
        let what = format!("listing the VMs of resource group {resource_group}");
        let pages = self
            .compute
            .virtual_machines_client()
            .list(resource_group, subscription_id)
            .into_stream();
        self.collect_vms(pages, &what).await
    }

    async fn collect_vms<S>(&self, mut pages: S, what: &str) -> Result<Vec<VmSummary>, ArmError>
    where
        S: futures::Stream<
                Item = azure_core::Result<
                    azure_mgmt_compute::package_2024_07_01::models::VirtualMachineListResult,
                >,
            > + Unpin,
    {
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, what))?;
            out.extend(page.value.into_iter().filter_map(summarise));
        }
        Ok(out)
    }

    /// [`Arm::list_visible_vms`] of every subscription at once, joined: the VMs, and the
    /// subscriptions whose list was limited to some resource groups.
    pub(crate) async fn list_all_visible_vms(
        &self,
        subscriptions: &[String],
    ) -> Result<(Vec<VmSummary>, Vec<Limited>), ArmError> {
        let lists =
            futures::future::join_all(subscriptions.iter().map(|s| self.list_visible_vms(s))).await;
        let (mut vms, mut limited) = (Vec::new(), Vec::new());
        for list in lists {
            let list = list?;
            vms.extend(list.vms);
            limited.extend(list.limited);
        }
        Ok((vms, limited))
    }

    /// The VMs of a subscription the principal can see: its list, or, when Azure refuses that
    /// list (a role on a few resource groups only), the lists of the resource groups ARM lists
    /// for the principal. A group whose VM list is refused too is skipped.
    pub async fn list_visible_vms(&self, subscription_id: &str) -> Result<Visible, ArmError> {
        let refusal = match self.list_vms(subscription_id).await {
            Ok(vms) => return Ok(Visible { vms, limited: None }),
            Err(e) if is_authorization_failed(&e) => e,
            Err(e) => return Err(e),
        };
        // Azure's message names the action and scope; a message cut short names what the list
        // asks for.
        let refused = refused_action(&refusal).unwrap_or_else(|| {
            (
                "Microsoft.Compute/virtualMachines/read".to_string(),
                format!("/subscriptions/{subscription_id}/providers/Microsoft.Compute"),
            )
        });
        let groups = self.list_resource_groups(subscription_id).await?;
        let lists = futures::future::join_all(
            groups
                .iter()
                .map(|g| self.list_group_vms(subscription_id, g)),
        )
        .await;
        let mut vms = Vec::new();
        let mut searched = Vec::new();
        for (group, list) in groups.into_iter().zip(lists) {
            match list {
                Ok(list) => {
                    vms.extend(list);
                    searched.push(group);
                }
                Err(e) if is_authorization_failed(&e) => {}
                Err(e) => return Err(e),
            }
        }
        // No group to look in: Azure's refusal is the whole story.
        if searched.is_empty() {
            return Err(refusal);
        }
        Ok(Visible {
            vms,
            limited: Some(Limited {
                subscription_id: subscription_id.to_string(),
                action: refused.0,
                scope: refused.1,
                groups: searched,
            }),
        })
    }

    /// The names of the subscription's resource groups ARM lists for this principal (those it
    /// has a role on, or all of them with a role on the subscription): `ResourceGroups_List`,
    /// `GET /subscriptions/{id}/resourcegroups?api-version=2021-04-01`.
    pub async fn list_resource_groups(
        &self,
        subscription_id: &str,
    ) -> Result<Vec<String>, ArmError> {
        let what = format!("listing the resource groups of subscription {subscription_id}");
        let groups = self
            .get_values(
                &format!("subscriptions/{subscription_id}/resourcegroups?api-version=2021-04-01"),
                &what,
            )
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| g["name"].as_str().map(str::to_string))
            .collect())
    }

    /// One VM read directly (`GET virtualMachines/{name}`), without listing anything; `None`
    /// when Azure says it (or its resource group) does not exist.
    pub async fn read_vm_summary(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<Option<VmSummary>, ArmError> {
        let what = format!("reading VM {resource_group}/{name}");
        match self
            .compute
            .virtual_machines_client()
            .get(resource_group, name, subscription_id)
            .await
        {
            Ok(vm) => Ok(summarise(vm)),
            Err(e) => match self.map_err(e, &what) {
                ArmError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// A VM named by resource group (in each subscription) or by id: read directly, never
    /// from a subscription's list, so a principal with a role on that group alone finds it.
    async fn read_named(
        &self,
        subscriptions: &[String],
        group: &str,
        name: &str,
    ) -> Result<VmSummary, ResolveError> {
        if subscriptions.is_empty() {
            return Err(no_subscription());
        }
        let reads = futures::future::join_all(
            subscriptions
                .iter()
                .map(|s| self.read_vm_summary(s, group, name)),
        )
        .await;
        let mut found = Vec::new();
        let mut error = None;
        for read in reads {
            match read {
                Ok(Some(vm)) => found.push(vm),
                Ok(None) => {}
                Err(e) => error = error.or(Some(e)),
            }
        }
        match (found.len(), error) {
            (1, _) => Ok(found.remove(0)),
            (0, Some(e)) => Err(ResolveError::Arm(e)),
            (0, None) => Err(ResolveError::NotFound {
                name: format!("{group}/{name}"),
                scope: scope_text(subscriptions),
                suggestions: Vec::new(),
            }),
            _ => Err(ResolveError::Ambiguous {
                name: name.to_string(),
                candidates: found.into_iter().map(|s| s.vm).collect(),
            }),
        }
    }

    /// Resolve a query against the given subscriptions: a resource group and name, or an id,
    /// by reading the VM; a bare name from the subscriptions' lists (listed concurrently), or
    /// what the principal may list of them.
    pub async fn resolve(
        &self,
        query: &VmQuery,
        subscriptions: &[String],
    ) -> Result<VmSummary, ResolveError> {
        match query {
            VmQuery::Id(id) => {
                let subscription = [id.subscription_id.clone()];
                return self
                    .read_named(&subscription, &id.resource_group, &id.name)
                    .await;
            }
            VmQuery::InGroup {
                resource_group,
                name,
            } => return self.read_named(subscriptions, resource_group, name).await,
            VmQuery::Name(_) => {}
        }
        if subscriptions.is_empty() {
            return Err(no_subscription());
        }
        let (all, limited) = self.list_all_visible_vms(subscriptions).await?;
        pick(query, &all, &searched_text(subscriptions, &limited))
    }
}

fn no_subscription() -> ResolveError {
    ResolveError::Arm(ArmError::Config(
        "no subscription to search: set AZURE_SUBSCRIPTION_ID (comma-separated for several), pass --subscription, or give the VM's full resource id".into(),
    ))
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
        boot_diagnostics_enabled: super::read::boot_diagnostics_enabled(&properties),
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
    fn closest_names_are_close_in_spelling_or_contain_the_name() {
        let vms = [
            vm("web-01", "rg", "1"),
            vm("WEB-10", "rg", "1"),
            vm("web-frontend-01", "rg", "1"),
            vm("db-01", "rg", "1"),
            vm("jumpbox", "rg", "1"),
        ];
        let names = |name: &str| -> Vec<String> {
            closest(name, vms.iter().map(|s| &s.vm))
                .into_iter()
                .map(|vm| vm.name)
                .collect()
        };
        // One edit (case ignored) first, then two edits; ties by name; "db-01" is 3 edits off.
        assert_eq!(names("Web-02"), ["web-01", "WEB-10"]);
        // Containing the name counts as one edit, whatever the length difference.
        assert_eq!(names("frontend"), ["web-frontend-01"]);
        assert_eq!(names("jumpbx"), ["jumpbox"]);
        assert!(names("sql-server-77").is_empty());
        // Longer names allow more edits, a third of their length: 3 here, refused for "Web-02".
        assert_eq!(distance("xeb-frontend-9", "web-frontend-01"), 3);
        assert_eq!(names("xeb-frontend-9"), ["web-frontend-01"]);
        let many: Vec<VmSummary> = (0..9).map(|i| vm(&format!("app-{i}"), "rg", "1")).collect();
        assert_eq!(closest("app-x", many.iter().map(|s| &s.vm)).len(), 5);
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
