//! A cache of the configured subscriptions' VM lists, refreshed in the background, so that
//! autocomplete never waits on Azure and a check needs no list call to find its VM.
//!
//! A name is resolved from the cache while it is younger than its time-to-live; a name the cache
//! does not know (or a cache too old) is looked up in a fresh list. A resource group and name,
//! or a full id, the cache does not hold is read directly (one GET), never listed. A
//! subscription whose list Azure refuses the principal is listed by the resource groups ARM
//! lists for it. Concurrent misses share one
//! refresh. A name that a fresh list did not have either is remembered as unknown for a short
//! while (30 s by default), so that asking again, or a typo repeated by a script, lists nothing.

use super::resolve::{pick, searched_text, Limited};
use super::{Arm, ResolveError, VmQuery, VmSummary};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Snapshot {
    vms: Vec<VmSummary>,
    /// Subscriptions whose list Azure refused, listed by resource group instead.
    limited: Vec<Limited>,
    refreshed: Option<Instant>,
}

/// The VMs of the configured subscriptions as last listed.
pub struct VmDirectory {
    snapshot: RwLock<Snapshot>,
    /// Lists tried so far, bumped once a list has ended (kept or not): a watch, so a test can
    /// wait for the next one instead of polling.
    attempts: tokio::sync::watch::Sender<u64>,
    ttl: Duration,
    /// Held while a refresh lists the subscriptions, so concurrent misses list them once; it
    /// guards when the last list ended and how, which waiters share.
    refreshing: tokio::sync::Mutex<Option<Attempt>>,
    /// Queries a fresh list did not find, and when: answered "not found" from the cache while
    /// younger than `unknown_ttl`.
    unknown: Mutex<HashMap<String, Instant>>,
    unknown_ttl: Duration,
}

/// Unknown names remembered at most (a typo storm must not grow memory).
const MAX_UNKNOWN: usize = 1024;

/// The last time the subscriptions were listed.
struct Attempt {
    finished: Instant,
    error: Option<super::ArmError>,
}

impl Default for VmDirectory {
    fn default() -> VmDirectory {
        VmDirectory::with_ttl(VmDirectory::DEFAULT_TTL)
    }
}

impl VmDirectory {
    /// How long a listed VM is trusted for name resolution.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    /// How long a name no list had is answered "not found" without listing again: short, so a
    /// VM created meanwhile is found soon, long enough that repeating a typo costs nothing.
    pub const DEFAULT_UNKNOWN_TTL: Duration = Duration::from_secs(30);

    pub fn new() -> VmDirectory {
        VmDirectory::default()
    }

    pub fn with_ttl(ttl: Duration) -> VmDirectory {
        VmDirectory {
            snapshot: RwLock::default(),
            attempts: tokio::sync::watch::Sender::new(0),
            ttl,
            refreshing: tokio::sync::Mutex::new(None),
            unknown: Mutex::new(HashMap::new()),
            unknown_ttl: VmDirectory::DEFAULT_UNKNOWN_TTL,
        }
    }

    /// How long a name no list had is remembered as unknown (zero: never).
    pub fn with_unknown_ttl(mut self, ttl: Duration) -> VmDirectory {
        self.unknown_ttl = ttl;
        self
    }

    /// Find the VM a query names: from the cache while it is fresh, else (or when the cache
    /// does not know the name) from a fresh list of `subscriptions`. A full id in a subscription
    /// the directory does not list is resolved by listing that subscription.
    pub async fn resolve(
        &self,
        arm: &Arm,
        query: &VmQuery,
        subscriptions: &[String],
    ) -> Result<VmSummary, ResolveError> {
        if subscriptions.is_empty() {
            return arm.resolve(query, subscriptions).await;
        }
        // A resource group and name, or an id, is read directly (one GET) unless a fresh list
        // holds it: never a subscription's list, which a principal with a role on a few
        // resource groups may not read.
        if !matches!(query, VmQuery::Name(_)) {
            if self.is_fresh() {
                if let Some(Ok(found)) = self.pick_cached(query, subscriptions) {
                    return Ok(found);
                }
            }
            return arm.resolve(query, subscriptions).await;
        }
        let asked = Instant::now();
        let key = unknown_key(query, subscriptions);
        if self.is_fresh() {
            if let Some(found) = self.pick_cached(query, subscriptions) {
                if !matches!(found, Err(ResolveError::NotFound { .. })) || self.is_unknown(&key) {
                    return found;
                }
            }
        }
        if let Err(e) = self.refresh_since(arm, subscriptions, asked).await {
            // Azure cannot list right now: a VM the older list knows is still worth checking
            // (the check itself will say if it is gone).
            return match self.pick_cached(query, subscriptions) {
                Some(Ok(found)) => {
                    tracing::warn!(error = %e, vm = %found.vm.name, "VM list unavailable; using the one from {} s ago", self.age().map_or(0, |a| a.as_secs()));
                    Ok(found)
                }
                _ => Err(ResolveError::Arm(e)),
            };
        }
        let found = self
            .pick_cached(query, subscriptions)
            .unwrap_or_else(arm_unavailable);
        if matches!(found, Err(ResolveError::NotFound { .. })) {
            self.remember_unknown(key);
        }
        found
    }

    /// A fresh list lately did not have this query's VM.
    fn is_unknown(&self, key: &str) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
        unknown
            .get(key)
            .is_some_and(|at| at.elapsed() < self.unknown_ttl)
    }

    fn remember_unknown(&self, key: String) {
        if self.unknown_ttl.is_zero() {
            return;
        }
        let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
        if unknown.len() >= MAX_UNKNOWN {
            unknown.retain(|_, at| at.elapsed() < self.unknown_ttl);
            if unknown.len() >= MAX_UNKNOWN {
                if let Some(oldest) = unknown
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
                {
                    unknown.remove(&oldest);
                }
            }
        }
        unknown.insert(key, Instant::now());
    }

    fn is_fresh(&self) -> bool {
        self.age().is_some_and(|age| age <= self.ttl)
    }

    fn pick_cached(
        &self,
        query: &VmQuery,
        subscriptions: &[String],
    ) -> Option<Result<VmSummary, ResolveError>> {
        let snapshot = self.snapshot.read().ok()?;
        snapshot.refreshed?;
        Some(pick(
            query,
            &snapshot.vms,
            &searched_text(subscriptions, &snapshot.limited),
        ))
    }

    /// List again unless a list ended after `asked` (one that was under way when the caller
    /// asked); its outcome, success or Azure's error, is shared, so a hundred concurrent misses
    /// list once.
    async fn refresh_since(
        &self,
        arm: &Arm,
        subscriptions: &[String],
        asked: Instant,
    ) -> Result<(), super::ArmError> {
        let mut last = self.refreshing.lock().await;
        if let Some(attempt) = last.as_ref().filter(|a| a.finished >= asked) {
            return match &attempt.error {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            };
        }
        let started = Instant::now();
        let result = self.list(arm, subscriptions, started).await.map(|_| ());
        *last = Some(Attempt {
            finished: Instant::now(),
            error: result.clone().err(),
        });
        result
    }

    /// List every subscription again; on failure keep the previous snapshot.
    pub async fn refresh(
        &self,
        arm: &Arm,
        subscriptions: &[String],
    ) -> Result<usize, super::ArmError> {
        let mut last = self.refreshing.lock().await;
        let started = Instant::now();
        let result = self.list(arm, subscriptions, started).await;
        *last = Some(Attempt {
            finished: Instant::now(),
            error: result.clone().err(),
        });
        result
    }

    async fn list(
        &self,
        arm: &Arm,
        subscriptions: &[String],
        started: Instant,
    ) -> Result<usize, super::ArmError> {
        let result = match arm.list_all_visible_vms(subscriptions).await {
            Ok((vms, limited)) => Ok(self.keep(vms, limited, started)),
            Err(e) => Err(e),
        };
        // Counted once the list is in place (or failed), so a waiter sees the new snapshot.
        self.attempts.send_modify(|n| *n += 1);
        result
    }

    /// Keeps a fresh list as the snapshot; returns how many VMs it holds.
    fn keep(
        &self,
        mut vms: Vec<VmSummary>,
        limited: Vec<super::resolve::Limited>,
        started: Instant,
    ) -> usize {
        vms.sort_by_key(|v| v.vm.name.to_lowercase());
        let count = vms.len();
        if let Ok(mut snapshot) = self.snapshot.write() {
            // Its age counts from when the list started: what it holds is at least that old.
            *snapshot = Snapshot {
                vms,
                limited,
                refreshed: Some(started),
            };
        }
        count
    }

    /// Refresh now and then every `every`, forever (until the task is dropped with the runtime).
    pub fn spawn_refresher(
        self: Arc<Self>,
        arm: Arm,
        subscriptions: Vec<String>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.refresh(&arm, &subscriptions).await {
                    tracing::warn!(error = %e, "could not refresh the VM list for autocomplete");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    pub fn len(&self) -> usize {
        self.snapshot.read().map(|s| s.vms.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refreshes tried so far, successful or not.
    pub fn attempts(&self) -> u64 {
        *self.attempts.borrow()
    }

    /// Changes each time a list ends, kept or not (for tests, which wait on it).
    pub fn watch_attempts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    pub fn age(&self) -> Option<Duration> {
        self.snapshot
            .read()
            .ok()
            .and_then(|s| s.refreshed.map(|r| r.elapsed()))
    }

    /// Waits, at most `limit`, until the first list has ended (kept or not); at once when one
    /// has. For answers that must come from the list without asking Azure (a form is the first
    /// response to an interaction) right after start, while the first list is still running.
    pub async fn first_list_within(&self, limit: Duration) {
        let mut attempts = self.attempts.subscribe();
        let _ = tokio::time::timeout(limit, attempts.wait_for(|n| *n > 0)).await;
    }

    /// The first listed VM matching `pred` (no Azure call).
    pub fn find(&self, pred: impl Fn(&VmSummary) -> bool) -> Option<VmSummary> {
        let snapshot = self.snapshot.read().ok()?;
        snapshot.vms.iter().find(|v| pred(v)).cloned()
    }

    /// Up to `limit` `(label, value)` pairs for what a person has typed so far: names starting
    /// with it first, then names containing it; case-insensitive. Never touches Azure.
    pub fn suggest(&self, partial: &str, limit: usize) -> Vec<(String, String)> {
        let Ok(snapshot) = self.snapshot.read() else {
            return Vec::new();
        };
        suggest(&snapshot.vms, partial, limit)
    }

    /// The VMs `pred` admits, as last listed (no Azure call).
    pub fn listed_where(&self, pred: impl Fn(&VmSummary) -> bool) -> Vec<VmSummary> {
        match self.snapshot.read() {
            Ok(snapshot) => snapshot.vms.iter().filter(|v| pred(v)).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// [`Self::suggest`] among the VMs `pred` admits (those a person may read).
    pub fn suggest_where(
        &self,
        partial: &str,
        limit: usize,
        pred: impl Fn(&VmSummary) -> bool,
    ) -> Vec<(String, String)> {
        suggest(&self.listed_where(pred), partial, limit)
    }
}

/// What identifies a lookup for the unknown-name cache: the query as typed, ignoring case
/// (ARM's names do), and the subscriptions searched.
fn unknown_key(query: &VmQuery, subscriptions: &[String]) -> String {
    format!("{query:?} in {}", subscriptions.join(",")).to_lowercase()
}

fn arm_unavailable() -> Result<VmSummary, ResolveError> {
    Err(ResolveError::Arm(super::ArmError::Config(
        "the VM list could not be read".into(),
    )))
}

pub fn suggest(vms: &[VmSummary], partial: &str, limit: usize) -> Vec<(String, String)> {
    let needle = partial.trim().to_lowercase();
    let (mut prefix, mut inner): (Vec<&VmSummary>, Vec<&VmSummary>) = (Vec::new(), Vec::new());
    for vm in vms {
        let name = vm.vm.name.to_lowercase();
        if name.starts_with(&needle) {
            prefix.push(vm);
        } else if name.contains(&needle)
            || format!("{}/{}", vm.vm.resource_group, vm.vm.name)
                .to_lowercase()
                .contains(&needle)
        {
            inner.push(vm);
        }
    }
    prefix.append(&mut inner);
    prefix
        .into_iter()
        .take(limit)
        .map(|vm| {
            let label = format!("{} ({})", vm.vm.name, vm.vm.resource_group);
            let value = format!("{}/{}", vm.vm.resource_group, vm.vm.name);
            (label, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::VmRef;

    fn vm(name: &str, rg: &str) -> VmSummary {
        VmSummary {
            vm: VmRef {
                name: name.into(),
                resource_group: rg.into(),
                subscription_id: "s".into(),
                id: format!("/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"),
            },
            location: "westeurope".into(),
            windows: Some(true),
            nic_ids: vec![],
            boot_diagnostics_enabled: true,
        }
    }

    #[test]
    fn prefix_then_substring_at_most_limit() {
        let vms = vec![
            vm("api-web", "rg-a"),
            vm("web-01", "rg-web"),
            vm("web-02", "rg-web"),
            vm("db-01", "rg-data"),
        ];
        let values: Vec<String> = suggest(&vms, "WEB", 25)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values, ["rg-web/web-01", "rg-web/web-02", "rg-a/api-web"]);
        assert_eq!(suggest(&vms, "", 2).len(), 2);
        assert_eq!(suggest(&vms, "rg-data", 25)[0].0, "db-01 (rg-data)");
        let many: Vec<VmSummary> = (0..40).map(|i| vm(&format!("vm-{i:02}"), "rg")).collect();
        assert_eq!(suggest(&many, "vm", 25).len(), 25);
    }
}
