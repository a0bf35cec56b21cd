use super::*;

fn system(prefix: &str, hop: &str, active: bool) -> RouteFacts {
    RouteFacts {
        name: None,
        source: "Default".into(),
        active,
        prefixes: vec![prefix.into()],
        next_hop_type: hop.into(),
        next_hop_ips: vec![],
    }
}

fn user(name: &str, prefix: &str, hop: &str, ip: Option<&str>) -> RouteFacts {
    RouteFacts {
        name: Some(name.into()),
        source: "User".into(),
        active: true,
        prefixes: vec![prefix.into()],
        next_hop_type: hop.into(),
        next_hop_ips: ip.into_iter().map(str::to_owned).collect(),
    }
}

fn table(routes: &[(&str, &str, &str, Option<&str>)]) -> RouteTableFacts {
    RouteTableFacts {
        id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/routeTables/udr-01-rt"
            .into(),
        name: "udr-01-rt".into(),
        resource_group: "rg".into(),
        subscription_id: "s".into(),
        routes: routes
            .iter()
            .map(|(name, prefix, hop, ip)| UserRoute {
                name: (*name).into(),
                prefix: (*prefix).into(),
                next_hop_type: (*hop).into(),
                next_hop_ip: ip.map(str::to_owned),
            })
            .collect(),
        subnets: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/udr-01-snet".into()],
    }
}

fn routes_check(routes: Vec<RouteFacts>) -> Finding {
    check(&PathFacts::Routes {
        routes,
        table: Some(table(&[(
            "to-firewall",
            "0.0.0.0/0",
            "VirtualAppliance",
            Some("10.0.2.4"),
        )])),
    })
}

#[test]
fn routes_that_take_the_internets_replies_away_fail_and_suggest_remove_route() {
    let healthy = vec![
        system("10.0.0.0/16", "VnetLocal", true),
        system("0.0.0.0/0", "Internet", true),
    ];
    let cases: Vec<(&str, Vec<RouteFacts>, Status, Option<&str>)> = vec![
        ("system routes only", healthy.clone(), Status::Pass, None),
        (
            "default to an appliance",
            vec![
                system("0.0.0.0/0", "Internet", false),
                user(
                    "to-firewall",
                    "0.0.0.0/0",
                    "VirtualAppliance",
                    Some("10.0.2.4"),
                ),
            ],
            Status::Fail,
            Some("to-firewall"),
        ),
        (
            "default to None",
            vec![user("blackhole", "0.0.0.0/0", "None", None)],
            Status::Fail,
            Some("blackhole"),
        ),
        (
            "forced tunnelling split in halves",
            vec![
                user("low", "0.0.0.0/1", "VirtualAppliance", Some("10.0.2.4")),
                user("high", "128.0.0.0/1", "VirtualAppliance", Some("10.0.2.4")),
            ],
            Status::Fail,
            Some("low"),
        ),
        (
            "a private range to an appliance is not the Internet's way back",
            vec![user(
                "spoke",
                "10.0.0.0/8",
                "VirtualAppliance",
                Some("10.0.2.4"),
            )],
            Status::Pass,
            None,
        ),
        (
            "an invalid user route does not count",
            vec![RouteFacts {
                active: false,
                ..user("old", "0.0.0.0/0", "None", None)
            }],
            Status::Pass,
            None,
        ),
        (
            "forced tunnelling to the gateway is a warning",
            vec![user("onprem", "0.0.0.0/0", "VirtualNetworkGateway", None)],
            Status::Warn,
            None,
        ),
    ];
    for (what, routes, status, route) in cases {
        let finding = routes_check(routes);
        assert_eq!(finding.status, status, "{what}: {}", finding.summary);
        assert_eq!(
            finding.evidence["route"]["route"].as_str(),
            route,
            "{what}: {}",
            finding.evidence
        );
        assert_eq!(
            finding.suggests,
            route.map(|_| ActionId::RemoveRoute),
            "{what}"
        );
    }
    let failing = routes_check(vec![user(
        "to-firewall",
        "0.0.0.0/0",
        "VirtualAppliance",
        Some("10.0.2.4"),
    )]);
    assert_eq!(
        failing.summary,
        "Replies to clients on the Internet go to the virtual appliance 10.0.2.4: route to-firewall in route table udr-01-rt sends 0.0.0.0/0 there"
    );
    assert!(failing
        .details
        .iter()
        .any(|d| d == "Route table udr-01-rt is used by subnet udr-01-snet."));
}

fn watched(flow: FlowVerdict, ours: Option<OurVerdict>, hop: NextHopFacts) -> Finding {
    check(&PathFacts::Watched {
        from: "203.0.113.9".parse().expect("ip"),
        port: 3389,
        flow,
        ours,
        next_hop: hop,
        table: Some(table(&[
            (
                "to-firewall",
                "0.0.0.0/0",
                "VirtualAppliance",
                Some("10.0.2.4"),
            ),
            (
                "office",
                "203.0.113.0/24",
                "VirtualAppliance",
                Some("10.0.2.5"),
            ),
        ])),
    })
}

fn internet() -> NextHopFacts {
    NextHopFacts {
        next_hop_type: "Internet".into(),
        next_hop_ip: None,
        route_table_id: None,
    }
}

fn allowed(rule: &str) -> FlowVerdict {
    FlowVerdict {
        allowed: true,
        rule: Some(rule.into()),
    }
}

#[test]
fn azures_verdict_stands_beside_ours_and_a_disagreement_is_a_warning() {
    let agree = watched(
        allowed("securityRules/allow-rdp"),
        Some(OurVerdict {
            allowed: true,
            rule: Some("allow-rdp".into()),
        }),
        internet(),
    );
    assert_eq!(agree.status, Status::Pass, "{}", agree.summary);
    assert_eq!(
        agree.summary,
        "Network Watcher: TCP 3389 from 203.0.113.9 is allowed by securityRules/allow-rdp; the reply to 203.0.113.9 goes to the Internet (system route)"
    );
    assert_eq!(agree.evidence["ip_flow_verify"]["agree"], true);

    let differ = watched(
        FlowVerdict {
            allowed: false,
            rule: Some("deny-rdp-from-internet".into()),
        },
        Some(OurVerdict {
            allowed: true,
            rule: Some("allow-rdp".into()),
        }),
        internet(),
    );
    assert_eq!(differ.status, Status::Warn);
    assert_eq!(
        differ.summary,
        "Network Watcher and rdp-doctor disagree on TCP 3389 from 203.0.113.9: Azure says denied by deny-rdp-from-internet, the effective rules say allowed by allow-rdp"
    );
    assert_eq!(differ.evidence["ip_flow_verify"]["agree"], false);

    let denied = watched(
        FlowVerdict {
            allowed: false,
            rule: Some("defaultSecurityRules/DenyAllInBound".into()),
        },
        Some(OurVerdict {
            allowed: false,
            rule: Some("DenyAllInBound".into()),
        }),
        internet(),
    );
    assert_eq!(
        denied.status,
        Status::Fail,
        "the nsg check's failure, seen by Azure"
    );
}

#[test]
fn a_next_hop_to_an_appliance_names_the_route_by_longest_prefix() {
    let finding = watched(
        allowed("securityRules/allow-rdp"),
        None,
        NextHopFacts {
            next_hop_type: "VirtualAppliance".into(),
            next_hop_ip: Some("10.0.2.5".into()),
            route_table_id: Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/routeTables/udr-01-rt"
                    .into(),
            ),
        },
    );
    assert_eq!(finding.status, Status::Fail);
    assert_eq!(
        finding.summary,
        "The reply to 203.0.113.9 goes to the virtual appliance 10.0.2.5: route office (203.0.113.0/24) in route table udr-01-rt"
    );
    assert_eq!(finding.evidence["route"]["route"], "office");
    assert_eq!(
        finding.suggests, None,
        "an office's range is not remove-route's"
    );
    assert!(finding
        .details
        .iter()
        .any(|d| d.starts_with("Change or remove route office in route table udr-01-rt")));
}

#[test]
fn a_region_without_network_watcher_is_skipped_with_the_reason() {
    let finding = check(&PathFacts::NoWatcher {
        from: "203.0.113.9".parse().expect("ip"),
        region: "northeurope".into(),
    });
    assert_eq!(finding.status, Status::Skip);
    assert_eq!(
        finding.summary,
        "Network Watcher is not enabled in region northeurope: IP flow verify and next hop for 203.0.113.9 were not run"
    );
}

#[test]
fn the_internet_is_wide_public_space() {
    for (prefix, covers) in [
        ("0.0.0.0/0", true),
        ("0.0.0.0/1", true),
        ("8.0.0.0/8", true),
        ("10.0.0.0/8", false),
        ("203.0.113.0/24", false),
        ("nonsense", false),
    ] {
        assert_eq!(covers_the_internet(prefix), covers, "{prefix}");
    }
}

fn bastion_check(routes: Vec<RouteFacts>) -> Finding {
    check(&PathFacts::ToBastion {
        routes,
        bastion: "bastion-hub".into(),
        subnet: "10.1.255.0/26".into(),
        address: "10.1.255.4".parse().unwrap(),
    })
}

#[test]
fn the_reply_to_bastion_follows_the_longest_prefix_not_the_internets_route() {
    // Forced tunnelling sends the Internet to a firewall; the peering still reaches Bastion.
    let tunnelled = vec![
        system("10.0.0.0/16", "VnetLocal", true),
        system("10.1.0.0/16", "VNetPeering", true),
        system("0.0.0.0/0", "Internet", false),
        user(
            "to-firewall",
            "0.0.0.0/0",
            "VirtualAppliance",
            Some("10.0.2.4"),
        ),
    ];
    let finding = bastion_check(tunnelled.clone());
    assert_eq!(finding.status, Status::Pass);
    assert_eq!(
        finding.summary,
        "Replies to Azure Bastion bastion-hub (10.1.255.0/26) go to the peered virtual network (system route 10.1.0.0/16)"
    );
    assert_eq!(finding.suggests, None);
    // A user route of the hub's prefix to the firewall wins over the peering's system route.
    let mut inspected = tunnelled;
    inspected.push(user(
        "hub-via-firewall",
        "10.1.0.0/16",
        "VirtualAppliance",
        Some("10.0.2.4"),
    ));
    let finding = bastion_check(inspected);
    assert_eq!(finding.status, Status::Fail);
    assert_eq!(
        finding.summary,
        "Replies to Azure Bastion bastion-hub (10.1.255.0/26) go to the virtual appliance 10.0.2.4: user route hub-via-firewall (10.1.0.0/16) sends them there"
    );
    assert_eq!(
        finding.suggests, None,
        "the network team's route: no removal"
    );
    assert!(finding.next_step.is_some());
    // An inactive route is not followed; with no route at all, a warning.
    let finding = bastion_check(vec![system("10.1.0.0/16", "VNetPeering", false)]);
    assert_eq!(finding.status, Status::Warn);
    assert!(finding
        .summary
        .starts_with("No effective route reaches Azure Bastion bastion-hub"));
}
