//! The runbook's domain words, shared by every layer: which VM (`VmRef`, `VmSummary`), what a
//! person typed (`VmQuery`, validated before anything is asked of Azure) and ARM resource ids.
//!
//! **Architecture Invariant:** plain data and pure functions. No I/O, no SDK, chat or clap types,
//! so front ends can name these without naming `azure`.

pub mod alert;
mod change;
pub mod cidr;
mod id;

pub use change::{changes_of, is_change, is_reading_action, ActivityEvent, Change, Changes};
pub use id::{ResourceId, ResourceIdError};

use serde::{Deserialize, Serialize};

/// A person's level on a scope, granted by the policy and asked for by each command and action
/// of the catalog. Ordered: `Read < Operate < Admin`, so "has at least" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Operate,
    Admin,
}

/// What a person typed that cannot name a Resource Manager VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{input} is a classic (Azure Service Manager) VM. Azure retired classic VMs in 2023; this runbook covers Azure Resource Manager VMs. Migrate it, or look for its Resource Manager replacement")]
    Classic { input: String },
}

/// A subscription id as ARM writes it: a GUID. Checked before one goes into a URL.
pub fn is_subscription_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A VM we have found: enough to address every ARM call about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRef {
    pub name: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub id: String,
}

impl VmRef {
    /// A VM known only by its stored resource id (and display name).
    pub fn from_stored(id: &str, name: &str) -> VmRef {
        let parsed = ResourceId::parse(id).ok();
        VmRef {
            name: name.to_string(),
            resource_group: parsed
                .as_ref()
                .map(|p| p.resource_group.clone())
                .unwrap_or_default(),
            subscription_id: parsed.map(|p| p.subscription_id).unwrap_or_default(),
            id: id.to_string(),
        }
    }

    pub fn from_id(id: &ResourceId) -> VmRef {
        VmRef {
            name: id.name.clone(),
            resource_group: id.resource_group.clone(),
            subscription_id: id.subscription_id.clone(),
            id: id.to_string(),
        }
    }
}

/// A VM as a subscription's VM list shows it (no instance view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSummary {
    pub vm: VmRef,
    pub location: String,
    pub windows: Option<bool>,
    pub nic_ids: Vec<String>,
    pub boot_diagnostics_enabled: bool,
}

impl VmSummary {
    /// A VM not taken from a list: the check reads its NIC, OS and boot-diagnostics setting
    /// from the VM itself, so no subscription needs listing again.
    pub fn unlisted(vm: VmRef) -> VmSummary {
        VmSummary {
            vm,
            location: String::new(),
            windows: None,
            nic_ids: Vec::new(),
            boot_diagnostics_enabled: false,
        }
    }
}

/// What a person typed, validated before any call to Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmQuery {
    Name(String),
    InGroup {
        resource_group: String,
        name: String,
    },
    Id(ResourceId),
}

/// ". Did you mean: a (rg), b (rg)?" for a not-found message, or nothing.
pub fn suggestions_text(suggestions: &[VmRef]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let names: Vec<String> = suggestions
        .iter()
        .map(|v| format!("{} ({})", v.name, v.resource_group))
        .collect();
    format!(". Did you mean: {}?", names.join(", "))
}

/// One line per candidate of an ambiguous name: group/name and subscription.
pub fn candidates_text(candidates: &[VmRef]) -> String {
    candidates
        .iter()
        .map(|v| {
            format!(
                "  {}/{}  (subscription {})",
                v.resource_group, v.name, v.subscription_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Azure's naming rules for a VM resource: 1-64 characters of letters, digits, `_`, `.`, `-`;
/// starts with a letter or digit; ends with a letter, digit or `_`.
pub fn validate_vm_name(name: &str) -> Result<(), QueryError> {
    static RULE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RULE.get_or_init(|| {
        regex::Regex::new(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?$")
            .expect("static regex")
    });
    if re.is_match(name) {
        Ok(())
    } else {
        Err(QueryError::InvalidName(format!(
            "{name:?} is not a valid Azure VM name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit and ending with a letter, digit or '_'"
        )))
    }
}

/// Azure's naming rules for a resource group.
pub fn validate_group(group: &str) -> Result<(), QueryError> {
    let ok = !group.is_empty()
        && group.chars().count() <= 90
        && !group.ends_with('.')
        && group
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(QueryError::InvalidName(format!(
            "{group:?} is not a valid resource group name: use up to 90 letters, digits, '_', '-', '.', '(' or ')', not ending with '.'"
        )))
    }
}

impl VmQuery {
    pub fn parse(input: &str) -> Result<VmQuery, QueryError> {
        let input = input.trim();
        if input.starts_with('/') {
            if input
                .to_ascii_lowercase()
                .contains("/microsoft.classiccompute/")
            {
                return Err(QueryError::Classic {
                    input: input.to_string(),
                });
            }
            let id =
                ResourceId::parse(input).map_err(|e| QueryError::InvalidName(e.to_string()))?;
            if !id.namespace.eq_ignore_ascii_case("Microsoft.Compute")
                || !id.resource_type.eq_ignore_ascii_case("virtualMachines")
            {
                return Err(QueryError::InvalidName(format!(
                    "{input} is a {}/{} id, not a virtual machine (Microsoft.Compute/virtualMachines)",
                    id.namespace, id.resource_type
                )));
            }
            validate_vm_name(&id.name)?;
            return Ok(VmQuery::Id(id));
        }
        match input.split_once('/') {
            Some((group, name)) => {
                validate_group(group)?;
                validate_vm_name(name)?;
                Ok(VmQuery::InGroup {
                    resource_group: group.to_string(),
                    name: name.to_string(),
                })
            }
            None => {
                validate_vm_name(input)?;
                Ok(VmQuery::Name(input.to_string()))
            }
        }
    }
}
