//! `public-ip`: RDP from outside the virtual network needs a public IP on the primary NIC,
//! unless people come in over VPN, ExpressRoute or Azure Bastion (the portal's tip).

use super::{CheckId, Finding, NicFacts, Status};

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
}
