//! The reads behind each check: one ARM call (or a short chain) each, turned into `diagnose` facts.

use super::{lro::Pending, Arm, ArmError, ResourceId, VmRef};
use crate::diagnose::{
    nsg::{Access, Association, Direction, EffectiveNsg, EffectiveRule},
    AgentFacts, BootFacts, HealthFacts, NicFacts, OsType, PublicIpFacts, VmFacts,
};
use azure_mgmt_compute::package_2024_07_01::models as compute;
use azure_mgmt_network::package_2024_03::models as network;

/// Resource Health either answers or the subscription never registered the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthOutcome {
    Status(HealthFacts),
    Unregistered,
}

/// Whether the VM model turns boot diagnostics on (absent: off).
pub(crate) fn boot_diagnostics_enabled(properties: &compute::VirtualMachineProperties) -> bool {
    properties
        .diagnostics_profile
        .as_ref()
        .and_then(|d| d.boot_diagnostics.as_ref())
        .and_then(|b| b.enabled)
        .unwrap_or(false)
}

pub(crate) fn nic_ids(profile: Option<&compute::NetworkProfile>) -> Vec<String> {
    let Some(profile) = profile else {
        return Vec::new();
    };
    // Primary NIC first: it is the one RDP usually arrives on.
    let mut nics: Vec<(bool, String)> = profile
        .network_interfaces
        .iter()
        .filter_map(|n| {
            let primary = n
                .properties
                .as_ref()
                .and_then(|p| p.primary)
                .unwrap_or(false);
            n.sub_resource.id.clone().map(|id| (!primary, id))
        })
        .collect();
    nics.sort_by_key(|(not_primary, _)| *not_primary);
    nics.into_iter().map(|(_, id)| id).collect()
}

pub(crate) fn vm_facts(vm: compute::VirtualMachine) -> VmFacts {
    let properties = vm.properties.unwrap_or_default();
    let os = match properties
        .storage_profile
        .as_ref()
        .and_then(|s| s.os_disk.as_ref())
        .and_then(|d| d.os_type.as_ref())
    {
        Some(compute::os_disk::OsType::Windows) => OsType::Windows,
        Some(compute::os_disk::OsType::Linux) => OsType::Linux,
        _ => OsType::Unknown,
    };
    let view = properties.instance_view.clone().unwrap_or_default();
    let mut power_state = None;
    let mut power_display = None;
    let mut provisioning_state = None;
    let mut provisioning_message = None;
    for status in &view.statuses {
        let Some(code) = status.code.as_deref() else {
            continue;
        };
        match crate::diagnose::split_status_code(code) {
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("PowerState") => {
                power_state = Some(rest.to_ascii_lowercase());
                power_display = status.display_status.clone();
            }
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("ProvisioningState") => {
                // Keep the third segment's case (e.g. InternalOperationError), lower the state.
                let (state, detail) = match rest.split_once('/') {
                    Some((s, d)) => (s.to_ascii_lowercase(), format!("/{d}")),
                    None => (rest.to_ascii_lowercase(), String::new()),
                };
                provisioning_state = Some(format!("{state}{detail}"));
                provisioning_message = status.message.clone();
            }
            _ => {}
        }
    }
    if provisioning_state.is_none() {
        provisioning_state = properties
            .provisioning_state
            .as_deref()
            .map(str::to_ascii_lowercase);
    }
    let agent = match &view.vm_agent {
        None => AgentFacts::Missing,
        Some(agent) => {
            let status = agent.statuses.first();
            let display = status.and_then(|s| s.display_status.clone());
            let message = status.and_then(|s| s.message.clone());
            let ready = display
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case("Ready"));
            if ready {
                AgentFacts::Ready {
                    version: agent.vm_agent_version.clone(),
                    message,
                }
            } else if status.is_none() && agent.vm_agent_version.is_none() {
                AgentFacts::Missing
            } else {
                AgentFacts::NotReady {
                    version: agent.vm_agent_version.clone(),
                    status: display,
                    message,
                }
            }
        }
    };
    VmFacts {
        os,
        location: vm.resource.location,
        power_state,
        power_display,
        provisioning_state,
        provisioning_message,
        agent,
        nic_ids: nic_ids(properties.network_profile.as_ref()),
        boot_diagnostics_enabled: boot_diagnostics_enabled(&properties),
    }
}

fn access(a: Option<&network::SecurityRuleAccess>) -> Access {
    match a {
        Some(network::SecurityRuleAccess::Allow) => Access::Allow,
        // Unknown or missing access: treat as a deny so we never claim a port is open.
        _ => Access::Deny,
    }
}

fn effective_rule(rule: network::EffectiveNetworkSecurityRule) -> EffectiveRule {
    use network::effective_network_security_rule::Protocol;
    let merge = |one: Option<String>, many: Vec<String>| -> Vec<String> {
        let mut all: Vec<String> = one.into_iter().collect();
        all.extend(many);
        all
    };
    EffectiveRule {
        name: rule.name.unwrap_or_default(),
        protocol: match rule.protocol {
            Some(Protocol::Tcp) => "Tcp".into(),
            Some(Protocol::Udp) => "Udp".into(),
            Some(Protocol::All) => "All".into(),
            Some(Protocol::UnknownValue(v)) => v,
            None => "All".into(),
        },
        source_address_prefixes: merge(rule.source_address_prefix, rule.source_address_prefixes),
        expanded_source_address_prefixes: rule.expanded_source_address_prefix,
        destination_address_prefixes: merge(
            rule.destination_address_prefix,
            rule.destination_address_prefixes,
        ),
        expanded_destination_address_prefixes: rule.expanded_destination_address_prefix,
        destination_port_ranges: merge(rule.destination_port_range, rule.destination_port_ranges),
        access: access(rule.access.as_ref()),
        priority: rule.priority.unwrap_or(i32::MAX),
        direction: match rule.direction {
            Some(network::SecurityRuleDirection::Outbound) => Direction::Outbound,
            _ => Direction::Inbound,
        },
    }
}

pub(crate) fn effective_nsgs(
    list: network::EffectiveNetworkSecurityGroupListResult,
) -> Vec<EffectiveNsg> {
    list.value
        .into_iter()
        .map(|group| {
            let nsg_id = group
                .network_security_group
                .and_then(|g| g.id)
                .unwrap_or_default();
            let association = match group.association {
                Some(a) => match (
                    a.subnet.and_then(|s| s.id),
                    a.network_interface.and_then(|n| n.id),
                ) {
                    (Some(subnet), _) => Association::Subnet(subnet),
                    (None, Some(nic)) => Association::NetworkInterface(nic),
                    (None, None) => {
                        Association::Other(a.network_manager.and_then(|m| m.id).unwrap_or_default())
                    }
                },
                None => Association::Other(String::new()),
            };
            EffectiveNsg {
                nsg_id,
                association,
                rules: group
                    .effective_security_rules
                    .into_iter()
                    .map(effective_rule)
                    .collect(),
            }
        })
        .collect()
}

fn ip_allocation(method: Option<&network::IpAllocationMethod>) -> Option<String> {
    method.map(|m| match m {
        network::IpAllocationMethod::Static => "Static".to_string(),
        network::IpAllocationMethod::Dynamic => "Dynamic".to_string(),
        network::IpAllocationMethod::UnknownValue(v) => v.clone(),
    })
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ArmError {
    ArmError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// A NIC's facts from what is at hand: the NIC (its public IP expanded or not) and a list of
/// public IPs; and the id of its public IP if neither held it (still to read).
pub(crate) fn listed_nic_facts(
    nic_id: &str,
    nic: network::NetworkInterface,
    public_ips: &std::collections::HashMap<String, PublicIpFacts>,
) -> (NicFacts, Option<String>) {
    let properties = nic.properties.unwrap_or_default();
    let nsg_id = properties
        .network_security_group
        .as_ref()
        .and_then(|n| n.resource.id.clone());
    let config = properties
        .ip_configurations
        .iter()
        .find(|c| {
            c.properties
                .as_ref()
                .and_then(|p| p.primary)
                .unwrap_or(false)
        })
        .or_else(|| properties.ip_configurations.first())
        .and_then(|c| c.properties.clone())
        .unwrap_or_default();
    let mut facts = NicFacts {
        nic_id: nic_id.to_string(),
        private_ip: config.private_ip_address,
        private_ip_allocation: ip_allocation(config.private_ip_allocation_method.as_ref()),
        public_ip: None,
        subnet_id: config
            .subnet
            .as_ref()
            .and_then(|s| s.sub_resource.id.clone()),
        nsg_id,
    };
    let Some((pip_id, pip)) = config
        .public_ip_address
        .and_then(|pip| pip.resource.id.clone().map(|id| (id, pip)))
    else {
        return (facts, None);
    };
    match expanded_public_ip(&pip_id, &pip)
        .or_else(|| public_ips.get(&pip_id.to_ascii_lowercase()).cloned())
    {
        Some(found) => {
            facts.public_ip = Some(found);
            (facts, None)
        }
        None => (facts, Some(pip_id)),
    }
}

pub(crate) fn public_ip_facts(
    pip_id: &str,
    fallback_name: &str,
    pip: network::PublicIpAddress,
) -> PublicIpFacts {
    let properties = pip.properties.map(|p| *p).unwrap_or_default();
    PublicIpFacts {
        id: pip_id.to_string(),
        name: pip
            .resource
            .name
            .unwrap_or_else(|| fallback_name.to_string()),
        address: properties.ip_address,
        allocation: ip_allocation(properties.public_ip_allocation_method.as_ref()),
        sku: pip.sku.and_then(|s| s.name).map(|n| {
            serde_json::to_value(&n)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{n:?}"))
        }),
    }
}

/// The public IP as the NIC read expanded it, if Azure expanded it (a bare `{"id"}` otherwise).
fn expanded_public_ip(pip_id: &str, pip: &network::PublicIpAddress) -> Option<PublicIpFacts> {
    let expanded = pip
        .properties
        .as_ref()
        .is_some_and(|p| p.public_ip_allocation_method.is_some() || p.ip_address.is_some());
    if !expanded {
        return None;
    }
    let name = ResourceId::parse(pip_id)
        .map(|id| id.name)
        .unwrap_or_default();
    Some(public_ip_facts(pip_id, &name, pip.clone()))
}

pub(crate) fn health_facts(
    status: azure_mgmt_resourcehealth::package_2024_02::models::AvailabilityStatus,
) -> HealthFacts {
    let properties = status.properties.unwrap_or_default();
    HealthFacts {
        state: properties
            .availability_state
            .as_ref()
            .map(erased::AsJson::as_json_str)
            .unwrap_or_else(|| "Unknown".into()),
        summary: properties.summary,
        detailed_status: properties.detailed_status,
        reason_type: properties.reason_type,
        occurred: properties.occured_time.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        recommended_actions: properties
            .recommended_actions
            .into_iter()
            .filter_map(|a| a.action)
            .collect(),
    }
}

/// Why a console screenshot could not become a PNG.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    #[error("the screenshot is not a readable BMP ({0})")]
    NotBmp(image::ImageError),
    #[error("could not convert the screenshot to PNG ({0})")]
    Png(image::ImageError),
}

/// Convert a Windows BMP (as boot diagnostics store the console) into a PNG for chat and files.
pub fn bmp_to_png(bmp: &[u8]) -> Result<Vec<u8>, ScreenshotError> {
    let image = image::load_from_memory_with_format(bmp, image::ImageFormat::Bmp)
        .map_err(ScreenshotError::NotBmp)?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(ScreenshotError::Png)?;
    Ok(png.into_inner())
}

impl Arm {
    /// `GET VM?$expand=instanceView`: model and instance view in one read.
    pub async fn vm_facts(&self, vm: &VmRef) -> Result<VmFacts, ArmError> {
        let what = format!("reading VM {}", vm.name);
        let model = self
            .compute
            .virtual_machines_client()
            .get(&vm.resource_group, &vm.name, &vm.subscription_id)
            .expand("instanceView")
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(vm_facts(model))
    }

    /// The NIC (private IP) with its public IP expanded in the same read; a second read of the
    /// public IP only when Azure did not expand it.
    pub async fn nic_facts(&self, nic_id: &str) -> Result<NicFacts, ArmError> {
        let id = ResourceId::parse(nic_id).map_err(|e| malformed("NIC id", e))?;
        let what = format!("reading network interface {}", id.name);
        let nic = self
            .network
            .network_interfaces_client()
            .get(&id.resource_group, &id.name, &id.subscription_id)
            .expand("ipConfigurations/publicIPAddress")
            .await
            .map_err(|e| self.map_err(e, &what))?;
        self.nic_facts_from(nic_id, nic, &Default::default()).await
    }

    /// Facts from a NIC already read. The public IP comes from the NIC's expansion, else from
    /// `public_ips` (a resource group's list), else from its own read.
    pub(crate) async fn nic_facts_from(
        &self,
        nic_id: &str,
        nic: network::NetworkInterface,
        public_ips: &std::collections::HashMap<String, PublicIpFacts>,
    ) -> Result<NicFacts, ArmError> {
        let (mut facts, missing) = listed_nic_facts(nic_id, nic, public_ips);
        if let Some(pip_id) = missing {
            facts.public_ip = Some(self.public_ip(&pip_id).await?);
        }
        Ok(facts)
    }

    async fn public_ip(&self, pip_id: &str) -> Result<PublicIpFacts, ArmError> {
        let id = ResourceId::parse(pip_id).map_err(|e| malformed("public IP id", e))?;
        let what = format!("reading public IP {}", id.name);
        let pip = self
            .network
            .public_ip_addresses_client()
            .get(&id.resource_group, &id.name, &id.subscription_id)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(public_ip_facts(pip_id, &id.name, pip))
    }

    /// `POST effectiveNetworkSecurityGroups`, followed to its final 200 on the Location URL.
    pub async fn effective_nsgs(&self, nic_id: &str) -> Result<Vec<EffectiveNsg>, ArmError> {
        let id = ResourceId::parse(nic_id).map_err(|e| malformed("NIC id", e))?;
        let what = format!("listing the effective security rules of {}", id.name);
        let response = self
            .network
            .network_interfaces_client()
            .list_effective_network_security_groups(
                &id.resource_group,
                &id.name,
                &id.subscription_id,
            )
            .send()
            .await
            .map_err(|e| self.map_err(e, &what))?
            .into_raw_response();
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await.map_err(|e| self.map_err(e, &what))?;
        let pending = Pending::from_headers(&headers);
        let result = self.follow(u16::from(status), body, pending, &what).await?;
        let list: network::EffectiveNetworkSecurityGroupListResult =
            serde_json::from_slice(&result).map_err(|e| malformed(&what, e))?;
        Ok(effective_nsgs(list))
    }

    /// `Ok` when Azure refused a Resource Health request because the subscription has not
    /// registered Microsoft.ResourceHealth (`MissingSubscriptionRegistration`); the error
    /// otherwise.
    pub(crate) fn health_unregistered(
        &self,
        error: azure_core::Error,
        what: &str,
    ) -> Result<(), ArmError> {
        let error = self.map_err(error, what);
        match error.code() {
            Some("MissingSubscriptionRegistration") => Ok(()),
            _ => Err(error),
        }
    }

    /// Resource Health's current availability status (with recommended actions).
    pub async fn resource_health(&self, vm: &VmRef) -> Result<HealthOutcome, ArmError> {
        let what = format!("reading Resource Health of {}", vm.name);
        let uri = vm.id.trim_start_matches('/');
        let status = match self
            .health
            .availability_statuses_client()
            .get_by_resource(uri)
            .expand("recommendedactions")
            .await
        {
            Ok(status) => status,
            Err(e) => {
                self.health_unregistered(e, &what)?;
                return Ok(HealthOutcome::Unregistered);
            }
        };
        Ok(HealthOutcome::Status(health_facts(status)))
    }

    /// `POST retrieveBootDiagnosticsData`, then download both blobs with their SAS URLs.
    /// The URLs never leave this function: not in errors, not in logs.
    pub async fn boot_diagnostics(&self, vm: &VmRef) -> Result<BootFacts, ArmError> {
        let what = format!("retrieving boot diagnostics of {}", vm.name);
        let data = self
            .compute
            .virtual_machines_client()
            .retrieve_boot_diagnostics_data(&vm.resource_group, &vm.name, &vm.subscription_id)
            .sas_uri_expiration_time_in_minutes(5)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        let (screenshot, serial) = tokio::join!(
            self.download(data.console_screenshot_blob_uri.as_deref(), "screenshot"),
            self.download_tail(data.serial_console_log_blob_uri.as_deref(), "serial log"),
        );
        let mut facts = BootFacts::default();
        match screenshot
            .and_then(|bmp| bmp_to_png(&bmp).map_err(|e| BlobFailure::Other(e.to_string())))
        {
            Ok(png) => facts.screenshot_png = Some(png),
            Err(BlobFailure::Firewall) => facts.storage_firewall = true,
            Err(BlobFailure::Other(e)) => facts.screenshot_error = Some(e),
        }
        match serial {
            Ok(log) => {
                facts.serial_tail = crate::diagnose::tail_lines(
                    &String::from_utf8_lossy(&log),
                    crate::diagnose::SERIAL_TAIL_LINES,
                )
            }
            Err(BlobFailure::Firewall) => facts.storage_firewall = true,
            Err(BlobFailure::Other(e)) => facts.serial_error = Some(e),
        }
        Ok(facts)
    }

    /// The end of a log blob: at most its last [`SERIAL_TAIL_BYTES`], starting at a whole line.
    ///
    /// Get Blob takes `bytes=start-end` ranges but no suffix range (`bytes=-N`), so the first
    /// request asks for the first [`SERIAL_TAIL_BYTES`]: that is the whole of most serial logs,
    /// in one round trip, and its `Content-Range` says how long the blob is. A longer log's tail
    /// is a second range request; its first line is cut in the middle and dropped.
    async fn download_tail(
        &self,
        sas_url: Option<&str>,
        what: &str,
    ) -> Result<Vec<u8>, BlobFailure> {
        let Some(sas_url) = sas_url else {
            return Err(BlobFailure::Other(format!("Azure returned no {what} URL")));
        };
        if !super::lro::blob_url_allowed(sas_url, &self.settings.endpoint) {
            return Err(BlobFailure::Other(format!(
                "{what} not downloaded: Azure named a blob URL that is not https"
            )));
        }
        let head = self
            .download_range(sas_url, 0, SERIAL_TAIL_BYTES - 1, what)
            .await?;
        let total = match head {
            Ranged::All(bytes) => return Ok(bytes),
            Ranged::Part { bytes, total } if total <= SERIAL_TAIL_BYTES => return Ok(bytes),
            Ranged::Part { total, .. } => total,
        };
        let start = total - SERIAL_TAIL_BYTES;
        match self.download_range(sas_url, start, total - 1, what).await? {
            Ranged::All(bytes) => Ok(bytes),
            Ranged::Part { bytes, .. } => Ok(from_first_whole_line(bytes)),
        }
    }

    /// `GET` with `Range: bytes=start-end`: the part Azure sent, with the blob's length, or all
    /// of it (a 200: the range was ignored; a 416: the blob is empty).
    async fn download_range(
        &self,
        sas_url: &str,
        start: u64,
        end: u64,
        what: &str,
    ) -> Result<Ranged, BlobFailure> {
        let response = self
            .blobs
            .get(sas_url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| BlobFailure::unanswered(what, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // The offset is beyond the blob's end: from 0, that is an empty blob.
            return Ok(Ranged::All(Vec::new()));
        }
        if !status.is_success() {
            return Err(BlobFailure::refused(what, &response));
        }
        let total = (status == reqwest::StatusCode::PARTIAL_CONTENT)
            .then(|| {
                response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_total)
            })
            .flatten();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| BlobFailure::unanswered(what, e))?
            .to_vec();
        Ok(match total {
            Some(total) => Ranged::Part { bytes, total },
            // A 200, or a 206 that does not say the blob's length: take what came.
            None => Ranged::All(bytes),
        })
    }

    async fn download(&self, sas_url: Option<&str>, what: &str) -> Result<Vec<u8>, BlobFailure> {
        let Some(sas_url) = sas_url else {
            return Err(BlobFailure::Other(format!("Azure returned no {what} URL")));
        };
        // Only the storage host Azure named, over https (plain http only when ARM itself is
        // the simulator on loopback), and never with the ARM token (`blobs` has none).
        if !super::lro::blob_url_allowed(sas_url, &self.settings.endpoint) {
            return Err(BlobFailure::Other(format!(
                "{what} not downloaded: Azure named a blob URL that is not https"
            )));
        }
        let response = self
            .blobs
            .get(sas_url)
            .send()
            .await
            .map_err(|e| BlobFailure::unanswered(what, e))?;
        if !response.status().is_success() {
            return Err(BlobFailure::refused(what, &response));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| BlobFailure::unanswered(what, e))?;
        Ok(bytes.to_vec())
    }
}

/// Why a boot-diagnostics blob did not arrive. Texts hold the status or the transport error
/// without its URL, never the SAS.
enum BlobFailure {
    /// 403 `AuthorizationFailure`: Azure Storage's answer to a request from outside the
    /// account's allowed networks (its firewall), whatever the SAS says.
    Firewall,
    Other(String),
}

impl BlobFailure {
    fn refused(what: &str, response: &reqwest::Response) -> BlobFailure {
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok());
        if status == reqwest::StatusCode::FORBIDDEN && code == Some("AuthorizationFailure") {
            return BlobFailure::Firewall;
        }
        BlobFailure::Other(format!("{what} download failed (HTTP {})", status.as_u16()))
    }

    fn unanswered(what: &str, error: reqwest::Error) -> BlobFailure {
        BlobFailure::Other(format!("{what} download failed ({})", error.without_url()))
    }
}

/// How much of a serial log a check reads: its last 64 KiB. The report shows the last 40 lines
/// (`diagnose::SERIAL_TAIL_LINES`); serial console lines (SAC, a kernel's boot messages) are
/// rarely longer than 200 bytes, so 64 KiB holds those 40 lines even at 1,600 bytes each, while a
/// log that has grown to megabytes over a VM's life is not downloaded whole for them.
pub(crate) const SERIAL_TAIL_BYTES: u64 = 64 * 1024;

/// A blob, or a part of it.
enum Ranged {
    All(Vec<u8>),
    Part { bytes: Vec<u8>, total: u64 },
}

/// `bytes 0-65535/1234567` → 1234567.
fn content_range_total(value: &str) -> Option<u64> {
    value.trim().rsplit_once('/')?.1.trim().parse().ok()
}

/// The bytes after the first line break: a range that starts mid-file starts mid-line (and
/// perhaps mid-character).
fn from_first_whole_line(mut bytes: Vec<u8>) -> Vec<u8> {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(at) => {
            bytes.drain(..=at);
            bytes
        }
        None => Vec::new(),
    }
}

/// Azure's string enums serialise to their wire value; use that for display.
mod erased {
    pub trait AsJson {
        fn as_json_str(&self) -> String;
    }
    impl<T: serde::Serialize + std::fmt::Debug> AsJson for T {
        fn as_json_str(&self) -> String {
            serde_json::to_value(self)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{self:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_starts_at_a_whole_line_and_content_range_gives_the_length() {
        assert_eq!(
            from_first_whole_line(b"ne 7\r\nline 8\r\n".to_vec()),
            b"line 8\r\n"
        );
        assert!(from_first_whole_line(b"no line break".to_vec()).is_empty());
        assert_eq!(content_range_total("bytes 0-65535/200000"), Some(200_000));
        assert_eq!(content_range_total("bytes */0"), Some(0));
        assert_eq!(content_range_total("garbage"), None);
    }

    fn example(path: &str) -> String {
        let full = format!(
            "{}/tests/fixtures/arm-examples/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    fn response_body(example_text: &str, status: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(example_text).unwrap();
        v["responses"][status]["body"].clone()
    }

    #[test]
    fn instance_view_example_becomes_facts() {
        let vm: compute::VirtualMachine = serde_json::from_value(response_body(
            &example("compute/VirtualMachine_Get.json"),
            "200",
        ))
        .unwrap();
        let facts = vm_facts(vm);
        assert_eq!(facts.os, OsType::Windows);
        assert!(facts.boot_diagnostics_enabled);
        assert_eq!(facts.provisioning_state.as_deref(), Some("succeeded"));
    }

    #[test]
    fn effective_nsg_example_becomes_rules() {
        let list: network::EffectiveNetworkSecurityGroupListResult =
            serde_json::from_value(response_body(
                &example("network/NetworkInterfaceEffectiveNSGList.json"),
                "200",
            ))
            .unwrap();
        let nsgs = effective_nsgs(list);
        let rules: Vec<&EffectiveRule> = nsgs.iter().flat_map(|n| &n.rules).collect();
        let rdp = rules
            .iter()
            .find(|r| r.name == "securityRules/default-allow-rdp")
            .expect("the example has default-allow-rdp");
        assert_eq!(rdp.protocol, "Tcp");
        assert_eq!(rdp.destination_port_ranges, vec!["3389-3389"]);
        assert_eq!(rdp.source_address_prefixes, vec!["1.1.1.1/32"]);
        assert_eq!(rdp.access, Access::Allow);
        assert_eq!(rdp.priority, 1000);
    }
}
