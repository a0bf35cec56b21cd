//! What the signed-in principal may do, asked of ARM with harmless reads: its permissions in a
//! resource group (`Permissions_ListForResourceGroup`, authorization spec 2022-04-01) and
//! whether it may list a subscription's VMs (the first page of the list).

use super::{Arm, ArmError};

/// The actions of the role assignments that apply in one resource group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// `(actions, notActions)` per role assignment.
    entries: Vec<(Vec<String>, Vec<String>)>,
}

impl Grants {
    /// Whether some role assignment allows `action` (and does not exclude it).
    pub fn allows(&self, action: &str) -> bool {
        self.entries.iter().any(|(actions, not_actions)| {
            actions.iter().any(|p| action_matches(p, action))
                && !not_actions.iter().any(|p| action_matches(p, action))
        })
    }
}

/// Azure's action wildcard: `*` stands for any text; case-insensitive.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match pattern.split_once('*') {
        None => pattern == action,
        Some((prefix, rest)) => {
            // Further stars: each part in order.
            let mut at = prefix.len();
            if !action.starts_with(prefix) {
                return false;
            }
            let parts: Vec<&str> = rest.split('*').collect();
            for (i, part) in parts.iter().enumerate() {
                if i == parts.len() - 1 {
                    return action.len() >= at + part.len() && action.ends_with(part);
                }
                match action[at..].find(part) {
                    Some(found) => at += found + part.len(),
                    None => return false,
                }
            }
            true
        }
    }
}

impl Arm {
    /// Every `value` item of an ARM list at `path_and_query` (relative to the endpoint),
    /// following `nextLink`.
    pub(crate) async fn get_values(
        &self,
        path_and_query: &str,
        what: &str,
    ) -> Result<Vec<serde_json::Value>, ArmError> {
        let mut url = self
            .settings
            .endpoint
            .join(path_and_query)
            .map_err(|e| ArmError::Config(format!("{what}: {e}")))?;
        let malformed = |detail: String| ArmError::Malformed {
            what: what.to_string(),
            detail,
        };
        let mut values = Vec::new();
        // Bounded, whatever the nextLinks say.
        for _ in 0..1000 {
            let (status, _, body) = self.get_raw(&url, what).await?;
            if !(200..300).contains(&status) {
                return Err(ArmError::from_status(status, &body, 0));
            }
            let mut page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
            if let Some(items) = page.get_mut("value").and_then(|v| v.as_array_mut()) {
                values.append(items);
            }
            match page["nextLink"].as_str().filter(|l| !l.is_empty()) {
                Some(next) => url = url::Url::parse(next).map_err(|e| malformed(e.to_string()))?,
                None => break,
            }
        }
        Ok(values)
    }

    /// The principal's permissions in a resource group.
    pub async fn permissions_in_group(
        &self,
        subscription_id: &str,
        resource_group: &str,
    ) -> Result<Grants, ArmError> {
        let what = format!("reading rdp-doctor's permissions in resource group {resource_group}");
        let values = self
            .get_values(
                &format!("subscriptions/{subscription_id}/resourcegroups/{resource_group}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"),
                &what,
            )
            .await?;
        let strings = |v: &serde_json::Value, key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        };
        Ok(Grants {
            entries: values
                .iter()
                .map(|v| (strings(v, "actions"), strings(v, "notActions")))
                .collect(),
        })
    }

    /// Whether the principal may list the subscription's VMs, asked with the list's first page
    /// only: `None` if it may, else the action and scope Azure refused.
    pub async fn may_list_vms(
        &self,
        subscription_id: &str,
    ) -> Result<Option<(String, String)>, ArmError> {
        let what = format!("listing the VMs of subscription {subscription_id}");
        let url = self
            .settings
            .endpoint
            .join(&format!(
                "subscriptions/{subscription_id}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01"
            ))
            .map_err(|e| ArmError::Config(format!("{what}: {e}")))?;
        let error = match self.get_raw(&url, &what).await {
            Ok((status, _, _)) if (200..300).contains(&status) => return Ok(None),
            Ok((status, _, body)) => ArmError::from_status(status, &body, 0),
            Err(e) => e,
        };
        if super::resolve::is_authorization_failed(&error) {
            return Ok(Some(super::resolve::refused_action(&error).unwrap_or_else(
                || {
                    (
                        "Microsoft.Compute/virtualMachines/read".to_string(),
                        format!("/subscriptions/{subscription_id}/providers/Microsoft.Compute"),
                    )
                },
            )));
        }
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_azure_writes_them() {
        let grants = Grants {
            entries: vec![(
                vec![
                    "*/read".into(),
                    "Microsoft.Compute/virtualMachines/*".into(),
                ],
                vec!["Microsoft.Compute/virtualMachines/delete".into()],
            )],
        };
        assert!(grants.allows("Microsoft.Network/networkInterfaces/read"));
        assert!(grants.allows("microsoft.compute/virtualmachines/restart/action"));
        assert!(!grants.allows("Microsoft.Compute/virtualMachines/delete"));
        assert!(!grants.allows("Microsoft.Network/networkSecurityGroups/securityRules/write"));
        assert!(action_matches(
            "Microsoft.Authorization/*/read",
            "Microsoft.Authorization/permissions/read"
        ));
        assert!(!action_matches(
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/x/read"
        ));
    }
}
