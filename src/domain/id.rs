//! ARM resource ids: `/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription_id: String,
    pub resource_group: String,
    /// e.g. `Microsoft.Compute`
    pub namespace: String,
    /// e.g. `virtualMachines`
    pub resource_type: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceIdError {
    #[error("not an Azure resource id (expected /subscriptions/SUB/resourceGroups/RG/providers/NAMESPACE/TYPE/NAME): {0}")]
    Malformed(String),
}

impl ResourceId {
    pub fn parse(id: &str) -> Result<ResourceId, ResourceIdError> {
        let bad = || ResourceIdError::Malformed(id.to_string());
        let parts: Vec<&str> = id.trim().trim_matches('/').split('/').collect();
        // subscriptions/S/resourceGroups/R/providers/N/T/name[/...]
        if parts.len() < 8
            || !parts[0].eq_ignore_ascii_case("subscriptions")
            || !parts[2].eq_ignore_ascii_case("resourceGroups")
            || !parts[4].eq_ignore_ascii_case("providers")
            || parts.iter().take(8).any(|p| p.is_empty())
        {
            return Err(bad());
        }
        Ok(ResourceId {
            subscription_id: parts[1].to_string(),
            resource_group: parts[3].to_string(),
            namespace: parts[5].to_string(),
            resource_type: parts[6].to_string(),
            name: parts[7].to_string(),
        })
    }

    /// The last segment of any id, e.g. the NSG name of an NSG id.
    pub fn last_segment(id: &str) -> &str {
        id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}/{}",
            self.subscription_id,
            self.resource_group,
            self.namespace,
            self.resource_type,
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_and_nic_ids() {
        let id = ResourceId::parse(
            "/subscriptions/1111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01",
        )
        .unwrap();
        assert_eq!(id.subscription_id, "1111");
        assert_eq!(id.resource_group, "rg-web");
        assert_eq!(id.namespace, "Microsoft.Compute");
        assert_eq!(id.resource_type, "virtualMachines");
        assert_eq!(id.name, "web-01");
        assert_eq!(
            id.to_string(),
            "/subscriptions/1111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"
        );
        assert!(ResourceId::parse("/subscriptions/1111/resourceGroups/rg").is_err());
        assert!(ResourceId::parse("web-01").is_err());
        assert_eq!(ResourceId::last_segment("/a/b/nsg-1"), "nsg-1");
    }
}
