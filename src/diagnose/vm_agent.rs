//! `vm-agent`: the guest agent must be Ready for the VMAccess fixes (reset RDP configuration,
//! reset password) and Run Command to work.

use super::{AgentFacts, CheckId, Finding, OsType, Status, VmFacts};

pub fn check(vm: &VmFacts, agent_not_ready_tip: &str) -> Finding {
    if !vm.is_running() {
        return Finding::skip(
            CheckId::VmAgent,
            "VM is not running, so its guest agent cannot report",
        )
        .evidence(&vm.agent);
    }
    let finding = match &vm.agent {
        AgentFacts::Ready { version, message } => Finding::new(
            CheckId::VmAgent,
            Status::Pass,
            format!(
                "Guest agent is Ready{}",
                version
                    .as_deref()
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            ),
        )
        .detail(message.clone().unwrap_or_default()),
        AgentFacts::NotReady {
            message, status, ..
        } => {
            let said = message.as_deref().or(status.as_deref()).unwrap_or("no message");
            let finding = Finding::new(
                CheckId::VmAgent,
                Status::Fail,
                format!("Guest agent is Not Ready: \"{said}\". The reset fixes need a Ready agent"),
            );
            if vm.os == OsType::Windows {
                finding
                    .detail(agent_not_ready_tip)
                    .suggests(super::ActionId::Restart)
            } else {
                finding
            }
        }
        AgentFacts::Missing => Finding::new(
            CheckId::VmAgent,
            Status::Fail,
            "Guest agent has not reported (no agent status in the instance view). The reset fixes need a Ready agent",
        )
        .detail(agent_not_ready_tip)
        .suggests(super::ActionId::Restart),
    };
    let mut finding = finding.evidence(&vm.agent);
    finding.details.retain(|d| !d.is_empty());
    finding
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(agent: AgentFacts, power: &str) -> VmFacts {
        VmFacts {
            agent,
            ..VmFacts::sample(Some(power))
        }
    }

    #[test]
    fn ready_not_ready_missing_and_stopped() {
        let ready = check(
            &vm(
                AgentFacts::Ready {
                    version: Some("2.7.41491.949".into()),
                    message: None,
                },
                "running",
            ),
            "tip",
        );
        assert_eq!(ready.status, Status::Pass);
        assert!(ready.summary.contains("2.7.41491.949"));

        let not_ready = check(
            &vm(
                AgentFacts::NotReady {
                    version: Some("Unknown".into()),
                    status: Some("Not Ready".into()),
                    message: Some("VM status blob not found.".into()),
                },
                "running",
            ),
            "use the Serial Console",
        );
        assert_eq!(not_ready.status, Status::Fail);
        assert!(not_ready.summary.contains("VM status blob not found."));
        assert_eq!(not_ready.details, vec!["use the Serial Console"]);
        assert_eq!(not_ready.evidence["state"], "not-ready");

        assert_eq!(
            check(&vm(AgentFacts::Missing, "running"), "t").status,
            Status::Fail
        );
        assert_eq!(
            check(&vm(AgentFacts::Missing, "deallocated"), "t").status,
            Status::Skip
        );
    }
}
