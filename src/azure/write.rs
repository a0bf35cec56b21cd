//! The runbook's fixes as ARM writes: VMAccess (reset RDP configuration, reset password),
//! start / restart / redeploy, and an inbound NSG rule for TCP 3389. Each write returns an
//! [`OperationHandle`] that can be stored and followed later, even by another process.
//!
//! Each write takes a [`Confirmed`]: only the operator makes one, once a stored confirmation
//! was taken and the VM's lock is held, so a write that skips confirmation does not compile.
//! Each also has a read that tells, after an answer was lost, what Azure did with it.

use super::{lro::Pending, Arm, ArmError, ResourceId, VmRef};
use crate::runbook::operate::Confirmed;
use azure_mgmt_compute::package_2024_07_01::models as compute;
use azure_mgmt_network::package_2024_03::models as network;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Where to follow a long-running operation. Plain URLs Azure handed us: no secrets inside, so
/// it can be stored and resumed after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationHandle {
    /// `Azure-AsyncOperation`, if Azure gave one.
    pub status_url: Option<String>,
    /// `Location`, if Azure gave one.
    pub location: Option<String>,
    /// The write finished in its first response (200 without anything to poll).
    pub done: bool,
}

impl OperationHandle {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<OperationHandle> {
        serde_json::from_str(text).ok()
    }

    pub(crate) fn pending(&self) -> Pending {
        Pending {
            async_operation: self
                .status_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok()),
            location: self
                .location
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok()),
            retry_after: None,
        }
    }
}

/// The VM power operations of the runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Restart,
    Redeploy,
}

/// What the VMAccess extension should do.
pub enum VmAccess {
    /// "Reset configuration only": enables RDP and its firewall rule, resets the port to 3389.
    ResetConfig,
    /// Reset (or create) a local administrator's password.
    ResetPassword {
        username: String,
        password: SecretString,
    },
}

/// An extension installed on a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionInfo {
    pub name: String,
    pub publisher: Option<String>,
    pub kind: Option<String>,
}

impl ExtensionInfo {
    pub fn is_vmaccess(&self) -> bool {
        self.publisher
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("Microsoft.Compute"))
            && self
                .kind
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("VMAccessAgent"))
    }
}

/// One configured rule of an NSG (for choosing a free priority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRule {
    pub name: String,
    pub priority: i32,
    pub inbound: bool,
}

/// A new inbound allow rule for TCP 3389 (or the RDP listener's custom port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRdpRule {
    pub name: String,
    pub priority: i32,
    pub port: u16,
    /// An address, a CIDR, a service tag, or `*`.
    pub source: String,
    pub description: String,
}

impl Arm {
    /// Send a write and return where to follow it.
    async fn start_write(
        &self,
        response: Result<azure_core::Response, azure_core::Error>,
        what: &str,
    ) -> Result<OperationHandle, ArmError> {
        let response = response.map_err(|e| self.map_err(e, what))?;
        let (status, headers, _) = response.deconstruct();
        let pending = Pending::from_headers(&headers);
        let done = pending.async_operation.is_none()
            && pending.location.is_none()
            && u16::from(status) != 202;
        Ok(OperationHandle {
            status_url: pending.async_operation.map(|u| u.to_string()),
            location: pending.location.map(|u| u.to_string()),
            done,
        })
    }

    /// Follow an operation to its end (also one started by an earlier process).
    pub async fn wait(&self, handle: &OperationHandle, what: &str) -> Result<(), ArmError> {
        if handle.done {
            return Ok(());
        }
        let followed = self
            .follow(202, bytes::Bytes::new(), handle.pending(), what)
            .await;
        // The change is whole now: Activity Log reads begun before serve no one after.
        self.pacer.activity.changed();
        followed.map(|_| ())
    }

    pub async fn power(
        &self,
        _confirmed: &Confirmed,
        vm: &VmRef,
        action: PowerAction,
    ) -> Result<OperationHandle, ArmError> {
        let client = self.compute.virtual_machines_client();
        let (rg, name, sub) = (&vm.resource_group, &vm.name, &vm.subscription_id);
        let (what, response) = match action {
            PowerAction::Start => (
                format!("starting {name}"),
                client
                    .start(rg, name, sub)
                    .send()
                    .await
                    .map(|r| r.into_raw_response()),
            ),
            PowerAction::Restart => (
                format!("restarting {name}"),
                client
                    .restart(rg, name, sub)
                    .send()
                    .await
                    .map(|r| r.into_raw_response()),
            ),
            PowerAction::Redeploy => (
                format!("redeploying {name}"),
                client
                    .redeploy(rg, name, sub)
                    .send()
                    .await
                    .map(|r| r.into_raw_response()),
            ),
        };
        self.start_write(response, &what).await
    }

    /// Sends a fix `script` (first line `# rdp-doctor:guest-fix:<fix>:v1`) to the VM with Run
    /// Command, once: the retry policy never sends a Run Command again after an ambiguous
    /// answer. Follow it with [`Arm::run_command_result`] to read what it printed.
    pub async fn run_guest_fix(
        &self,
        _confirmed: &Confirmed,
        vm: &VmRef,
        script: &[String],
    ) -> Result<OperationHandle, ArmError> {
        let what = format!("running a fix in {} (Run Command)", vm.name);
        let (status, _, pending) = self.send_run_command(vm, script, &what).await?;
        let done = pending.async_operation.is_none() && pending.location.is_none() && status != 202;
        Ok(OperationHandle {
            status_url: pending.async_operation.map(|u| u.to_string()),
            location: pending.location.map(|u| u.to_string()),
            done,
        })
    }

    pub async fn extensions(&self, vm: &VmRef) -> Result<Vec<ExtensionInfo>, ArmError> {
        let what = format!("listing the extensions of {}", vm.name);
        let list = self
            .compute
            .virtual_machine_extensions_client()
            .list(&vm.resource_group, &vm.name, &vm.subscription_id)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(list
            .value
            .into_iter()
            .map(|e| ExtensionInfo {
                name: e.resource_with_optional_location.name.unwrap_or_default(),
                publisher: e.properties.as_ref().and_then(|p| p.publisher.clone()),
                kind: e.properties.as_ref().and_then(|p| p.type_.clone()),
            })
            .collect())
    }

    /// PUT the VMAccessAgent extension under `name` (the VM's existing VMAccess name, if any:
    /// Azure allows one per VM). A new `forceUpdateTag` (`tag`, see [`new_update_tag`]) makes
    /// Azure run it again, and tells afterwards whether this PUT is the one Azure kept.
    pub async fn vmaccess(
        &self,
        _confirmed: &Confirmed,
        vm: &VmRef,
        location: &str,
        name: &str,
        tag: &str,
        request: &VmAccess,
    ) -> Result<OperationHandle, ArmError> {
        let body = vmaccess_body(location, tag, request);
        let what = match request {
            VmAccess::ResetConfig => format!("resetting the RDP configuration of {}", vm.name),
            VmAccess::ResetPassword { username, .. } => {
                format!("resetting the password of {username} on {}", vm.name)
            }
        };
        let extension: compute::VirtualMachineExtension = serde_json::from_value(body)
            .map_err(|e| ArmError::Config(format!("cannot build the VMAccess request: {e}")))?;
        let response = self
            .compute
            .virtual_machine_extensions_client()
            .create_or_update(
                &vm.resource_group,
                &vm.name,
                name,
                extension,
                &vm.subscription_id,
            )
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.start_write(response, &what).await
    }

    /// The rules configured in an NSG (custom rules only; the defaults sit at 65000+).
    pub async fn nsg_rules(&self, nsg_id: &str) -> Result<Vec<ConfiguredRule>, ArmError> {
        let id = parse_nsg_id(nsg_id)?;
        let what = format!("reading network security group {}", id.name);
        let nsg = self
            .network
            .network_security_groups_client()
            .get(&id.resource_group, &id.name, &id.subscription_id)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(nsg
            .properties
            .map(|p| p.security_rules)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let props = r.properties?;
                Some(ConfiguredRule {
                    name: r.name.unwrap_or_default(),
                    priority: props.priority,
                    inbound: matches!(props.direction, network::SecurityRuleDirection::Inbound),
                })
            })
            .collect())
    }

    /// PUT an inbound allow rule for TCP 3389 into an NSG.
    pub async fn put_rdp_rule(
        &self,
        _confirmed: &Confirmed,
        nsg_id: &str,
        rule: &NewRdpRule,
    ) -> Result<OperationHandle, ArmError> {
        let id = parse_nsg_id(nsg_id)?;
        let what = format!("adding rule {} to {}", rule.name, id.name);
        let body = serde_json::json!({
            "properties": {
                "description": rule.description,
                "protocol": "Tcp",
                "sourcePortRange": "*",
                "destinationPortRange": rule.port.to_string(),
                "sourceAddressPrefix": rule.source,
                "destinationAddressPrefix": "*",
                "access": "Allow",
                "priority": rule.priority,
                "direction": "Inbound",
            }
        });
        let parameters: network::SecurityRule = serde_json::from_value(body)
            .map_err(|e| ArmError::Config(format!("cannot build the rule request: {e}")))?;
        let response = self
            .network
            .security_rules_client()
            .create_or_update(
                &id.resource_group,
                &id.name,
                &rule.name,
                parameters,
                &id.subscription_id,
            )
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.start_write(response, &what).await
    }
}

/// The VMAccessAgent PUT body for `request`.
fn vmaccess_body(location: &str, tag: &str, request: &VmAccess) -> serde_json::Value {
    // The body Azure PowerShell's Set-AzVMAccessExtension sends (Azure/azure-powershell,
    // src/Compute/Compute/Extension/VMAccess/SetAzureVMAccessExtension.cs: public
    // `UserName`, private `Password`, both tables sent even when empty, version "2.0",
    // autoUpgradeMinorVersion on) and az CLI's `vm user update` on Windows
    // (Azure/azure-cli, src/azure-cli/azure/cli/command_modules/vm/custom.py,
    // `_reset_windows_admin`: `settings={'UserName': …}`, `protected_settings={'Password': …}`).
    // The Windows handler reads these PascalCase keys; the password only ever goes in
    // `protectedSettings`, which Azure encrypts and never returns.
    let (settings, protected) = match request {
        VmAccess::ResetConfig => (serde_json::json!({}), serde_json::json!({})),
        VmAccess::ResetPassword { username, password } => (
            serde_json::json!({ "UserName": username }),
            serde_json::json!({ "Password": password.expose_secret() }),
        ),
    };
    serde_json::json!({
        "location": location,
        "properties": {
            "publisher": "Microsoft.Compute",
            "type": "VMAccessAgent",
            "typeHandlerVersion": "2.0",
            "autoUpgradeMinorVersion": true,
            "forceUpdateTag": tag,
            "settings": settings,
            "protectedSettings": protected,
        }
    })
}

impl Arm {
    /// `DELETE routeTables/{table}/routes/{route}` (`Routes_Delete`, a long-running operation):
    /// sent once; an ambiguous failure is `ArmError::Unanswered` and never re-sent.
    pub async fn delete_route(
        &self,
        _confirmed: &Confirmed,
        table_id: &str,
        route: &str,
    ) -> Result<OperationHandle, ArmError> {
        let id = ResourceId::parse(table_id).map_err(|e| ArmError::Malformed {
            what: "route table id".into(),
            detail: e.to_string(),
        })?;
        let what = format!("removing route {route} from route table {}", id.name);
        let response = self
            .network
            .routes_client()
            .delete(&id.resource_group, &id.name, route, &id.subscription_id)
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.start_write(response, &what).await
    }

    /// A route's provisioning state (`Deleting` while a delete runs), or `None` when it is gone:
    /// what a delete whose answer was lost did.
    pub async fn route_state(
        &self,
        table_id: &str,
        route: &str,
    ) -> Result<Option<String>, ArmError> {
        let id = ResourceId::parse(table_id).map_err(|e| ArmError::Malformed {
            what: "route table id".into(),
            detail: e.to_string(),
        })?;
        let what = format!("reading route {route} of route table {}", id.name);
        match self
            .network
            .routes_client()
            .get(&id.resource_group, &id.name, route, &id.subscription_id)
            .await
        {
            Ok(found) => Ok(Some(
                found
                    .properties
                    .and_then(|p| p.provisioning_state)
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| "Succeeded".into()),
            )),
            Err(e) => match self.map_err(e, &what) {
                ArmError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// A VM extension as Azure has it now: which PUT it keeps (`forceUpdateTag`) and how that went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionState {
    pub force_update_tag: Option<String>,
    /// `Succeeded`, `Failed`, `Creating`, `Updating`…
    pub provisioning_state: Option<String>,
}

/// A security rule as Azure has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    pub priority: i32,
    pub source: Option<String>,
    /// An inbound Allow rule, for `port` (its `destinationPortRange`).
    pub allows_inbound: bool,
    pub port: Option<String>,
    /// `Succeeded`, `Updating`, `Failed`…
    pub provisioning_state: Option<String>,
}

/// A fresh `forceUpdateTag`: a new value makes Azure run the extension again.
pub fn new_update_tag() -> String {
    format!(
        "rdp-doctor-{}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    )
}

impl Arm {
    /// The extension `name` of a VM, or `None` if Azure has none by that name.
    pub async fn extension_state(
        &self,
        vm: &VmRef,
        name: &str,
    ) -> Result<Option<ExtensionState>, ArmError> {
        let what = format!("reading extension {name} of {}", vm.name);
        let got = self
            .compute
            .virtual_machine_extensions_client()
            .get(&vm.resource_group, &vm.name, name, &vm.subscription_id)
            .await;
        match got {
            Ok(e) => Ok(Some(ExtensionState {
                force_update_tag: e
                    .properties
                    .as_ref()
                    .and_then(|p| p.force_update_tag.clone()),
                provisioning_state: e.properties.and_then(|p| p.provisioning_state),
            })),
            Err(e) => match self.map_err(e, &what) {
                ArmError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The security rule `name` of an NSG, or `None` if the NSG has no such rule.
    pub async fn rule_state(
        &self,
        nsg_id: &str,
        name: &str,
    ) -> Result<Option<RuleState>, ArmError> {
        let id = parse_nsg_id(nsg_id)?;
        let what = format!("reading rule {name} of {}", id.name);
        let got = self
            .network
            .security_rules_client()
            .get(&id.resource_group, &id.name, name, &id.subscription_id)
            .await;
        match got {
            Ok(rule) => {
                let Some(p) = rule.properties else {
                    return Ok(None);
                };
                let allows_inbound = matches!(p.access, network::SecurityRuleAccess::Allow)
                    && matches!(p.direction, network::SecurityRuleDirection::Inbound);
                Ok(Some(RuleState {
                    priority: p.priority,
                    source: p.source_address_prefix.clone(),
                    allows_inbound,
                    port: p.destination_port_range.clone(),
                    provisioning_state: p.provisioning_state.map(|s| format!("{s:?}")),
                }))
            }
            Err(e) => match self.map_err(e, &what) {
                ArmError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

fn parse_nsg_id(nsg_id: &str) -> Result<ResourceId, ArmError> {
    ResourceId::parse(nsg_id).map_err(|e| ArmError::Malformed {
        what: "NSG id".into(),
        detail: e.to_string(),
    })
}

/// The lowest free priority that still wins over `deciding` (lower number = evaluated first):
/// counting down from just below it, skipping priorities in use. Azure's range is 100-4096.
pub fn free_priority_below(deciding: i32, used: &[i32]) -> Option<i32> {
    let start = deciding.saturating_sub(1).min(4096);
    (100..=start).rev().find(|p| !used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_priorities_win_over_the_deciding_rule() {
        assert_eq!(free_priority_below(100, &[]), None, "nothing wins over 100");
        assert_eq!(free_priority_below(65500, &[4096, 4095]), Some(4094));
        assert_eq!(free_priority_below(300, &[299, 298]), Some(297));
        assert_eq!(free_priority_below(101, &[100]), None);
    }

    #[test]
    fn handles_round_trip_through_json() {
        let handle = OperationHandle {
            status_url: Some("http://127.0.0.1:1/op?api-version=1".into()),
            location: None,
            done: false,
        };
        assert_eq!(OperationHandle::from_json(&handle.to_json()), Some(handle));
        assert_eq!(OperationHandle::from_json("garbage"), None);
    }

    #[test]
    fn vmaccess_bodies_are_spelled_as_the_windows_handler_reads_them() {
        let reset = vmaccess_body("westeurope", "t1", &VmAccess::ResetConfig);
        let props = &reset["properties"];
        assert_eq!(props["publisher"], "Microsoft.Compute");
        assert_eq!(props["type"], "VMAccessAgent");
        assert_eq!(props["typeHandlerVersion"], "2.0");
        assert_eq!(props["autoUpgradeMinorVersion"], true);
        assert_eq!(props["forceUpdateTag"], "t1");
        assert_eq!(props["settings"], serde_json::json!({}));
        assert_eq!(props["protectedSettings"], serde_json::json!({}));

        let request = VmAccess::ResetPassword {
            username: "opsadmin".into(),
            password: "Tr0ub4dor&3-Correct".to_string().into(),
        };
        let body = vmaccess_body("westeurope", "t2", &request);
        let props = &body["properties"];
        assert_eq!(
            props["settings"],
            serde_json::json!({"UserName": "opsadmin"})
        );
        assert_eq!(
            props["protectedSettings"],
            serde_json::json!({"Password": "Tr0ub4dor&3-Correct"})
        );
        assert!(!props["settings"].to_string().contains("Tr0ub4dor"));
    }

    #[test]
    fn vmaccess_is_recognised_by_publisher_and_type() {
        let e = ExtensionInfo {
            name: "enablevmAccess".into(),
            publisher: Some("Microsoft.Compute".into()),
            kind: Some("VMAccessAgent".into()),
        };
        assert!(e.is_vmaccess());
        let other = ExtensionInfo {
            kind: Some("CustomScriptExtension".into()),
            ..e
        };
        assert!(!other.is_vmaccess());
    }
}
