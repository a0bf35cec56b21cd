use super::*;

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> usize {
    values.collect::<HashSet<_>>().len()
}

#[test]
fn fleet_vms_are_healthy_numbered_and_never_share_an_address() {
    let world = World::new().vm("web-01").fleet("rg-fleet", "vm", 600);
    world.validate().expect("a fleet is a consistent world");
    let fleet: Vec<&Vm> = world.vms[1..].iter().collect();
    assert_eq!(fleet.len(), 600);
    assert_eq!(
        (fleet[0].name.as_str(), fleet[599].name.as_str()),
        ("vm-000", "vm-599")
    );
    assert_eq!(distinct(fleet.iter().map(|v| v.private_ip.as_str())), 600);
    let public = fleet
        .iter()
        .filter_map(|v| v.public_ip.as_ref()?.address.as_deref());
    assert_eq!(distinct(public), 600);
    for vm in &fleet {
        assert_eq!(vm.resource_group, "rg-fleet");
        assert_eq!(vm.power_state, PowerState::Running);
        assert_eq!(vm.agent, AgentState::Ready);
        assert_eq!(vm.subnet, "vm-subnet");
        assert_eq!(vm.subnet_nsg.as_deref(), Some("rg-fleet-vm-nsg"));
        assert_eq!(vm.nic_nsg, None);
        assert!(vm.boot_diagnostics);
        assert_eq!(vm.health.state, "Available");
        let ip = vm.public_ip.as_ref().expect("public ip");
        assert_eq!((ip.allocation, ip.sku), (Allocation::Static, Sku::Standard));
    }
    let nsg = world
        .find_nsg(DEFAULT_SUBSCRIPTION, "rg-fleet", "rg-fleet-vm-nsg")
        .expect("subnet nsg");
    assert_eq!(nsg.resource_group, "rg-fleet");
    assert_eq!(nsg.rules[0].destination_port.as_deref(), Some("3389"));
    assert_eq!(nsg.rules[0].access, "Allow");
}

#[test]
fn fleet_names_grow_digits_and_addresses_skip_those_taken() {
    let mut world = World::new().vm("web-01");
    if let Some(ip) = world.vms[0].public_ip.as_mut() {
        ip.address = Some("20.6.0.4".to_owned());
    }
    world.vms[0].private_ip = "10.1.0.4".to_owned();
    let world = world.fleet("rg-big", "node", 1001);
    assert_eq!(world.vms[1].name, "node-0000");
    assert_eq!(world.vms[1001].name, "node-1000");
    assert_eq!(world.vms[1].private_ip, "10.1.0.5");
    assert_eq!(
        world.vms[1]
            .public_ip
            .as_ref()
            .and_then(|ip| ip.address.as_deref()),
        Some("20.6.0.5")
    );
    assert_eq!(world.vms[1001].private_ip, "10.1.4.5");
}

#[test]
fn select_points_modifiers_at_one_fleet_vm_until_the_next_vm_is_added() {
    let world = World::new()
        .fleet("rg-fleet", "vm", 5)
        .select("VM-002")
        .stopped()
        .select("vm-003")
        .nic_nsg_denies_rdp()
        .select("vm-004")
        .no_nsg()
        .vm("web-01")
        .deallocated();
    world.validate().expect("consistent");
    let state = |name: &str| {
        world
            .vms
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.power_state)
    };
    assert_eq!(state("vm-002"), Some(PowerState::Stopped));
    assert_eq!(state("vm-001"), Some(PowerState::Running));
    assert_eq!(state("vm-004"), Some(PowerState::Running));
    assert_eq!(state("web-01"), Some(PowerState::Deallocated));
    let denied = &world.vms[3];
    assert_eq!(denied.nic_nsg.as_deref(), Some("vm-003-nsg"));
    let rules = &world
        .find_nsg(DEFAULT_SUBSCRIPTION, "rg-fleet", "vm-003-nsg")
        .expect("nsg")
        .rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].access, "Deny");
    let open = &world.vms[4];
    assert_eq!(
        (open.subnet.as_str(), open.subnet_nsg.as_deref()),
        ("vm-004-snet", None)
    );
    assert_eq!(world.vms[0].subnet_nsg.as_deref(), Some("rg-fleet-vm-nsg"));
}

#[test]
fn the_selection_is_builder_state_not_part_of_the_world() {
    let world = World::new().vm("a").vm("b");
    let picked = world.clone().select("a");
    assert_eq!(picked, world);
    let text = picked.to_toml_string().expect("toml");
    assert!(!text.contains("selected"), "{text}");
    assert_eq!(World::from_toml_str(&text).expect("parses"), world);
}

#[test]
fn boot_diagnostics_storage_round_trips_and_account_names_are_checked() {
    let world = World::new()
        .vm("a")
        .boot_diagnostics_in("diagstore01")
        .storage_firewall();
    let text = world.to_toml_string().expect("toml");
    assert!(text.contains("account = \"diagstore01\""), "{text}");
    assert_eq!(World::from_toml_str(&text).expect("parses"), world);
    let bad = World::new().vm("a").boot_diagnostics_in("Diag_Store");
    let error = bad.validate().expect_err("invalid name").to_string();
    assert!(
        error.contains("'Diag_Store' is not 3-24 lowercase"),
        "{error}"
    );
}

#[test]
fn validation_names_vms_that_disagree_on_their_subnet_nsg_or_repeat() {
    let mut world = World::new().fleet("rg-fleet", "vm", 3);
    world.vms[2].subnet_nsg = None;
    let error = world
        .validate()
        .expect_err("subnet NSGs differ")
        .to_string();
    assert!(
        error.contains("'vm-000' and 'vm-002' share subnet 'vm-subnet'"),
        "{error}"
    );
    let mut world = World::new().fleet("rg-fleet", "vm", 3);
    world.vms[2].name = "VM-001".to_owned();
    let error = world.validate().expect_err("duplicate").to_string();
    assert!(error.contains("'VM-001' appears twice"), "{error}");
}

/// An NSG's name is unique within its resource group, not its subscription (Microsoft Learn,
/// "Naming rules and restrictions for Azure resources"). A VM names its NSG as `group/name`, or
/// by a bare name: its own group's, else the subscription's only one of that name.
#[test]
fn nsg_references_resolve_within_resource_groups() {
    const SUB: &str = "11111111-1111-1111-1111-111111111111";
    let world = |vms: &str, nsgs: &[&str]| {
        let mut text = format!("client_secret = \"s\"\n[[subscription]]\nid = \"{SUB}\"\n");
        for rg in nsgs {
            text += &format!("[[nsg]]\nname = \"nsg-rdp\"\nresource_group = \"{rg}\"\n");
        }
        text + vms
    };
    let vm = |name: &str, rg: &str, nic_nsg: &str| {
        format!("[[vm]]\nname = \"{name}\"\nresource_group = \"{rg}\"\nnic_nsg = \"{nic_nsg}\"\n")
    };
    // Each VM's own group's NSG, although both are called nsg-rdp.
    let two = World::from_toml_str(&world(
        &(vm("web-01", "rg-a", "nsg-rdp") + &vm("web-01", "rg-b", "nsg-rdp")),
        &["rg-a", "rg-b"],
    ))
    .expect("one nsg-rdp in each group");
    for v in &two.vms {
        let nsg = two.nic_nsg(v).expect("its NSG");
        assert_eq!(nsg.resource_group, v.resource_group);
    }
    // A shared networking group's: the only one of that name in the subscription.
    let shared = World::from_toml_str(&world(&vm("web-01", "rg-web", "nsg-rdp"), &["rg-net"]))
        .expect("the only nsg-rdp");
    assert_eq!(
        shared.nic_nsg(&shared.vms[0]).unwrap().resource_group,
        "rg-net"
    );
    // Two candidates and none in the VM's group: it must say which.
    let error = World::from_toml_str(&world(
        &vm("web-01", "rg-web", "nsg-rdp"),
        &["rg-a", "rg-b"],
    ))
    .expect_err("ambiguous")
    .to_string();
    assert!(
        error.contains("2 NSGs of that name") && error.contains("'resource-group/nsg-rdp'"),
        "{error}"
    );
    let chosen = World::from_toml_str(&world(
        &vm("web-01", "rg-web", "RG-B/nsg-rdp"),
        &["rg-a", "rg-b"],
    ))
    .expect("named with its group");
    assert_eq!(
        chosen.nic_nsg(&chosen.vms[0]).unwrap().resource_group,
        "rg-b"
    );
    let error = World::from_toml_str(&world(&vm("web-01", "rg-web", "rg-c/nsg-rdp"), &["rg-a"]))
        .expect_err("no such group's")
        .to_string();
    assert!(error.contains("resource group 'rg-c'"), "{error}");
    // Twice in one group is not a world Azure could hold.
    let error = World::from_toml_str(&world("", &["rg-a", "RG-A"]))
        .expect_err("duplicate")
        .to_string();
    assert!(
        error.contains("'nsg-rdp' appears twice in resource group"),
        "{error}"
    );
}

#[test]
fn route_table_references_resolve_within_resource_groups() {
    const SUB: &str = "11111111-1111-1111-1111-111111111111";
    let world = |rg: &str, route_table: &str| {
        let mut text = format!("client_secret = \"s\"\n[[subscription]]\nid = \"{SUB}\"\n");
        for group in ["rg-a", "rg-b"] {
            text += &format!("[[route_table]]\nname = \"rt\"\nresource_group = \"{group}\"\n");
        }
        text + &format!("[[vm]]\nname = \"web-01\"\nresource_group = \"{rg}\"\nroute_table = \"{route_table}\"\n")
    };
    let own = World::from_toml_str(&world("rg-b", "rt")).expect("its group's");
    assert_eq!(
        own.vm_route_table(&own.vms[0]).unwrap().resource_group,
        "rg-b"
    );
    let error = World::from_toml_str(&world("rg-web", "rt"))
        .expect_err("ambiguous")
        .to_string();
    assert!(
        error.contains("2 route tables of that name") && error.contains("'resource-group/rt'"),
        "{error}"
    );
    let named = World::from_toml_str(&world("rg-web", "rg-a/rt")).expect("named with its group");
    assert_eq!(
        named.vm_route_table(&named.vms[0]).unwrap().resource_group,
        "rg-a"
    );
}

const ONE_VM: &str = r#"
client_secret = "s"
[[subscription]]
id = "11111111-1111-1111-1111-111111111111"
[[vm]]
name = "web-01"
resource_group = "rg-web"
"#;

#[test]
fn a_guest_is_healthy_unless_the_world_says_otherwise() {
    let world = World::from_toml_str(ONE_VM).expect("parses");
    assert_eq!(world.vms[0].guest, Guest::default());
    let text = format!(
        "{ONE_VM}[vm.guest]\nterm_service_status = \"Stopped\"\nterm_service_start_type = \"Disabled\"\nlicensing_mode = 4\nfree_bytes = 104857600\nreclaimable_bytes = 4294967296\n"
    );
    let world = World::from_toml_str(&text).expect("parses");
    let guest = &world.vms[0].guest;
    assert_eq!(guest.term_service_status, ServiceStatus::Stopped);
    assert_eq!(guest.term_service_start_type, StartType::Disabled);
    assert_eq!(guest.licensing_mode, Some(4));
    assert_eq!(guest.free_bytes, 104_857_600);
    assert!(guest.firewall_rdp_rule, "what is not named stays healthy");
    let round = World::from_toml_str(&world.to_toml_string().expect("renders")).expect("parses");
    assert_eq!(round, world);
}

#[test]
fn guest_errors_name_the_field() {
    let error = |guest: &str| {
        World::from_toml_str(&format!("{ONE_VM}[vm.guest]\n{guest}\n"))
            .expect_err("refused")
            .to_string()
    };
    let unknown = error("firewall_rule = false");
    assert!(
        unknown.contains("unknown field `firewall_rule`"),
        "{unknown}"
    );
    assert!(
        unknown.contains("firewall_rdp_rule"),
        "lists the known fields: {unknown}"
    );
    let status = error("term_service_status = \"Sleeping\"");
    assert!(
        status.contains("Sleeping") && status.contains("Running"),
        "{status}"
    );
    assert_eq!(
        error("licensing_mode = 3"),
        "world file is inconsistent: VM 'web-01': guest.licensing_mode must be 2 (per device) or 4 (per user); leave it out for not configured"
    );
    assert!(error("certificate_not_after = \"soon\"")
        .contains("guest.certificate_not_after 'soon' is not an RFC 3339 time"));
    assert!(error("free_bytes = 200000000000").contains("guest.free_bytes is more than size_bytes"));
    assert!(error("security_layer = 3").contains("guest.security_layer"));
    assert!(error("policy_deny = 2").contains("guest.policy_deny"));
}

#[test]
fn a_bastion_is_checked_as_azure_would_accept_it() {
    let world = World::new()
        .vm("web-01")
        .bastion("bastion-hub", "Standard", true);
    world.validate().expect("consistent");
    assert_eq!(
        world.bastion_subnet_prefix(&world.bastions[0]),
        "10.0.255.0/26"
    );
    let text = world.to_toml_string().expect("renders");
    assert_eq!(World::from_toml_str(&text).expect("parses"), world);

    let basic = World::new().vm("web-01").bastion("b", "Basic", true);
    let error = basic
        .validate()
        .expect_err("tunneling on Basic")
        .to_string();
    assert!(
        error.contains("needs the Standard or Premium SKU"),
        "{error}"
    );
    let mut outside = World::new().vm("web-01").bastion("b", "Standard", false);
    outside.bastions[0].subnet_prefix = Some("10.9.255.0/26".into());
    let error = outside
        .validate()
        .expect_err("outside the vnet")
        .to_string();
    assert!(error.contains("outside virtual network"), "{error}");
    outside.bastions[0].subnet_prefix = Some("10.0.255.0/27".into());
    let error = outside.validate().expect_err("too small").to_string();
    assert!(error.contains("/26 or larger"), "{error}");
}

#[test]
fn a_peering_is_checked_as_azure_would_accept_it_and_shows_on_both_sides_when_connected() {
    let spoke = || {
        World::new().vm("web-01").in_vnet("vnet-spoke").hub_bastion(
            "vnet-hub",
            "bastion-hub",
            "Standard",
            true,
            "10.1.255.0/26",
        )
    };
    let world = spoke().peered_with("vnet-hub", "Connected");
    world.validate().expect("consistent");
    let text = world.to_toml_string().expect("renders");
    assert_eq!(World::from_toml_str(&text).expect("parses"), world);
    let key = |vnet: &str| {
        (
            crate::sim::DEFAULT_SUBSCRIPTION.to_owned(),
            "rg-web".to_owned(),
            vnet.to_owned(),
        )
    };
    assert_eq!(
        world.vnet_space(&key("vnet-hub")).map(|n| n.to_string()),
        Some("10.1.0.0/16".to_owned())
    );
    // Connected: the hub shows the peering back; the spoke's VirtualNetwork covers the hub.
    let back = world.peerings_of(&key("vnet-hub"));
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].remote.2.as_str(), back[0].state.as_str()),
        ("vnet-spoke", "Connected")
    );
    assert_eq!(
        world.connected_peer_spaces(&world.vms[0]),
        ["10.1.0.0/16".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    // Initiated (the hub has not peered back) and Disconnected (it deleted its peering): the
    // hub has no peering, and nothing is reachable through the spoke's.
    for state in ["Initiated", "Disconnected"] {
        let world = spoke().peered_with("vnet-hub", state);
        world.validate().expect("consistent");
        assert!(world.peerings_of(&key("vnet-hub")).is_empty());
        assert_eq!(world.peerings_of(&key("vnet-spoke"))[0].state, state);
        assert!(world.connected_peer_spaces(&world.vms[0]).is_empty());
    }

    let error = |world: World| world.validate().expect_err("refused").to_string();
    let e = error(spoke().peered_with("vnet-hub", "Pending"));
    assert!(e.contains("Initiated, Connected or Disconnected"), "{e}");
    let e = error(spoke().peered_with("vnet-nowhere", "Connected"));
    assert!(e.contains("both virtual networks must exist"), "{e}");
    let e = error(spoke().peered_with("vnet-spoke", "Connected"));
    assert!(e.contains("cannot peer with itself"), "{e}");
    let mut overlap = spoke().peered_with("vnet-hub", "Connected");
    overlap.bastions[0].subnet_prefix = Some("10.0.255.0/26".into());
    let e = error(overlap);
    assert!(e.contains("overlap"), "{e}");
    let mut unsized_hub = spoke();
    unsized_hub.bastions[0].subnet_prefix = None;
    let e = error(unsized_hub);
    assert!(
        e.contains("subnet_prefix must say its address space"),
        "{e}"
    );
}
