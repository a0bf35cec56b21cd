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
        let [_, sub, _, rg, _, namespace, resource_type, name] =
            Self::head(id).ok_or_else(|| ResourceIdError::Malformed(id.to_string()))?;
        Ok(ResourceId {
            subscription_id: sub.to_string(),
            resource_group: rg.to_string(),
            namespace: namespace.to_string(),
            resource_type: resource_type.to_string(),
            name: name.to_string(),
        })
    }

    /// The subscription and resource group of `id` as [`ResourceId::parse`] reads them,
    /// borrowed (for filters that run over many ids).
    pub fn subscription_and_group(id: &str) -> Option<(&str, &str)> {
        Self::head(id).map(|head| (head[1], head[3]))
    }

    /// `subscriptions/S/resourceGroups/R/providers/N/T/name[/...]`: the first eight segments,
    /// none empty, or `None`.
    fn head(id: &str) -> Option<[&str; 8]> {
        let mut head = [""; 8];
        let mut count = 0;
        for (slot, part) in head.iter_mut().zip(id.trim().trim_matches('/').split('/')) {
            *slot = part;
            count += 1;
        }
        let shaped = count == 8
            && head[0].eq_ignore_ascii_case("subscriptions")
            && head[2].eq_ignore_ascii_case("resourceGroups")
            && head[4].eq_ignore_ascii_case("providers")
            && head.iter().all(|p| !p.is_empty());
        shaped.then_some(head)
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
    fn subscription_and_group_reads_ids_as_parse_does() {
        let read = [
            ("/subscriptions/s1/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/nic", Some(("s1", "rg-web"))),
            ("/subscriptions/s1/resourcegroups/RG-Web/providers/Microsoft.Network/networkSecurityGroups/nsg/securityRules/r/", Some(("s1", "RG-Web"))),
            ("subscriptions/s1/resourceGroups/rg/providers/N/T", None),
            ("/subscriptions/s1/resourceGroups/rg", None),
            ("/subscriptions/s1/resourceGroups//providers/N/T/name", None),
            ("/subscriptions/s1/locations/westeurope/providers/N/T/name", None),
            ("", None),
        ];
        for (id, expected) in read {
            assert_eq!(ResourceId::subscription_and_group(id), expected, "{id}");
            let parsed = ResourceId::parse(id).ok();
            assert_eq!(
                parsed
                    .as_ref()
                    .map(|p| (p.subscription_id.as_str(), p.resource_group.as_str())),
                expected,
                "{id}"
            );
        }
    }

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
