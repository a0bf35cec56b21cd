//! Azure Monitor alerts into the war room: which alert targets rdp-doctor checks, and where
//! their reports go (`[alerts]` and `[[alerts.route]]` of the config file).
//!
//! A route maps a scope (a subscription, or a resource group in it) to a Discord channel; a VM
//! target goes to the most specific route covering it (a resource group's before its
//! subscription's). Targets that are not VMs, or VMs outside every route, are ignored and the
//! webhook's answer says so. The checks themselves go through the door as the alerts actor
//! (`policy::Actor::alerts`, authorised by `alerts = true` grants) in the route's channel
//! (`policy::Place::Alerts`, which must be one of the policy's channels): fail closed.
//!
//! Pure: no I/O.

use crate::domain::{ResourceId, VmRef};
use crate::policy::{Actor, Place};
use crate::runbook::door::Caller;
use serde::Deserialize;
use std::time::Duration;

/// `[alerts]` of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// More VM targets than this on one route within `gather_secs` become one sweep-style
    /// summary instead of a message each (default 10).
    pub storm_threshold: Option<usize>,
    /// Seconds the VM targets of a route are gathered before anything is posted, so that a
    /// storm is seen as one (default 3; 0 posts at once and sees no storm).
    pub gather_secs: Option<u64>,
    /// Seconds in which the same notification delivered again is a duplicate, not a refire
    /// (default 60).
    pub duplicate_secs: Option<u64>,
    /// Scope → channel, one `[[alerts.route]]` each.
    #[serde(default, rename = "route")]
    pub routes: Vec<AlertRouteConfig>,
}

/// One `[[alerts.route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRouteConfig {
    /// `/subscriptions/<id>` or `/subscriptions/<id>/resourceGroups/<name>`.
    pub scope: String,
    /// The Discord channel the reports are posted in (one of `[policy] channels`).
    pub channel: crate::policy::DiscordId,
}

/// A checked route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRoute {
    pub subscription_id: String,
    pub resource_group: Option<String>,
    pub channel: String,
}

impl AlertRoute {
    fn covers(&self, vm: &VmRef) -> bool {
        self.subscription_id
            .eq_ignore_ascii_case(&vm.subscription_id)
            && self
                .resource_group
                .as_ref()
                .is_none_or(|rg| rg.eq_ignore_ascii_case(&vm.resource_group))
    }

    /// The door's caller for alerts posted through this route.
    pub fn caller(&self) -> Caller {
        Caller {
            actor: Actor::alerts(),
            place: Place::Alerts {
                channel: self.channel.clone(),
            },
        }
    }

    /// How the route's scope reads in a summary's title.
    pub fn scope_text(&self) -> String {
        match &self.resource_group {
            Some(rg) => format!("resource group {rg}"),
            None => format!("subscription {}", self.subscription_id),
        }
    }
}

/// The checked `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub routes: Vec<AlertRoute>,
    pub storm_threshold: usize,
    pub gather: Duration,
    pub duplicate_window: Duration,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            routes: Vec::new(),
            storm_threshold: 10,
            gather: Duration::from_secs(3),
            duplicate_window: Duration::from_secs(60),
        }
    }
}

/// What is wrong with `[alerts]`, naming the route and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertsError {
    #[error("[[alerts.route]] number {number}: `scope`: expected \"/subscriptions/<id>\" or \"/subscriptions/<id>/resourceGroups/<name>\", found {scope:?}")]
    Scope { number: usize, scope: String },
    #[error(
        "[[alerts.route]] number {number}: `scope`: {subscription:?} is not a subscription id"
    )]
    Subscription { number: usize, subscription: String },
    #[error("[[alerts.route]] number {number}: `channel`: {channel:?} is not a Discord channel id (digits only)")]
    Channel { number: usize, channel: String },
    #[error("[alerts] `storm_threshold`: 0 would make every alert a storm; the default is 10")]
    StormThreshold,
}

impl AlertsConfig {
    /// Check the table; an error names the field.
    pub fn settings(&self) -> Result<AlertSettings, AlertsError> {
        let defaults = AlertSettings::default();
        let mut routes = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let number = i + 1;
            let parts: Vec<&str> = route.scope.trim().trim_matches('/').split('/').collect();
            let (subscription_id, resource_group) = match parts.as_slice() {
                [s, id] if s.eq_ignore_ascii_case("subscriptions") => (id, None),
                [s, id, g, rg]
                    if s.eq_ignore_ascii_case("subscriptions")
                        && g.eq_ignore_ascii_case("resourceGroups")
                        && !rg.is_empty() =>
                {
                    (id, Some(rg.to_string()))
                }
                _ => {
                    return Err(AlertsError::Scope {
                        number,
                        scope: route.scope.clone(),
                    })
                }
            };
            if !crate::domain::is_subscription_id(subscription_id) {
                return Err(AlertsError::Subscription {
                    number,
                    subscription: subscription_id.to_string(),
                });
            }
            let channel = route.channel.as_str().trim();
            if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AlertsError::Channel {
                    number,
                    channel: channel.to_string(),
                });
            }
            routes.push(AlertRoute {
                subscription_id: subscription_id.to_string(),
                resource_group,
                channel: channel.to_string(),
            });
        }
        if self.storm_threshold == Some(0) {
            return Err(AlertsError::StormThreshold);
        }
        Ok(AlertSettings {
            routes,
            storm_threshold: self.storm_threshold.unwrap_or(defaults.storm_threshold),
            gather: self
                .gather_secs
                .map(|s| Duration::from_secs(s.min(60)))
                .unwrap_or(defaults.gather),
            duplicate_window: self
                .duplicate_secs
                .map(Duration::from_secs)
                .unwrap_or(defaults.duplicate_window),
        })
    }
}

/// What becomes of one of an alert's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed<'a> {
    /// A VM in a route's scope: check it and post there.
    Vm { vm: VmRef, route: &'a AlertRoute },
    /// Not checked, and why (for the webhook's answer and the log).
    Ignored {
        target: String,
        reason: &'static str,
    },
}

impl AlertSettings {
    /// Where each target goes.
    pub fn route<'a>(&'a self, targets: &[String]) -> Vec<Routed<'a>> {
        targets
            .iter()
            .map(|target| {
                let ignored = |reason| Routed::Ignored {
                    target: target.clone(),
                    reason,
                };
                let Ok(id) = ResourceId::parse(target) else {
                    return ignored("not a resource id");
                };
                if !id.namespace.eq_ignore_ascii_case("Microsoft.Compute")
                    || !id.resource_type.eq_ignore_ascii_case("virtualMachines")
                    || target.trim().trim_matches('/').split('/').count() != 8
                {
                    return ignored("not a virtual machine");
                }
                let vm = VmRef::from_id(&id);
                let best = self
                    .routes
                    .iter()
                    .filter(|r| r.covers(&vm))
                    .max_by_key(|r| r.resource_group.is_some());
                match best {
                    Some(route) => Routed::Vm { vm, route },
                    None => ignored("outside every [[alerts.route]] scope"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "11111111-1111-1111-1111-111111111111";

    fn settings(toml_text: &str) -> Result<AlertSettings, AlertsError> {
        let config: AlertsConfig = toml::from_str(toml_text).expect("the test's TOML parses");
        config.settings()
    }

    #[test]
    fn the_most_specific_route_wins_and_the_rest_is_ignored_with_a_reason() {
        let s = settings(&format!(
            "[[route]]\nscope = \"/subscriptions/{SUB}\"\nchannel = \"1\"\n\
             [[route]]\nscope = \"/subscriptions/{SUB}/resourceGroups/rg-web\"\nchannel = 2\n"
        ))
        .unwrap();
        let vm = |rg: &str, name: &str| {
            format!("/subscriptions/{SUB}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachines/{name}")
        };
        let routed = s.route(&[
            vm("RG-WEB", "web-02"),
            vm("rg-app", "app-01"),
            format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkSecurityGroups/nsg"),
            "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x".to_string(),
            format!("{}/extensions/agent", vm("rg-web", "web-02")),
            "web-02".into(),
        ]);
        let channels: Vec<String> = routed
            .iter()
            .map(|r| match r {
                Routed::Vm { vm, route } => format!("{} → {}", vm.name, route.channel),
                Routed::Ignored { reason, .. } => reason.to_string(),
            })
            .collect();
        assert_eq!(
            channels,
            [
                "web-02 → 2",
                "app-01 → 1",
                "not a virtual machine",
                "outside every [[alerts.route]] scope",
                "not a virtual machine",
                "not a resource id",
            ]
        );
    }

    #[test]
    fn a_bad_route_is_refused_naming_the_field() {
        let e = settings("[[route]]\nscope = \"subscription/x\"\nchannel = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("number 1: `scope`"), "{e}");
        let e = settings(&format!(
            "[[route]]\nscope = \"/subscriptions/{SUB}\"\nchannel = \"general\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`channel`"), "{e}");
        let e = settings("storm_threshold = 0").unwrap_err().to_string();
        assert!(e.contains("storm_threshold"), "{e}");
        let d = settings("").unwrap();
        assert_eq!((d.storm_threshold, d.gather.as_secs()), (10, 3));
    }
}
