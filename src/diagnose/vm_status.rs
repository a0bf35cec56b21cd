//! `vm-status`: is the VM running and provisioned? (Precondition of every other step.)

use super::{ActionId, CheckId, Finding, Status, VmFacts};
use serde::Serialize;

#[derive(Serialize)]
struct Evidence<'a> {
    power_state: Option<&'a str>,
    provisioning_state: Option<&'a str>,
    message: Option<&'a str>,
}

pub fn check(vm: &VmFacts) -> Finding {
    let evidence = Evidence {
        power_state: vm.power_state.as_deref(),
        provisioning_state: vm.provisioning_state.as_deref(),
        message: vm.provisioning_message.as_deref(),
    };
    let provisioning = vm.provisioning_state.as_deref().unwrap_or("unknown");
    let power = vm.power_state.as_deref();
    let finding = if provisioning.starts_with("failed") {
        let detail = provisioning.strip_prefix("failed/").unwrap_or("");
        let mut summary = "Provisioning failed".to_string();
        if !detail.is_empty() {
            summary.push_str(&format!(" ({detail})"));
        }
        if let Some(message) = &vm.provisioning_message {
            summary.push_str(&format!(": {message}"));
        }
        summary.push_str(". Redeploying moves the VM to a healthy host.");
        Finding::new(CheckId::VmStatus, Status::Fail, summary).suggests(ActionId::Redeploy)
    } else {
        match power {
            Some("running") => Finding::new(
                CheckId::VmStatus,
                Status::Pass,
                format!("VM is running (provisioning {provisioning})"),
            ),
            Some(state @ ("stopped" | "deallocated")) => Finding::new(
                CheckId::VmStatus,
                Status::Fail,
                format!(
                    "VM is {state}{}: nothing answers on 3389 until it is started",
                    if state == "stopped" {
                        " (still allocated and billed)"
                    } else {
                        ""
                    }
                ),
            )
            .suggests(ActionId::Start),
            Some(state @ ("starting" | "stopping" | "deallocating")) => Finding::new(
                CheckId::VmStatus,
                Status::Warn,
                format!("VM is {state}: wait for it to settle, then check again"),
            ),
            Some(other) => Finding::new(
                CheckId::VmStatus,
                Status::Warn,
                format!("VM power state is {other}"),
            ),
            None => Finding::new(
                CheckId::VmStatus,
                Status::Warn,
                format!("Azure reports no power state (provisioning {provisioning})"),
            ),
        }
    };
    finding.evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(power: Option<&str>, provisioning: &str) -> VmFacts {
        VmFacts {
            provisioning_state: Some(provisioning.into()),
            ..VmFacts::sample(power)
        }
    }

    fn check_case(
        power: Option<&str>,
        provisioning: &str,
        expect: (Status, Option<ActionId>, &str),
    ) {
        let finding = check(&vm(power, provisioning));
        assert_eq!(
            (finding.status, finding.suggests),
            (expect.0, expect.1),
            "{finding:?}"
        );
        assert!(
            finding.summary.contains(expect.2),
            "summary {:?} lacks {:?}",
            finding.summary,
            expect.2
        );
    }

    #[test]
    fn power_and_provisioning_states() {
        check_case(
            Some("running"),
            "succeeded",
            (Status::Pass, None, "running"),
        );
        check_case(
            Some("stopped"),
            "succeeded",
            (Status::Fail, Some(ActionId::Start), "stopped"),
        );
        check_case(
            Some("deallocated"),
            "succeeded",
            (Status::Fail, Some(ActionId::Start), "deallocated"),
        );
        check_case(
            Some("starting"),
            "succeeded",
            (Status::Warn, None, "starting"),
        );
        check_case(None, "succeeded", (Status::Warn, None, "no power state"));
        check_case(
            Some("running"),
            "failed/InternalOperationError",
            (
                Status::Fail,
                Some(ActionId::Redeploy),
                "InternalOperationError",
            ),
        );
    }
}
