//! `resource-health`: Azure's own view of the VM's availability (runbook step 4).

use super::{ActionId, CheckId, Finding, HealthFacts, Status};

/// Azure's recommended actions embed portal placeholders such as `<#ResourceBlade>` that mean
/// nothing outside the portal.
pub fn strip_portal_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<#") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn check(health: &HealthFacts) -> Finding {
    let summary_text = health
        .summary
        .as_deref()
        .map(strip_portal_placeholders)
        .unwrap_or_default();
    let (status, headline) = match health.state.as_str() {
        "Available" => (Status::Pass, "Resource Health: Available".to_string()),
        "Degraded" => (Status::Fail, "Resource Health: Degraded".to_string()),
        "Unavailable" => (Status::Fail, "Resource Health: Unavailable".to_string()),
        other => (Status::Warn, format!("Resource Health: {other}")),
    };
    let summary = if summary_text.is_empty() || status == Status::Pass {
        headline
    } else {
        format!("{headline}: {summary_text}")
    };
    let mut finding = Finding::new(CheckId::ResourceHealth, status, summary);
    if let Some(detail) = &health.detailed_status {
        finding = finding.detail(strip_portal_placeholders(detail));
    }
    for action in &health.recommended_actions {
        let action = strip_portal_placeholders(action);
        if !action.is_empty() {
            finding = finding.detail(format!("Azure recommends: {action}"));
        }
    }
    if status == Status::Fail {
        finding = finding.suggests(ActionId::Restart);
    }
    let mut evidence = health.clone();
    evidence.summary = health.summary.as_deref().map(strip_portal_placeholders);
    evidence.recommended_actions = health
        .recommended_actions
        .iter()
        .map(|a| strip_portal_placeholders(a))
        .collect();
    finding.evidence(evidence)
}

/// The subscription has not registered `Microsoft.ResourceHealth`: a warning, not a VM problem.
pub fn unregistered(how_to_register: &str) -> Finding {
    Finding::new(
        CheckId::ResourceHealth,
        Status::Warn,
        "Resource Health is not available: the subscription has not registered Microsoft.ResourceHealth",
    )
    .detail(how_to_register)
    .evidence(serde_json::json!({"error": "MissingSubscriptionRegistration"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_removed() {
        assert_eq!(
            strip_portal_placeholders(
                "To start this virtual machine, open the resource blade <#ResourceBlade> and click Start"
            ),
            "To start this virtual machine, open the resource blade and click Start"
        );
        assert_eq!(strip_portal_placeholders("broken <#Blade"), "broken");
        assert_eq!(strip_portal_placeholders("plain"), "plain");
    }

    fn health(state: &str) -> HealthFacts {
        HealthFacts {
            state: state.into(),
            summary: Some("We're sorry, we couldn't automatically recover your virtual machine".into()),
            detailed_status: Some("Disk problems are preventing us from automatically recovering your virtual machine".into()),
            reason_type: Some("Unplanned".into()),
            occurred: None,
            recommended_actions: vec!["Contact support <#SupportCase>".into()],
        }
    }

    #[test]
    fn states() {
        assert_eq!(check(&health("Available")).status, Status::Pass);
        let down = check(&health("Unavailable"));
        assert_eq!(down.status, Status::Fail);
        assert!(down.summary.contains("couldn't automatically recover"));
        assert!(down
            .details
            .iter()
            .any(|d| d == "Azure recommends: Contact support"));
        assert_eq!(down.evidence["recommended_actions"][0], "Contact support");
        assert_eq!(check(&health("Degraded")).status, Status::Fail);
        assert_eq!(check(&health("Unknown")).status, Status::Warn);
        assert_eq!(unregistered("az provider register").status, Status::Warn);
    }
}
