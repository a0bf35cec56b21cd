//! `public-ip`: RDP from outside the virtual network needs a public IP on the primary NIC,
//! unless people come in over VPN, ExpressRoute or Azure Bastion (the portal's tip). A VM
//! without one that an Azure Bastion host in its virtual network, or in one directly peered with
//! it, reaches passes: Bastion connects to the VM's private IP from its `AzureBastionSubnet`.

use super::{CheckId, Finding, NicFacts, Status};
use serde::Serialize;
use std::net::Ipv4Addr;

/// An Azure Bastion host in the VM's virtual network or a peered one
/// (`Microsoft.Network/bastionHosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BastionFacts {
    pub name: String,
    pub resource_group: String,
    /// `sku.name`: Basic, Standard, Premium or Developer.
    pub sku: String,
    /// `enableTunneling`: native client support.
    pub tunneling: bool,
    /// The `AzureBastionSubnet` prefix, where Bastion's connections to the VM come from.
    pub subnet_prefix: Option<String>,
    /// The virtual network the host is in when it is not the VM's own but one peered with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peered_vnet: Option<String>,
}

impl BastionFacts {
    /// Whether `az network bastion rdp` (the native client) works through this host: Standard
    /// or Premium with tunneling enabled (learn.microsoft.com/azure/bastion/native-client).
    pub fn native_client(&self) -> bool {
        self.tunneling && matches!(self.sku.as_str(), "Standard" | "Premium")
    }

    /// The address of the `AzureBastionSubnet` the `nsg` check judges 3389 from: the first one
    /// Azure hands out in a subnet (it keeps .0 to .3 for itself).
    pub fn source_address(&self) -> Option<Ipv4Addr> {
        let net: ipnet::Ipv4Net = self.subnet_prefix.as_deref()?.parse().ok()?;
        Some(Ipv4Addr::from(u32::from(net.network()) + 4))
    }
}

/// `public-ip` for a VM without a public IP that `bastion` reaches: a pass, with how to connect
/// (`az network bastion rdp` for the native client, else the portal) as the next step.
pub fn through_bastion(nic: &NicFacts, bastion: &BastionFacts, vm_id: &str) -> Finding {
    let mut finding = Finding::new(
        CheckId::PublicIp,
        Status::Pass,
        format!(
            "No public IP (private IP {}): reached through Azure Bastion {} ({}){}",
            nic.private_ip.as_deref().unwrap_or("unknown"),
            bastion.name,
            bastion.sku,
            bastion
                .peered_vnet
                .as_deref()
                .map(|v| format!(" in the peered virtual network {v}"))
                .unwrap_or_default()
        ),
    );
    let next = if bastion.native_client() {
        format!(
            "Connect through Azure Bastion: az network bastion rdp --name {} --resource-group {} --target-resource-id {vm_id} (or from the portal: the VM's Connect > Bastion)",
            bastion.name, bastion.resource_group
        )
    } else {
        let why = if bastion.tunneling {
            format!("the {} SKU", bastion.sku)
        } else if matches!(bastion.sku.as_str(), "Standard" | "Premium") {
            "native client support (tunneling) is disabled".to_owned()
        } else {
            format!("the {} SKU has no native client support", bastion.sku)
        };
        finding = finding.detail(format!(
            "Bastion {} cannot be used with the native client (az network bastion rdp): {why}.",
            bastion.name
        ));
        format!(
            "Connect through Azure Bastion from the portal (the VM's Connect > Bastion); Bastion {} has no native client support",
            bastion.name
        )
    };
    finding
        .next_step(next)
        .evidence(serde_json::json!({"nic": nic, "bastion": bastion}))
}

pub fn check(nic: &NicFacts, no_public_ip_tip: &str) -> Finding {
    let finding = match &nic.public_ip {
        None => Finding::new(
            CheckId::PublicIp,
            Status::Warn,
            format!(
                "No public IP on the primary NIC (private IP {})",
                nic.private_ip.as_deref().unwrap_or("unknown")
            ),
        )
        .detail(no_public_ip_tip),
        Some(ip) => match (&ip.address, ip.allocation.as_deref()) {
            (Some(address), allocation) => Finding::new(
                CheckId::PublicIp,
                Status::Pass,
                format!(
                    "Public IP {address} ({}{}, {})",
                    allocation.unwrap_or("unknown allocation").to_lowercase(),
                    ip.sku
                        .as_deref()
                        .map(|s| format!(", {s} SKU"))
                        .unwrap_or_default(),
                    ip.name
                ),
            ),
            (None, Some("Dynamic")) => Finding::new(
                CheckId::PublicIp,
                Status::Warn,
                format!(
                    "Public IP {} is dynamic and has no address now; Azure assigns one when the VM starts",
                    ip.name
                ),
            ),
            (None, _) => Finding::new(
                CheckId::PublicIp,
                Status::Warn,
                format!("Public IP {} has no address assigned", ip.name),
            ),
        },
    };
    finding.evidence(nic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::PublicIpFacts;

    fn nic(public_ip: Option<PublicIpFacts>) -> NicFacts {
        NicFacts {
            nic_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/web-01-nic".into(),
            private_ip: Some("10.0.1.4".into()),
            private_ip_allocation: Some("Dynamic".into()),
            public_ip,
            subnet_id: None,
            nsg_id: None,
        }
    }

    fn ip(address: Option<&str>, allocation: &str) -> PublicIpFacts {
        PublicIpFacts {
            id: "/pip".into(),
            name: "web-01-ip".into(),
            address: address.map(str::to_string),
            allocation: Some(allocation.into()),
            sku: Some("Standard".into()),
        }
    }

    #[test]
    fn statuses() {
        let cases = [
            (
                nic(Some(ip(Some("20.1.2.3"), "Static"))),
                Status::Pass,
                "20.1.2.3 (static",
            ),
            (
                nic(Some(ip(None, "Dynamic"))),
                Status::Warn,
                "dynamic and has no address",
            ),
            (nic(None), Status::Warn, "No public IP"),
        ];
        for (facts, status, text) in cases {
            let finding = check(&facts, "Use VPN, ExpressRoute or Bastion");
            assert_eq!(finding.status, status);
            assert!(finding.summary.contains(text), "{}", finding.summary);
        }
        assert_eq!(check(&nic(None), "tip").details, vec!["tip"]);
    }

    #[test]
    fn bastion_passes_and_says_how_to_connect() {
        let mut bastion = BastionFacts {
            name: "bastion-hub".into(),
            resource_group: "rg".into(),
            sku: "Standard".into(),
            tunneling: true,
            subnet_prefix: Some("10.0.255.0/26".into()),
            peered_vnet: None,
        };
        assert_eq!(bastion.source_address(), Some(Ipv4Addr::new(10, 0, 255, 4)));
        let f = through_bastion(&nic(None), &bastion, "/vm");
        assert_eq!(f.status, Status::Pass);
        assert!(f.summary.ends_with("Azure Bastion bastion-hub (Standard)"));
        assert!(f.next_step.as_deref().is_some_and(|n| {
            n.contains(
            "az network bastion rdp --name bastion-hub --resource-group rg --target-resource-id /vm"
        )
        }));
        bastion.peered_vnet = Some("vnet-hub".into());
        let peered = through_bastion(&nic(None), &bastion, "/vm");
        assert!(
            peered.summary.ends_with(
                "Azure Bastion bastion-hub (Standard) in the peered virtual network vnet-hub"
            ),
            "{}",
            peered.summary
        );
        assert!(peered
            .next_step
            .as_deref()
            .is_some_and(|n| n.contains("--name bastion-hub --resource-group rg ")));
        bastion.peered_vnet = None;
        bastion.sku = "Basic".into();
        bastion.tunneling = false;
        let basic = through_bastion(&nic(None), &bastion, "/vm");
        assert!(basic
            .next_step
            .as_deref()
            .is_some_and(|n| n.contains("portal")));
        assert!(
            basic.details[0].contains("Basic SKU"),
            "{:?}",
            basic.details
        );
    }
}
