//! Reads for a sweep: a resource group's (or a subscription's) VMs, NICs, public IPs and
//! Resource Health in a handful of list calls, so that checking 500 VMs costs about two ARM
//! requests per VM (the effective security rules) instead of eight.
//!
//! Whatever a list does not hold (a NIC in another resource group, a VM Resource Health does not
//! list, a VM listed without its instance view) is read one by one, as a single check would.

use super::read::{health_facts, listed_nic_facts, public_ip_facts, vm_facts};
use super::resolve::summarise;
use super::{Arm, ArmError, HealthOutcome, ResourceId, VmRef, VmSummary};
use crate::diagnose::nsg::AdminRule;
use crate::diagnose::{AgentFacts, NicFacts, OsType, PublicIpFacts, VmFacts};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::domain::is_subscription_id;

/// Which VMs a sweep checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepScope {
    pub subscription_id: String,
    /// `None`: the whole subscription.
    pub resource_group: Option<String>,
}

impl std::fmt::Display for SweepScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.resource_group {
            Some(rg) => write!(f, "resource group {rg}"),
            None => write!(f, "subscription {}", self.subscription_id),
        }
    }
}

/// One resource group's Resource Health list, read once when the first of its VMs asks;
/// `None` inside when it could not be listed (its VMs read their own).
type GroupHealth =
    futures::future::Shared<futures::future::BoxFuture<'static, Option<Arc<HealthList>>>>;

/// A scope's VMs and what the lists said about them.
#[derive(Default)]
pub struct Fleet {
    /// Every VM in scope, as listed, sorted by name.
    pub vms: Vec<VmSummary>,
    /// By lower-case VM id: facts from the list's instance view.
    facts: HashMap<String, VmFacts>,
    /// By lower-case NIC id.
    nics: HashMap<String, NicFacts>,
    /// By lower-case resource group. Resource Health is listed per resource group (never the
    /// whole subscription, whose list holds every resource it has, disks and all) while the
    /// VMs are checked, so a long list holds up only its own group's health step.
    health: HashMap<String, GroupHealth>,
    /// ARM requests the lists took.
    pub list_requests: u64,
    /// By lower-case virtual network id: its Virtual Network Manager admin rules, read once for
    /// all the VMs of the sweep in it.
    admin_rules: std::sync::Mutex<HashMap<String, AdminRead>>,
    /// By lower-case virtual network id: the Azure Bastion host that reaches it (its own or a
    /// peer's), read once for all the VMs of the sweep without a public IP in it.
    bastions: std::sync::Mutex<HashMap<String, BastionRead>>,
}

/// One virtual network's Bastion host, read once when the first of its VMs asks.
type BastionRead =
    Arc<tokio::sync::OnceCell<Result<Option<crate::diagnose::public_ip::BastionFacts>, ArmError>>>;

/// One virtual network's admin rules, read once when the first of its VMs asks.
type AdminRead = Arc<tokio::sync::OnceCell<Result<Vec<AdminRule>, ArmError>>>;

impl Fleet {
    /// The scope's VMs as listed, with the facts of those listed with their instance view.
    fn from_list(
        listed: Vec<azure_mgmt_compute::package_2024_07_01::models::VirtualMachine>,
    ) -> Fleet {
        let mut fleet = Fleet::default();
        for vm in listed {
            let Some(summary) = summarise(vm.clone()) else {
                continue;
            };
            let has_view = vm
                .properties
                .as_ref()
                .is_some_and(|p| p.instance_view.is_some());
            if has_view {
                let facts = vm_facts(vm);
                // A running VM listed without its guest agent may have a status-only view
                // (lists of large scopes come back so): its own read says whether the agent
                // really is missing.
                let agent_unsaid = facts.is_running() && facts.agent == AgentFacts::Missing;
                if !agent_unsaid {
                    fleet
                        .facts
                        .insert(summary.vm.id.to_ascii_lowercase(), facts);
                }
            }
            fleet.vms.push(summary);
        }
        fleet.vms.sort_by_key(|v| v.vm.name.to_lowercase());
        fleet
    }

    /// Windows by the list's OS disk; a VM whose OS the list does not say is counted as
    /// Windows unless its instance view says Linux (the check itself skips the RDP steps for
    /// Linux).
    pub fn is_windows(&self, vm: &VmSummary) -> bool {
        match vm.windows {
            Some(w) => w,
            None => self
                .vm_facts(&vm.vm.id)
                .is_none_or(|f| f.os != OsType::Linux),
        }
    }

    /// The VM's facts from the list, if the list carried its instance view.
    pub fn vm_facts(&self, vm_id: &str) -> Option<VmFacts> {
        self.facts.get(&vm_id.to_ascii_lowercase()).cloned()
    }

    pub fn nic_facts(&self, nic_id: &str) -> Option<NicFacts> {
        self.nics.get(&nic_id.to_ascii_lowercase()).cloned()
    }

    /// The admin rules of the virtual network of `subnet_id`, read once per virtual network
    /// of the scope.
    pub async fn admin_rules(
        &self,
        arm: &Arm,
        subnet_id: &str,
    ) -> Result<Vec<AdminRule>, ArmError> {
        let key = match super::gates::vnet_of_subnet(subnet_id) {
            Some((sub, rg, vnet)) => format!("{sub}/{rg}/{vnet}").to_ascii_lowercase(),
            None => return arm.effective_admin_rules(subnet_id).await,
        };
        let cell = self
            .admin_rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| arm.effective_admin_rules(subnet_id))
            .await
            .clone()
    }

    /// The Azure Bastion host that reaches the virtual network of `subnet_id` (in it or in a
    /// peered one), read with the network's peerings once per virtual network of the scope.
    pub async fn bastion(
        &self,
        arm: &Arm,
        subnet_id: &str,
    ) -> Result<Option<crate::diagnose::public_ip::BastionFacts>, ArmError> {
        let key = match super::gates::vnet_of_subnet(subnet_id) {
            Some((sub, rg, vnet)) => format!("{sub}/{rg}/{vnet}").to_ascii_lowercase(),
            None => return arm.bastion_for(subnet_id).await,
        };
        let cell = self
            .bastions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| arm.bastion_for(subnet_id))
            .await
            .clone()
    }

    /// The VM's Resource Health from its group's list (read now if no VM of the group asked
    /// yet); `None` when the list could not be read or does not hold the VM.
    pub async fn health(&self, vm: &VmRef) -> Option<HealthOutcome> {
        let group = self.health.get(&vm.resource_group.to_ascii_lowercase())?;
        match &*group.clone().await? {
            HealthList::Unregistered => Some(HealthOutcome::Unregistered),
            HealthList::Statuses(map) => map.get(&vm.id.to_ascii_lowercase()).cloned(),
        }
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("vms", &self.vms)
            .field("facts", &self.facts)
            .field("nics", &self.nics)
            .field("health_groups", &self.health.len())
            .field("list_requests", &self.list_requests)
            .finish()
    }
}

/// Resource Health for a whole scope.
#[derive(Debug)]
enum HealthList {
    /// The subscription never registered Microsoft.ResourceHealth: the same for every VM.
    Unregistered,
    /// By lower-case resource id.
    Statuses(HashMap<String, HealthOutcome>),
}

/// `…/providers/Microsoft.ResourceHealth/availabilityStatuses/current` → the resource's id.
fn health_subject(status_id: &str) -> Option<String> {
    let lower = status_id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.resourcehealth/")?;
    Some(lower[..at].to_string())
}

/// A scope with more Windows VMs than a sweep may check: refused with its size and how to
/// narrow it (an `ArmError::Config`, so the terminal exits 2 as for a usage error).
fn too_large(scope: &SweepScope, vms: usize, max: usize) -> ArmError {
    let narrow = match scope.resource_group {
        Some(_) => "check its VMs one at a time, or ask an administrator to raise `sweep_max_vms` in the `[azure]` section of the config",
        None => "sweep one resource group at a time instead",
    };
    ArmError::Config(format!(
        "{scope} has {} Windows VMs; a sweep checks at most {} (ARM's request budget is shared with everyone's checks). Nothing was checked: {narrow}.",
        thousands(vms),
        thousands(max)
    ))
}

/// 1234567 → "1,234,567".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Why a sweep's scope could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("no resource group {resource_group} in {searched}")]
    NotFound {
        resource_group: String,
        searched: String,
    },
    #[error("resource group {resource_group} exists in {} subscriptions ({}); say which one", .subscriptions.len(), .subscriptions.join(", "))]
    Ambiguous {
        resource_group: String,
        subscriptions: Vec<String>,
    },
    #[error("no subscription to sweep: give one, or set AZURE_SUBSCRIPTION_ID")]
    NoSubscription,
    #[error("{} subscriptions are configured ({}); say which one to sweep", .0.len(), .0.join(", "))]
    WhichSubscription(Vec<String>),
    #[error(transparent)]
    Arm(#[from] ArmError),
}

/// The pages of a list over a sweep's scope: one group's (`list`) or the whole subscription's
/// (`list_all`), as every list client of the SDK names them.
macro_rules! scope_pages {
    ($client:expr, $scope:expr) => {
        match &$scope.resource_group {
            Some(rg) => $client
                .list(rg, &$scope.subscription_id)
                .into_stream()
                .boxed(),
            None => $client
                .list_all(&$scope.subscription_id)
                .into_stream()
                .boxed(),
        }
    };
}

impl Arm {
    /// The sweep scope for a resource group (in whichever of `subscriptions` holds it) or, with
    /// no group, for the one subscription given.
    pub async fn sweep_scope(
        &self,
        resource_group: Option<&str>,
        subscriptions: &[String],
    ) -> Result<SweepScope, ScopeError> {
        let Some(rg) = resource_group else {
            return match subscriptions {
                [one] => Ok(SweepScope {
                    subscription_id: one.clone(),
                    resource_group: None,
                }),
                [] => Err(ScopeError::NoSubscription),
                many => Err(ScopeError::WhichSubscription(many.to_vec())),
            };
        };
        if let [one] = subscriptions {
            // One place to look: the sweep's own list will say if the group is missing.
            return Ok(SweepScope {
                subscription_id: one.clone(),
                resource_group: Some(rg.to_string()),
            });
        }
        if subscriptions.is_empty() {
            return Err(ScopeError::NoSubscription);
        }
        let probes = futures::future::join_all(subscriptions.iter().map(|sub| async move {
            let first = self
                .compute
                .virtual_machines_client()
                .list(rg, sub)
                .into_stream()
                .next()
                .await;
            match first {
                None | Some(Ok(_)) => Ok(Some(sub.clone())),
                Some(Err(e)) => {
                    let error = self.map_err(e, &format!("looking for resource group {rg}"));
                    match error.code() {
                        Some("ResourceGroupNotFound" | "SubscriptionNotFound") => Ok(None),
                        _ => Err(error),
                    }
                }
            }
        }))
        .await;
        let mut found = Vec::new();
        for probe in probes {
            if let Some(sub) = probe? {
                found.push(sub);
            }
        }
        match found.as_slice() {
            [one] => Ok(SweepScope {
                subscription_id: one.clone(),
                resource_group: Some(rg.to_string()),
            }),
            [] => Err(ScopeError::NotFound {
                resource_group: rg.to_string(),
                searched: super::resolve::scope_text(subscriptions),
            }),
            _ => Err(ScopeError::Ambiguous {
                resource_group: rg.to_string(),
                subscriptions: found,
            }),
        }
    }

    /// List the scope's VMs (with instance views), NICs, public IPs and Resource Health, all
    /// at once. Fails only if the VMs cannot be listed; the other lists are a shortcut.
    ///
    /// A scope with more Windows VMs than `ArmSettings::sweep_max_vms` is refused as soon as
    /// its VM list is in (the other lists are dropped), before any per-VM request.
    pub async fn read_fleet(&self, scope: &SweepScope) -> Result<Fleet, ArmError> {
        let before = self.request_count();
        let max = self.settings.sweep_max_vms;
        let vms = async {
            let fleet = Fleet::from_list(self.list_scope_vms(scope).await?);
            let windows = fleet.vms.iter().filter(|vm| fleet.is_windows(vm)).count();
            if windows > max {
                return Err(too_large(scope, windows, max));
            }
            Ok(fleet)
        };
        let others = async {
            Ok(futures::join!(
                self.list_scope_nics(scope),
                self.list_scope_public_ips(scope),
            ))
        };
        let (mut fleet, (nics, public_ips)) = futures::future::try_join(vms, others).await?;
        for vm in &fleet.vms {
            let group = vm.vm.resource_group.to_ascii_lowercase();
            if fleet.health.contains_key(&group) {
                continue;
            }
            let (arm, subscription, name) = (
                self.clone(),
                scope.subscription_id.clone(),
                vm.vm.resource_group.clone(),
            );
            let listed = async move {
                match arm.list_group_health(&subscription, &name).await {
                    Ok(list) => Some(Arc::new(list)),
                    Err(e) => {
                        tracing::debug!(error = %e, group = %name, "Resource Health list unavailable; reading one by one");
                        None
                    }
                }
            };
            fleet.health.insert(group, listed.boxed().shared());
        }
        let public_ips = public_ips.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "public IP list unavailable; reading them one by one");
            HashMap::new()
        });
        match nics {
            Ok(nics) => {
                // A NIC whose public IP is in neither the NIC nor the list (kept in another
                // group) is left out: its VM's check reads it, concurrently with the others.
                for (id, nic) in nics {
                    if let (facts, None) = listed_nic_facts(&id, nic, &public_ips) {
                        fleet.nics.insert(id.to_ascii_lowercase(), facts);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "NIC list unavailable; reading them one by one"),
        }
        fleet.list_requests = self.request_count().saturating_sub(before);
        Ok(fleet)
    }

    /// The scope's VMs, without their instance views: the compute spec allows
    /// `$expand=instanceView` on a VM list only with a `$filter` (a scale set's id: "this can
    /// only be specified if a valid $filter option is specified", `VirtualMachines_List` and
    /// `_ListAll`), so asking for it would only cost a 400; the sweep reads each VM's instance
    /// view on its own, as a single check does.
    async fn list_scope_vms(
        &self,
        scope: &SweepScope,
    ) -> Result<Vec<azure_mgmt_compute::package_2024_07_01::models::VirtualMachine>, ArmError> {
        let what = format!("listing the VMs of {scope}");
        let client = self.compute.virtual_machines_client();
        let mut pages = scope_pages!(client, scope);
        self.all_pages(&mut pages, &what, |page| page.value).await
    }

    /// Every item of every page, or the first page's error as an `ArmError`.
    async fn all_pages<P, T>(
        &self,
        pages: &mut (impl futures::Stream<Item = azure_core::Result<P>> + Unpin),
        what: &str,
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, ArmError> {
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            out.extend(items(page.map_err(|e| self.map_err(e, what))?));
        }
        Ok(out)
    }

    async fn list_scope_nics(
        &self,
        scope: &SweepScope,
    ) -> Result<
        Vec<(
            String,
            azure_mgmt_network::package_2024_03::models::NetworkInterface,
        )>,
        ArmError,
    > {
        let what = format!("listing the network interfaces of {scope}");
        let client = self.network.network_interfaces_client();
        let mut pages = scope_pages!(client, scope);
        let nics = self.all_pages(&mut pages, &what, |page| page.value).await?;
        Ok(nics
            .into_iter()
            .filter_map(|nic| nic.resource.id.clone().map(|id| (id, nic)))
            .collect())
    }

    async fn list_scope_public_ips(
        &self,
        scope: &SweepScope,
    ) -> Result<HashMap<String, PublicIpFacts>, ArmError> {
        let what = format!("listing the public IPs of {scope}");
        let client = self.network.public_ip_addresses_client();
        let mut pages = scope_pages!(client, scope);
        let pips = self.all_pages(&mut pages, &what, |page| page.value).await?;
        Ok(pips
            .into_iter()
            .filter_map(|pip| {
                let id = pip.resource.id.clone()?;
                let name = ResourceId::parse(&id).map(|r| r.name).unwrap_or_default();
                Some((id.to_ascii_lowercase(), public_ip_facts(&id, &name, pip)))
            })
            .collect())
    }

    async fn list_group_health(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<HealthList, ArmError> {
        let what = format!("listing Resource Health of resource group {resource_group}");
        let client = self.health.availability_statuses_client();
        let mut pages = client
            .list_by_resource_group(subscription, resource_group)
            .expand("recommendedactions")
            .into_stream();
        let mut out = HashMap::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    self.health_unregistered(e, &what)?;
                    return Ok(HealthList::Unregistered);
                }
            };
            for status in page.value {
                let Some(subject) = status.id.as_deref().and_then(health_subject) else {
                    continue;
                };
                out.insert(subject, HealthOutcome::Status(health_facts(status)));
            }
        }
        Ok(HealthList::Statuses(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_status_ids_name_their_resource() {
        assert_eq!(
            health_subject("/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM-1/providers/Microsoft.ResourceHealth/availabilityStatuses/current").as_deref(),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm-1")
        );
        assert_eq!(health_subject("/subscriptions/s/whatever"), None);
    }

    #[test]
    fn a_scope_too_large_says_how_big_and_how_to_narrow_it() {
        let sub = SweepScope {
            subscription_id: "s".into(),
            resource_group: None,
        };
        let text = too_large(&sub, 12_345, 1000).to_string();
        assert!(
            text.starts_with("subscription s has 12,345 Windows VMs; a sweep checks at most 1,000"),
            "{text}"
        );
        assert!(text.contains("one resource group at a time"), "{text}");
        let rg = SweepScope {
            subscription_id: "s".into(),
            resource_group: Some("rg-big".into()),
        };
        assert!(too_large(&rg, 1001, 1000)
            .to_string()
            .contains("sweep_max_vms"));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn subscription_ids_are_guids() {
        assert!(is_subscription_id("11111111-2222-3333-4444-55555555555a"));
        assert!(!is_subscription_id("11111111-2222-3333-4444-5555555555"));
        assert!(!is_subscription_id("../../providers/x"));
        assert!(!is_subscription_id("11111111-2222-3333-4444-55555555555g"));
    }

    #[test]
    fn scope_reads_as_a_person_would_say_it() {
        let rg = SweepScope {
            subscription_id: "s".into(),
            resource_group: Some("rg-web".into()),
        };
        assert_eq!(rg.to_string(), "resource group rg-web");
        let sub = SweepScope {
            subscription_id: "s".into(),
            resource_group: None,
        };
        assert_eq!(sub.to_string(), "subscription s");
    }
}
