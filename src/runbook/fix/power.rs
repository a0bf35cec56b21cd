//! `start`, `restart`, `redeploy`: POSTs on the VM, followed to the end.

use super::{Facts, Plan, Refusal, Step};
use crate::azure::PowerAction;
use crate::diagnose::ActionId;

fn public_ip_line(facts: &Facts, will_change: bool) -> Option<String> {
    let ip = facts.nic.as_ref()?.public_ip.as_ref()?;
    let dynamic = ip.allocation.as_deref() == Some("Dynamic");
    match (&ip.address, dynamic, will_change) {
        (Some(address), true, true) => Some(format!(
            "Public IP {address} is dynamic and will change: update DNS records and saved RDP files"
        )),
        (Some(address), false, _) => Some(format!("Public IP {address} is static and stays")),
        (None, true, _) => Some(format!(
            "Public IP {} is dynamic: Azure assigns a new address when the VM runs",
            ip.name
        )),
        _ => None,
    }
}

pub(super) fn plan(facts: &Facts, action: ActionId) -> Result<Plan, Refusal> {
    let power = facts.state.power_state.as_deref().unwrap_or("unknown");
    let name = &facts.vm.name;
    let stopped = matches!(power, "deallocated" | "stopped");
    let transitional = matches!(power, "starting" | "stopping" | "deallocating");
    if transitional {
        return Err(Refusal {
            reason: format!("{name} is {power}: wait until it settles, then check again."),
            instead: None,
        });
    }
    let (headline, step, consequences) = match action {
        ActionId::Start => {
            if !stopped {
                return Err(Refusal {
                    reason: format!("{name} is already {power}."),
                    instead: None,
                });
            }
            let mut c = vec![
                "Compute billing starts again as soon as it runs".to_string(),
                "Windows needs a few minutes to boot before Remote Desktop answers".to_string(),
            ];
            c.extend(public_ip_line(facts, false));
            (format!("Start {name}"), PowerAction::Start, c)
        }
        ActionId::Restart => {
            if stopped {
                return Err(Refusal {
                    reason: format!("{name} is {power}: there is nothing to restart."),
                    instead: Some(ActionId::Start),
                });
            }
            (
                format!("Restart {name}"),
                PowerAction::Restart,
                vec![
                    "Signed-in users are disconnected and unsaved work is lost".to_string(),
                    "Remote Desktop is unavailable for a few minutes while Windows restarts"
                        .to_string(),
                ],
            )
        }
        ActionId::Redeploy => {
            if stopped {
                return Err(Refusal {
                    reason: format!("{name} is {power}: start it rather than redeploy it."),
                    instead: Some(ActionId::Start),
                });
            }
            let mut c = vec![
                "The VM is shut down, moved to a new Azure host and started again".to_string(),
                "Data on the temporary disk (usually D:) is lost".to_string(),
                "Signed-in users are disconnected and unsaved work is lost".to_string(),
            ];
            c.extend(public_ip_line(facts, true));
            if let Some(nic) = &facts.nic {
                if nic.private_ip_allocation.as_deref() == Some("Dynamic") {
                    if let Some(ip) = &nic.private_ip {
                        c.push(format!("Private IP {ip} is dynamic and may change"));
                    }
                }
            }
            (
                format!("Redeploy {name} to a new host"),
                PowerAction::Redeploy,
                c,
            )
        }
        other => {
            return Err(Refusal {
                reason: format!("{} is not a power action", other.as_str()),
                instead: None,
            })
        }
    };
    Ok(Plan {
        action,
        vm: facts.vm.clone(),
        headline,
        consequences,
        warnings: Vec::new(),
        step: Step::Power(step),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::VmRef;
    use crate::diagnose::{NicFacts, PublicIpFacts, VmFacts};

    fn facts(power: &str, allocation: &str, address: Option<&str>) -> Facts {
        Facts {
            vm: VmRef {
                name: "web-01".into(),
                resource_group: "rg".into(),
                subscription_id: "s".into(),
                id: "/id".into(),
            },
            state: VmFacts::sample(Some(power)),
            nic: Some(NicFacts {
                nic_id: "/nic".into(),
                private_ip: Some("10.0.1.4".into()),
                private_ip_allocation: Some("Dynamic".into()),
                public_ip: Some(PublicIpFacts {
                    id: "/pip".into(),
                    name: "web-01-ip".into(),
                    address: address.map(str::to_string),
                    allocation: Some(allocation.into()),
                    sku: None,
                }),
                subnet_id: None,
                nsg_id: None,
            }),
        }
    }

    #[test]
    fn redeploy_spells_out_what_is_lost_from_the_real_config() {
        let plan = plan(
            &facts("running", "Dynamic", Some("20.1.2.3")),
            ActionId::Redeploy,
        )
        .unwrap();
        let text = plan.consequences.join("\n");
        assert!(text.contains("temporary disk"), "{text}");
        assert!(
            text.contains("Public IP 20.1.2.3 is dynamic and will change"),
            "{text}"
        );
        assert!(text.contains("Private IP 10.0.1.4 is dynamic"), "{text}");
        let static_ip = plan_text(
            facts("running", "Static", Some("20.1.2.3")),
            ActionId::Redeploy,
        );
        assert!(static_ip.contains("is static and stays"), "{static_ip}");
    }

    fn plan_text(f: Facts, a: ActionId) -> String {
        plan(&f, a).unwrap().consequences.join("\n")
    }

    #[test]
    fn preconditions_refuse_with_what_to_do_instead() {
        let deallocated = facts("deallocated", "Dynamic", None);
        assert_eq!(
            plan(&deallocated, ActionId::Restart).unwrap_err().instead,
            Some(ActionId::Start)
        );
        assert_eq!(
            plan(&deallocated, ActionId::Redeploy).unwrap_err().instead,
            Some(ActionId::Start)
        );
        assert!(plan(&deallocated, ActionId::Start).is_ok());
        assert!(plan(&facts("running", "Static", None), ActionId::Start).is_err());
        assert!(plan(&facts("starting", "Static", None), ActionId::Restart).is_err());
        assert!(
            plan_text(facts("running", "Static", None), ActionId::Restart).contains("disconnected")
        );
    }
}
