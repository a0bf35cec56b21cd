//! Azure Bastion (issue 15, part 2): a VM without a public IP that a Bastion host in its virtual
//! network, or in one peered with it, reaches, through the real SDK against the simulator's
//! `bastionHosts` list, virtual networks with their peerings and `AzureBastionSubnet`; the demo
//! world's `bastion-01` and `bastion-02` as the binary.

use crate::gates::{gate_part, simulated_check, sweep_rg_web};
use crate::support;

use rdp_doctor::runbook::Verdict;
use rdp_doctor::sim::{Rule, World};
use support::{finding, requests_to, within, Harness};

const BASTIONS: &str = "/providers/Microsoft.Network/bastionHosts";
const BASTION_SUBNET: &str = "/subnets/AzureBastionSubnet";

/// A VM without a public IP whose NIC NSG denies 3389 from the Internet (priority 100) ahead of
/// its allow from anywhere, in a virtual network with Bastion `bastion-hub` of `sku`.
fn private_vm(sku: &str, tunneling: bool) -> World {
    World::new()
        .vm("web-01")
        .no_public_ip()
        .nic_nsg_denies_rdp()
        .bastion("bastion-hub", sku, tunneling)
}

#[tokio::test]
async fn a_bastion_in_the_virtual_network_passes_public_ip_and_the_nsg_is_judged_from_its_subnet() {
    within(async {
        let h = Harness::start(private_vm("Standard", true)).await;
        let report = h.check("web-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Ok);
        let ip = finding(&report, "public-ip");
        assert_eq!(ip.status.as_str(), "pass");
        assert_eq!(
            ip.summary,
            "No public IP (private IP 10.0.1.4): reached through Azure Bastion bastion-hub (Standard)"
        );
        assert_eq!(ip.evidence["bastion"]["subnet_prefix"], "10.0.255.0/26");
        // The Internet's deny does not matter: Bastion connects from its subnet.
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "pass", "{}", nsg.summary);
        assert_eq!(
            nsg.summary,
            "TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet (10.0.255.0/26) is allowed by rule allow-rdp (priority 1000) in NSG web-01-nsg"
        );
        assert!(
            nsg.details.iter().any(|d| d.contains("not from the Internet")),
            "{:?}",
            nsg.details
        );
        assert_eq!(report.next_action, None);
        let next = ip.next_step.as_deref().expect("how to connect");
        assert!(
            next.contains("az network bastion rdp --name bastion-hub --resource-group rg-web --target-resource-id /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"),
            "{next}"
        );
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
        assert_eq!(requests_to(&h.sim, "GET", BASTION_SUBNET), 1);
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

/// `world` with the NIC NSG of web-01 denying TCP 3389 from `source` (rule `name`, priority
/// 110, ahead of its allow), checked: `public-ip` still passes through the Bastion and `nsg`
/// fails, judged from the Bastion's subnet `subnet`.
async fn denied_from_the_bastion(
    mut world: World,
    name: &str,
    source: &str,
    subnet: &str,
) -> rdp_doctor::runbook::Report {
    let nsg = world
        .nsgs
        .iter_mut()
        .find(|n| n.name == "web-01-nsg")
        .expect("the NIC's NSG");
    nsg.rules
        .push(Rule::inbound_tcp(name, 110, "Deny", source, "3389"));
    let h = Harness::start(world).await;
    let report = h.check("web-01").await.expect("report");
    assert_eq!(report.verdict, Verdict::Problems);
    assert_eq!(finding(&report, "public-ip").status.as_str(), "pass");
    let nsg = finding(&report, "nsg");
    assert_eq!(nsg.status.as_str(), "fail", "{}", nsg.summary);
    let expected = format!(
        "TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet ({subnet}) is denied by rule {name} (priority 110)"
    );
    assert!(nsg.summary.starts_with(&expected), "{}", nsg.summary);
    report
}

#[tokio::test]
async fn a_deny_from_the_bastion_subnet_fails_the_nsg_check() {
    within(async {
        let report = denied_from_the_bastion(
            private_vm("Standard", true),
            "deny-bastion",
            "10.0.255.0/26",
            "10.0.255.0/26",
        )
        .await;
        // The fix must admit the Bastion subnet, not the person's own address: the report's
        // next step says which source to give open-rdp-port.
        assert_eq!(
            report.next_action.map(|a| a.as_str()),
            Some("open-rdp-port")
        );
        let advice = report.next_action_advice().expect("the source to admit");
        assert!(
            advice.contains("`rdp-doctor open-rdp web-01 --source 10.0.255.0/26`"),
            "{advice}"
        );
    })
    .await
}

#[tokio::test]
async fn a_basic_bastion_or_one_without_tunneling_sends_you_to_the_portal() {
    within(async {
        for (sku, tunneling, why) in [
            ("Basic", false, "the Basic SKU has no native client support"),
            (
                "Standard",
                false,
                "native client support (tunneling) is disabled",
            ),
        ] {
            let h = Harness::start(private_vm(sku, tunneling)).await;
            let report = h.check("web-01").await.expect("report");
            let ip = finding(&report, "public-ip");
            assert_eq!(ip.status.as_str(), "pass");
            assert!(
                ip.summary
                    .ends_with(&format!("Azure Bastion bastion-hub ({sku})")),
                "{}",
                ip.summary
            );
            assert!(
                ip.details.iter().any(|d| d.contains(why)),
                "{sku}: {:?}",
                ip.details
            );
            let next = ip.next_step.as_deref().expect("how to connect");
            assert!(next.contains("from the portal"), "{next}");
            assert!(!next.contains("az network bastion rdp"), "{next}");
        }
    })
    .await
}

#[tokio::test]
async fn without_a_bastion_a_vm_without_a_public_ip_keeps_todays_finding() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .no_public_ip()
            .nic_nsg_denies_rdp()
            // A Bastion in another virtual network, not peered with its own, does not reach it.
            .vm("hub-01")
            .in_vnet("vnet-hub")
            .bastion("bastion-hub", "Standard", true);
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        let ip = finding(&report, "public-ip");
        assert_eq!(ip.status.as_str(), "warn");
        assert!(
            ip.summary.starts_with("No public IP on the primary NIC"),
            "{}",
            ip.summary
        );
        let nsg = finding(&report, "nsg");
        assert_eq!(nsg.status.as_str(), "fail");
        assert!(
            nsg.summary.starts_with("TCP 3389 from the Internet"),
            "{}",
            nsg.summary
        );
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
        assert_eq!(requests_to(&h.sim, "GET", BASTION_SUBNET), 0);
    })
    .await
}

#[tokio::test]
async fn a_vm_with_a_public_ip_costs_no_bastion_read() {
    within(async {
        let plain = Harness::start(World::new().vm("web-01")).await;
        let with_bastion = Harness::start(World::new().vm("web-01").bastion(
            "bastion-hub",
            "Standard",
            true,
        ))
        .await;
        let a = plain.check("web-01").await.expect("report");
        let b = with_bastion.check("web-01").await.expect("report");
        assert_eq!(
            finding(&b, "public-ip").summary,
            finding(&a, "public-ip").summary
        );
        assert_eq!(finding(&b, "nsg").summary, finding(&a, "nsg").summary);
        assert_eq!(requests_to(&with_bastion.sim, "GET", BASTIONS), 0);
        assert_eq!(requests_to(&with_bastion.sim, "GET", BASTION_SUBNET), 0);
        assert_eq!(b.stats.arm_requests, a.stats.arm_requests);
    })
    .await
}

#[tokio::test]
async fn a_sweep_does_not_call_bastion_vms_problems_and_reads_the_bastion_once() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .no_public_ip()
            .bastion("bastion-hub", "Standard", true)
            .vm("web-02")
            .no_public_ip()
            .vm("web-03");
        let h = Harness::start(world).await;
        let report = sweep_rg_web(&h).await;
        let rows: Vec<(&str, &str)> = report
            .vms
            .iter()
            .map(|r| (r.vm.name.as_str(), r.verdict.as_str()))
            .collect();
        assert_eq!(rows, [("web-01", "ok"), ("web-02", "ok"), ("web-03", "ok")]);
        assert_eq!(report.count(Verdict::Problems), 0);
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
        assert_eq!(requests_to(&h.sim, "GET", BASTION_SUBNET), 1);
    })
    .await
}

#[tokio::test]
async fn check_bastion_01_simulate_says_how_to_connect_through_bastion() {
    within(async {
        let text = simulated_check("bastion-01", 0).await;
        insta::assert_snapshot!(gate_part(&text), @r"
        Verdict: OK: nothing found that blocks Remote Desktop
          PASS  VM has a public IP (or a private path)
                No public IP (private IP 10.20.1.4): reached through Azure Bastion bastion-hub (Standard)
          PASS  Network security group allows TCP 3389
                TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet (10.20.255.0/26) is allowed by rule allow-rdp-vnet (priority 1000) in NSG nsg-private
                Judged as from 10.20.255.4, in Azure Bastion bastion-hub's AzureBastionSubnet (10.20.255.0/26): Bastion's connections to the VM come from there, not from the Internet, since the VM has no public IP.
        Next step: Connect through Azure Bastion: az network bastion rdp --name bastion-hub --resource-group rg-web --target-resource-id /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/bastion-01 (or from the portal: the VM's Connect > Bastion)
        ");
    })
    .await
}

#[tokio::test]
async fn a_role_on_the_resource_group_only_finds_the_bastion_in_its_list() {
    within(async {
        let world = private_vm("Standard", true)
            .principal(support::CLIENT, "sp-secret")
            .role_at(
                "Reader",
                &format!(
                    "/subscriptions/{}/resourceGroups/rg-web",
                    rdp_doctor::sim::DEFAULT_SUBSCRIPTION
                ),
            );
        let h = Harness::build(world).secret("sp-secret").start().await;
        let report = h.check("rg-web/web-01").await.expect("report");
        let ip = finding(&report, "public-ip");
        assert_eq!(
            ip.status.as_str(),
            "pass",
            "{} {:?}",
            ip.summary,
            ip.details
        );
        assert!(ip.summary.ends_with("Azure Bastion bastion-hub (Standard)"));
        // The subscription's list was refused, the resource group's answered.
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 2);
    })
    .await
}

// --- A Bastion host in a peered virtual network ---------------------------------------------

const SPOKE_VNET: &str = "/virtualNetworks/vnet-spoke";
const HUB_BASTION_SUBNET: &str = "/virtualNetworks/vnet-hub/subnets/AzureBastionSubnet";

/// `web-01` (10.0.1.4, no public IP, its NIC NSG denying 3389 from the Internet ahead of its
/// allow from anywhere) in `vnet-spoke`, whose peering to the hub `vnet-hub` (holding only
/// Bastion `bastion-hub`, Standard with native client support, in 10.1.255.0/26) is in `state`.
fn spoke_vm(state: &str) -> World {
    World::new()
        .vm("web-01")
        .no_public_ip()
        .nic_nsg_denies_rdp()
        .in_vnet("vnet-spoke")
        .hub_bastion("vnet-hub", "bastion-hub", "Standard", true, "10.1.255.0/26")
        .peered_with("vnet-hub", state)
}

#[tokio::test]
async fn a_bastion_in_a_connected_peer_passes_public_ip_and_the_nsg_is_judged_from_its_subnet() {
    within(async {
        let h = Harness::start(spoke_vm("Connected")).await;
        let report = h.check("web-01").await.expect("report");
        assert_eq!(report.verdict, Verdict::Ok);
        let ip = finding(&report, "public-ip");
        assert_eq!(ip.status.as_str(), "pass");
        assert_eq!(
            ip.summary,
            "No public IP (private IP 10.0.1.4): reached through Azure Bastion bastion-hub (Standard) in the peered virtual network vnet-hub"
        );
        assert_eq!(ip.evidence["bastion"]["subnet_prefix"], "10.1.255.0/26");
        assert_eq!(ip.evidence["bastion"]["peered_vnet"], "vnet-hub");
        let nsg = finding(&report, "nsg");
        assert_eq!(
            nsg.summary,
            "TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet (10.1.255.0/26) is allowed by rule allow-rdp (priority 1000) in NSG web-01-nsg"
        );
        let next = ip.next_step.as_deref().expect("how to connect");
        assert!(
            next.contains("az network bastion rdp --name bastion-hub --resource-group rg-web --target-resource-id /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"),
            "{next}"
        );
        // One list, the spoke's peerings, the hub's Bastion subnet.
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
        assert_eq!(requests_to(&h.sim, "GET", SPOKE_VNET), 1);
        assert_eq!(requests_to(&h.sim, "GET", HUB_BASTION_SUBNET), 1);
        assert_eq!(requests_to(&h.sim, "GET", BASTION_SUBNET), 1);
        assert!(h.arm_writes().is_empty(), "{:?}", h.arm_writes());
    })
    .await
}

#[tokio::test]
async fn a_peering_not_connected_does_not_reach_the_hubs_bastion() {
    within(async {
        // Initiated: the hub has not peered back; Disconnected: it deleted its peering.
        for state in ["Initiated", "Disconnected"] {
            let h = Harness::start(spoke_vm(state)).await;
            let report = h.check("web-01").await.expect("report");
            let ip = finding(&report, "public-ip");
            assert_eq!(ip.status.as_str(), "warn", "{state}");
            assert!(
                ip.summary.starts_with("No public IP on the primary NIC"),
                "{state}: {}",
                ip.summary
            );
            let nsg = finding(&report, "nsg");
            assert_eq!(nsg.status.as_str(), "fail", "{state}");
            assert!(
                nsg.summary.starts_with("TCP 3389 from the Internet"),
                "{state}: {}",
                nsg.summary
            );
            // A Bastion-less VM costs one read more than before: its virtual network's.
            assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
            assert_eq!(requests_to(&h.sim, "GET", SPOKE_VNET), 1);
            assert_eq!(requests_to(&h.sim, "GET", BASTION_SUBNET), 0);
        }
    })
    .await
}

#[tokio::test]
async fn a_deny_from_the_peered_hubs_bastion_subnet_fails_the_nsg_check() {
    within(async {
        let report = denied_from_the_bastion(
            spoke_vm("Connected"),
            "deny-hub",
            "10.1.0.0/16",
            "10.1.255.0/26",
        )
        .await;
        // The source to admit is the hub's Bastion subnet.
        let advice = report.next_action_advice().expect("the source to admit");
        assert!(advice.contains("--source 10.1.255.0/26"), "{advice}");
    })
    .await
}

#[tokio::test]
async fn the_virtual_network_tag_covers_a_connected_peer() {
    within(async {
        // The NIC NSG allows 3389 only from VirtualNetwork; the hub's Bastion subnet is in it
        // through the peering (else DenyAllInBound would decide).
        let mut world = spoke_vm("Connected");
        let nsg = world
            .nsgs
            .iter_mut()
            .find(|n| n.name == "web-01-nsg")
            .expect("the NIC's NSG");
        nsg.rules = vec![Rule::inbound_tcp(
            "allow-rdp-vnet",
            1000,
            "Allow",
            "VirtualNetwork",
            "3389",
        )];
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        let nsg = finding(&report, "nsg");
        assert_eq!(
            nsg.summary,
            "TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet (10.1.255.0/26) is allowed by rule allow-rdp-vnet (priority 1000) in NSG web-01-nsg"
        );
        assert_eq!(report.verdict, Verdict::Ok);
    })
    .await
}

#[tokio::test]
async fn a_vm_with_a_public_ip_costs_no_read_of_its_peerings() {
    within(async {
        let plain = Harness::start(World::new().vm("web-01").in_vnet("vnet-spoke")).await;
        let peered = Harness::start(
            World::new()
                .vm("web-01")
                .in_vnet("vnet-spoke")
                .hub_bastion("vnet-hub", "bastion-hub", "Standard", true, "10.1.255.0/26")
                .peered_with("vnet-hub", "Connected"),
        )
        .await;
        let a = plain.check("web-01").await.expect("report");
        let b = peered.check("web-01").await.expect("report");
        assert_eq!(
            finding(&b, "public-ip").summary,
            finding(&a, "public-ip").summary
        );
        assert_eq!(requests_to(&peered.sim, "GET", SPOKE_VNET), 0);
        assert_eq!(requests_to(&peered.sim, "GET", BASTIONS), 0);
        assert_eq!(b.stats.arm_requests, a.stats.arm_requests);
    })
    .await
}

#[tokio::test]
async fn a_sweep_reads_each_virtual_networks_peerings_once() {
    within(async {
        let world = spoke_vm("Connected")
            .vm("web-02")
            .no_public_ip()
            .in_vnet("vnet-spoke")
            .vm("web-03");
        let h = Harness::start(world).await;
        let report = sweep_rg_web(&h).await;
        let rows: Vec<(&str, &str)> = report
            .vms
            .iter()
            .map(|r| (r.vm.name.as_str(), r.verdict.as_str()))
            .collect();
        assert_eq!(rows, [("web-01", "ok"), ("web-02", "ok"), ("web-03", "ok")]);
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 1);
        assert_eq!(requests_to(&h.sim, "GET", SPOKE_VNET), 1);
        assert_eq!(requests_to(&h.sim, "GET", HUB_BASTION_SUBNET), 1);
    })
    .await
}

#[tokio::test]
async fn a_hub_in_another_subscription_is_listed_there_and_a_403_there_is_a_reason() {
    within(async {
        const HUB_SUB: &str = "22222222-2222-2222-2222-222222222222";
        let hub_world = |roles: &[&str]| {
            let mut world = spoke_vm("Connected").principal(support::CLIENT, "sp-secret");
            for sub in roles {
                world = world.role_at("Reader", &format!("/subscriptions/{sub}"));
            }
            world.subscriptions.push(rdp_doctor::sim::Subscription {
                id: HUB_SUB.to_owned(),
                resource_health_registered: true,
            });
            world.bastions[0].subscription = HUB_SUB.to_owned();
            world.peerings[0].remote_subscription = HUB_SUB.to_owned();
            world
        };
        let own = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        let h = Harness::build(hub_world(&[own, HUB_SUB]))
            .secret("sp-secret")
            .start()
            .await;
        let report = h.check("web-01").await.expect("report");
        let ip = finding(&report, "public-ip");
        assert!(
            ip.summary
                .ends_with("bastion-hub (Standard) in the peered virtual network vnet-hub"),
            "{} {:?}",
            ip.summary,
            ip.details
        );
        // The spoke's subscription's list, then the hub's.
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 2);

        // Reader on the spoke's subscription only: the hub's hosts cannot be listed (the
        // subscription's list and the hub's resource group's both refused).
        let h = Harness::build(hub_world(&[own]))
            .secret("sp-secret")
            .start()
            .await;
        let vm = format!(
            "/subscriptions/{own}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"
        );
        let report = h.check(&vm).await.expect("report");
        let ip = finding(&report, "public-ip");
        assert_eq!(ip.status.as_str(), "warn");
        assert!(
            ip.details
                .iter()
                .any(|d| d.starts_with("The Azure Bastion hosts could not be read") && d.contains(HUB_SUB)),
            "{:?}",
            ip.details
        );
        // The spoke's subscription's list, the hub's subscription's and its resource group's.
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 3);
    })
    .await
}

#[tokio::test]
async fn check_bastion_02_simulate_reaches_the_hubs_bastion_across_the_peering() {
    within(async {
        let text = simulated_check("bastion-02", 0).await;
        insta::assert_snapshot!(gate_part(&text), @r"
        Verdict: OK: nothing found that blocks Remote Desktop
          PASS  VM has a public IP (or a private path)
                No public IP (private IP 10.21.1.4): reached through Azure Bastion bastion-hub (Standard) in the peered virtual network vnet-hub
          PASS  Network security group allows TCP 3389
                TCP 3389 from Azure Bastion bastion-hub's AzureBastionSubnet (10.20.255.0/26) is allowed by rule allow-rdp-vnet (priority 1000) in NSG nsg-private
                Judged as from 10.20.255.4, in Azure Bastion bastion-hub's AzureBastionSubnet (10.20.255.0/26): Bastion's connections to the VM come from there, not from the Internet, since the VM has no public IP.
        Next step: Connect through Azure Bastion: az network bastion rdp --name bastion-hub --resource-group rg-web --target-resource-id /subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/bastion-02 (or from the portal: the VM's Connect > Bastion)
        ");
    })
    .await
}

/// The simulator's `GET virtualNetworks/{vnet}` with Entra's token, as any ARM client sends it.
async fn get_vnet(sim: &rdp_doctor::sim::Simulator, vnet: &str) -> serde_json::Value {
    let credential = azure_identity::ClientSecretCredential::new(
        azure_core::new_http_client(),
        url::Url::parse(&sim.url()).expect("url"),
        support::TENANT.to_owned(),
        support::CLIENT.to_owned(),
        "sim-secret".to_owned(),
    );
    let scope = format!("{}/.default", sim.url());
    let token = azure_core::auth::TokenCredential::get_token(&credential, &[&scope])
        .await
        .expect("token");
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/rg-web/providers/Microsoft.Network/virtualNetworks/{vnet}?api-version=2024-03-01",
        sim.url(),
        rdp_doctor::sim::DEFAULT_SUBSCRIPTION
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token.token.secret())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON")
}

fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_simulators_virtual_networks_show_their_peerings_as_microsofts_examples_do() {
    within(async {
        let example = |name: &str| -> serde_json::Value {
            let path = format!(
                "{}/tests/fixtures/arm-examples/network/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(path).expect("example");
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["responses"]["200"]
                ["body"]
                .clone()
        };
        let vnet_example = example("VirtualNetworkGet.json");
        let peering_example = example("VirtualNetworkPeeringGet.json");

        let h = Harness::start(spoke_vm("Connected")).await;
        let spoke = get_vnet(&h.sim, "vnet-spoke").await;
        assert_eq!(keys(&spoke), keys(&vnet_example));
        assert_eq!(
            keys(&spoke["properties"]),
            keys(&vnet_example["properties"])
        );
        assert_eq!(
            spoke["properties"]["addressSpace"]["addressPrefixes"][0],
            "10.0.0.0/16"
        );
        let peering = &spoke["properties"]["virtualNetworkPeerings"][0];
        assert_eq!(keys(peering), keys(&peering_example));
        // Every property Microsoft's example has but the BGP communities of its region.
        let mut expected = keys(&peering_example["properties"]);
        expected.retain(|k| k != "remoteBgpCommunities");
        assert_eq!(keys(&peering["properties"]), expected);
        assert_eq!(peering["properties"]["peeringState"], "Connected");
        assert!(peering["properties"]["remoteVirtualNetwork"]["id"]
            .as_str()
            .is_some_and(|id| id.ends_with(
                "/resourceGroups/rg-web/providers/Microsoft.Network/virtualNetworks/vnet-hub"
            )));
        assert_eq!(
            peering["properties"]["remoteAddressSpace"]["addressPrefixes"][0],
            "10.1.0.0/16"
        );
        // The hub, which holds only the Bastion, peers back while Connected.
        let hub = get_vnet(&h.sim, "vnet-hub").await;
        assert_eq!(
            hub["properties"]["addressSpace"]["addressPrefixes"][0],
            "10.1.0.0/16"
        );
        assert_eq!(
            hub["properties"]["subnets"][0]["name"],
            "AzureBastionSubnet"
        );
        let back = &hub["properties"]["virtualNetworkPeerings"][0]["properties"];
        assert_eq!(back["peeringState"], "Connected");
        assert!(back["remoteVirtualNetwork"]["id"]
            .as_str()
            .is_some_and(|id| id.ends_with("/virtualNetworks/vnet-spoke")));

        // Initiated: the hub has no peering back.
        let h = Harness::start(spoke_vm("Initiated")).await;
        let spoke = get_vnet(&h.sim, "vnet-spoke").await;
        assert_eq!(
            spoke["properties"]["virtualNetworkPeerings"][0]["properties"]["peeringState"],
            "Initiated"
        );
        let hub = get_vnet(&h.sim, "vnet-hub").await;
        assert_eq!(
            hub["properties"]["virtualNetworkPeerings"],
            serde_json::json!([])
        );
    })
    .await
}

#[tokio::test]
async fn roles_on_resource_groups_only_list_the_hubs_group_for_its_bastion() {
    within(async {
        let group = |rg: &str| {
            format!(
                "/subscriptions/{}/resourceGroups/{rg}",
                rdp_doctor::sim::DEFAULT_SUBSCRIPTION
            )
        };
        let mut world = spoke_vm("Connected")
            .principal(support::CLIENT, "sp-secret")
            .role_at("Reader", &group("rg-web"))
            .role_at("Reader", &group("rg-hub"));
        world.bastions[0].resource_group = "rg-hub".to_owned();
        world.peerings[0].remote_resource_group = "rg-hub".to_owned();
        let h = Harness::build(world).secret("sp-secret").start().await;
        let report = h.check("rg-web/web-01").await.expect("report");
        let ip = finding(&report, "public-ip");
        assert!(
            ip.summary
                .ends_with("bastion-hub (Standard) in the peered virtual network vnet-hub"),
            "{} {:?}",
            ip.summary,
            ip.details
        );
        let next = ip.next_step.as_deref().expect("how to connect");
        assert!(next.contains("--resource-group rg-hub "), "{next}");
        // The subscription's list refused once, then the spoke's group's and the hub's group's.
        assert_eq!(requests_to(&h.sim, "GET", BASTIONS), 3);
        assert_eq!(
            requests_to(
                &h.sim,
                "GET",
                "/resourceGroups/rg-hub/providers/Microsoft.Network/bastionHosts"
            ),
            1
        );
    })
    .await
}

/// Microsoft's "Accessing virtual machines behind Azure Firewall with Azure Bastion" (Azure
/// blog): forced tunnelling (0.0.0.0/0 to a firewall) does not stop Bastion, whose subnet the
/// virtual network's own route reaches. `network-path` judges the reply to the Bastion subnet,
/// not to the Internet, and offers no route removal.
#[tokio::test]
async fn a_forced_tunnel_to_a_firewall_does_not_stop_bastion() {
    within(async {
        let world = private_vm("Standard", true).default_route_to_appliance("10.0.2.4");
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "pass", "{}", path.summary);
        assert!(
            path.summary.starts_with(
                "Replies to Azure Bastion bastion-hub (10.0.255.0/26) go to the virtual network (system route "
            ),
            "{}",
            path.summary
        );
        assert_eq!(path.evidence["from"], "10.0.255.4");
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.next_action, None);
    })
    .await
}

/// A user route that sends the peered hub (and its Bastion subnet) to an appliance: the reply
/// to Bastion goes there, and the check fails without offering to remove the route.
#[tokio::test]
async fn a_route_sending_the_bastion_subnet_to_an_appliance_fails_the_network_path() {
    within(async {
        let world = spoke_vm("Connected").route(
            "hub-via-firewall",
            "10.1.0.0/16",
            "VirtualAppliance",
            Some("10.0.2.4"),
        );
        let h = Harness::start(world).await;
        let report = h.check("web-01").await.expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(path.status.as_str(), "fail");
        assert_eq!(
            path.summary,
            "Replies to Azure Bastion bastion-hub (10.1.255.0/26) go to the virtual appliance 10.0.2.4: user route hub-via-firewall (10.1.0.0/16) sends them there"
        );
        assert_eq!(path.suggests, None, "no route removal offered");
        let next = path.next_step.as_deref().expect("the network team's");
        assert!(next.contains("Ask the network team to route 10.1.255.0/26"), "{next}");
        assert_eq!(report.verdict, Verdict::Problems);
        // Without the route, the peering carries the reply.
        let h = Harness::start(spoke_vm("Connected")).await;
        let report = h.check("web-01").await.expect("report");
        let path = finding(&report, "network-path");
        assert_eq!(
            path.summary,
            "Replies to Azure Bastion bastion-hub (10.1.255.0/26) go to the peered virtual network (system route 10.1.0.0/16)"
        );
    })
    .await
}
