use super::*;
use proptest::prelude::*;

// -----------------------------------------------------------------------------------------
// Fixture DSL: one line per NSG header (`subnet NAME` | `nic NAME` | `other NAME`), then one
// line per rule:
//   NAME ACCESS PRIORITY In|Out PROTOCOL [src=a,b] [srcx=..] [dst=..] [dstx=..] [port=..]
// NAME without '/' gets the `securityRules/` prefix. Omitted src/dst/port default to `*`;
// `port=` (empty) gives an empty list. `#` starts a comment line.
// -----------------------------------------------------------------------------------------

const ID_BASE: &str = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network";

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn fixture(text: &str) -> Vec<EffectiveNsg> {
    let mut out: Vec<EffectiveNsg> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        let assoc = match toks[0] {
            "subnet" => Some(Association::Subnet(format!(
                "{ID_BASE}/virtualNetworks/vnet/subnets/default"
            ))),
            "nic" => Some(Association::NetworkInterface(format!(
                "{ID_BASE}/networkInterfaces/nic1"
            ))),
            "other" => Some(Association::Other(format!("{ID_BASE}/networkManagers/nm1"))),
            _ => None,
        };
        if let Some(association) = assoc {
            out.push(EffectiveNsg {
                nsg_id: format!("{ID_BASE}/networkSecurityGroups/{}", toks[1]),
                association,
                rules: Vec::new(),
            });
            continue;
        }
        let name = if toks[0].contains('/') {
            toks[0].to_string()
        } else {
            format!("securityRules/{}", toks[0])
        };
        let mut rule = EffectiveRule {
            name,
            access: Access::parse(toks[1]).expect("access"),
            priority: toks[2].parse().expect("priority"),
            direction: if toks[3] == "In" {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            protocol: toks[4].to_string(),
            source_address_prefixes: list("*"),
            expanded_source_address_prefixes: Vec::new(),
            destination_address_prefixes: list("*"),
            expanded_destination_address_prefixes: Vec::new(),
            destination_port_ranges: list("*"),
        };
        for kv in &toks[5..] {
            let (k, v) = kv.split_once('=').expect("key=value");
            let field = match k {
                "src" => &mut rule.source_address_prefixes,
                "srcx" => &mut rule.expanded_source_address_prefixes,
                "dst" => &mut rule.destination_address_prefixes,
                "dstx" => &mut rule.expanded_destination_address_prefixes,
                "port" => &mut rule.destination_port_ranges,
                _ => panic!("unknown key {k}"),
            };
            *field = list(v);
        }
        out.last_mut()
            .expect("rule before NSG header")
            .rules
            .push(rule);
    }
    out
}

/// `internet -> 10.0.0.4:3389`, `203.0.113.7 -> ?:3389` (`?` = VM IP unknown).
fn probe(text: &str) -> Probe {
    let (src, dst) = text.split_once(" -> ").expect("probe syntax");
    let (ip, port) = dst.rsplit_once(':').expect("port");
    Probe {
        source: match src {
            "internet" => TrafficSource::Internet,
            a => TrafficSource::Address(a.parse().expect("source ip")),
        },
        destination: if ip == "?" {
            None
        } else {
            Some(ip.parse().expect("dest ip"))
        },
        port: port.parse().expect("port"),
    }
}

fn show_rule(r: &RuleRef) -> String {
    if r.implicit {
        format!("{}/implicit", r.nsg)
    } else {
        format!("{}/{}@{}:{:?}", r.nsg, r.rule, r.priority, r.access)
    }
}

fn render(v: &NsgVerdict) -> String {
    let mut s = format!(
        "allowed={} deciding={}\n",
        v.allowed,
        v.deciding.as_ref().map_or("-".to_string(), show_rule)
    );
    let per: Vec<String> = v.per_nsg.iter().map(|d| show_rule(&d.rule)).collect();
    s += &format!("per_nsg: {}\n", per.join(" "));
    let narrow: Vec<String> = v
        .narrower_allows
        .iter()
        .map(|r| format!("{}[{}]", show_rule(r), r.sources.join(",")))
        .collect();
    s += &format!("narrower: {}\n", narrow.join(" "));
    for n in &v.notes {
        s += &format!("note: {n}\n");
    }
    s
}

/// Data-driven check: evaluate `nsgs` (fixture DSL) against `probe` and compare the
/// rendered verdict with `expect` (line-by-line, indentation ignored). Also re-checks the
/// invariants every verdict must satisfy.
#[track_caller]
fn check(nsgs: &str, probe_text: &str, expect: &str) {
    let nsgs = fixture(nsgs);
    let p = probe(probe_text);
    let v = evaluate(&nsgs, &p);
    assert_invariants(&nsgs, &p, &v);
    let got: String = render(&v)
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    let want: String = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
}

/// Invariants shared by the example tests and the property tests.
fn assert_invariants(nsgs: &[EffectiveNsg], p: &Probe, v: &NsgVerdict) {
    assert_eq!(v.per_nsg.len(), nsgs.len());
    assert_eq!(
        v.allowed,
        v.per_nsg.iter().all(|d| d.access == Access::Allow)
    );
    match &v.deciding {
        None => assert!(nsgs.is_empty() && v.allowed),
        Some(d) => {
            assert_eq!(v.allowed, d.access == Access::Allow);
            if !d.implicit {
                let nsg = nsgs.iter().find(|n| n.nsg_id == d.nsg_id).unwrap();
                let rule = nsg.rules.iter().find(|r| r.name == d.raw_name).unwrap();
                assert!(rule_matches(rule, p), "deciding rule must match");
                assert_eq!(rule.access, d.access);
            }
        }
    }
    if v.allowed {
        assert!(v.narrower_allows.is_empty());
    }
    for n in &v.narrower_allows {
        let nsg = nsgs.iter().find(|x| x.nsg_id == n.nsg_id).unwrap();
        let rule = nsg.rules.iter().find(|r| r.name == n.raw_name).unwrap();
        assert_eq!(rule.access, Access::Allow);
        assert!(!rule.is_default());
        assert!(matches_except_source(rule, p));
        assert!(!rule_matches(rule, p));
    }
}

/// Azure's default inbound rules, as the effective list returns them (unexpanded here).
const DEFAULTS: &str = "
        defaultSecurityRules/AllowVnetInBound Allow 65000 In All src=VirtualNetwork dst=VirtualNetwork port=0-65535
        defaultSecurityRules/AllowAzureLoadBalancerInBound Allow 65001 In All src=AzureLoadBalancer srcx=168.63.129.16/32 port=0-65535
        defaultSecurityRules/DenyAllInBound Deny 65500 In All src=0.0.0.0/0 dst=0.0.0.0/0 port=0-65535
    ";

fn with_defaults(text: &str) -> String {
    // Append DEFAULTS after every NSG's own rules.
    let mut out = String::new();
    let mut first = true;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("subnet ") || t.starts_with("nic ") || t.starts_with("other ") {
            if !first {
                out += DEFAULTS;
            }
            first = false;
        }
        out += line;
        out.push('\n');
    }
    if !first {
        out += DEFAULTS;
    }
    out
}

// -----------------------------------------------------------------------------------------
// Example-based tests
// -----------------------------------------------------------------------------------------

#[test]
fn subnet_deny_wins_over_nic_allow() {
    check(
        &with_defaults(
            "nic nic-nsg
                   allow-rdp Allow 300 In Tcp port=3389
                 subnet sub-nsg
                   deny-rdp Deny 100 In Tcp port=3389",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=sub-nsg/deny-rdp@100:Deny
             per_nsg: sub-nsg/deny-rdp@100:Deny nic-nsg/allow-rdp@300:Allow
             narrower:",
    );
}

#[test]
fn nic_deny_with_subnet_allow() {
    check(
        &with_defaults(
            "subnet sub-nsg
                   allow-rdp Allow 100 In Tcp port=3389-3389
                 nic nic-nsg
                   something-else Allow 100 In Tcp port=443",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=nic-nsg/DenyAllInBound@65500:Deny
             per_nsg: sub-nsg/allow-rdp@100:Allow nic-nsg/DenyAllInBound@65500:Deny
             narrower:",
    );
}

#[test]
fn both_allow_deciding_is_nic_rule() {
    check(
        &with_defaults(
            "subnet sub-nsg
                   allow-rdp Allow 100 In Tcp port=3389
                 nic nic-nsg
                   nic-rdp Allow 200 In Tcp port=3389",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=nic-nsg/nic-rdp@200:Allow
             per_nsg: sub-nsg/allow-rdp@100:Allow nic-nsg/nic-rdp@200:Allow
             narrower:",
    );
}

#[test]
fn lowest_priority_number_wins_regardless_of_input_order() {
    check(
        "nic nic-nsg
               allow-rdp Allow 200 In Tcp port=3389
               deny-rdp Deny 150 In Tcp port=3389
               allow-all Allow 100 In Tcp port=0-65535 dst=10.0.0.0/24",
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=nic-nsg/allow-all@100:Allow
             per_nsg: nic-nsg/allow-all@100:Allow
             narrower:",
    );
}

#[test]
fn protocol_all_and_star_match_tcp() {
    for proto in ["All", "*", "TCP", "tcp", "ALL"] {
        check(
            &format!("nic n\n allow Allow 100 In {proto} port=3389"),
            "internet -> 10.0.0.4:3389",
            "allowed=true deciding=n/allow@100:Allow
                 per_nsg: n/allow@100:Allow
                 narrower:",
        );
    }
}

#[test]
fn udp_and_other_protocols_are_ignored() {
    check(
        &with_defaults(
            "nic n
                   rdp-udp Allow 100 In Udp port=3389
                   icmp Allow 110 In Icmp
                   esp Allow 120 In Esp
                   ah Allow 130 In Ah
                   weird Allow 140 In Sctp",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower:",
    );
}

#[test]
fn outbound_rules_are_ignored() {
    check(
        &with_defaults(
            "nic n
                   out Allow 100 Out Tcp port=3389",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower:",
    );
}

#[test]
fn star_and_zero_source_match_everyone() {
    for src in ["*", "0.0.0.0/0", "Any"] {
        for who in ["internet", "198.51.100.1", "10.1.2.3"] {
            check(
                &with_defaults(&format!("nic n\n rdp Allow 300 In Tcp src={src} port=3389")),
                &format!("{who} -> 10.0.0.4:3389"),
                "allowed=true deciding=n/rdp@300:Allow
                     per_nsg: n/rdp@300:Allow
                     narrower:",
            );
        }
    }
}

#[test]
fn plural_arrays() {
    let nsgs = with_defaults(
        "nic n
               rdp Allow 300 In Tcp src=198.51.100.0/24,203.0.113.0/24 port=22,3389,5985-5986",
    );
    check(
        &nsgs,
        "203.0.113.9 -> 10.0.0.4:3389",
        "allowed=true deciding=n/rdp@300:Allow
             per_nsg: n/rdp@300:Allow
             narrower:",
    );
    check(
        &nsgs,
        "198.51.100.200 -> 10.0.0.4:5986",
        "allowed=true deciding=n/rdp@300:Allow
             per_nsg: n/rdp@300:Allow
             narrower:",
    );
    check(
        &nsgs,
        "198.51.100.200 -> 10.0.0.4:3390",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower:",
    );
}

#[test]
fn internet_tag_with_expansion() {
    // A (truncated) expansion as in Microsoft's example: the tag name still means
    // "everyone" for the Internet probe, and addresses are matched via the expansion.
    let nsgs = with_defaults(
            "nic n
               rdp Allow 300 In Tcp src=Internet srcx=32.0.0.0/3,4.0.0.0/6,2.0.0.0/7,1.0.0.0/8 port=3389",
        );
    let allowed = "allowed=true deciding=n/rdp@300:Allow
                       per_nsg: n/rdp@300:Allow
                       narrower:";
    check(&nsgs, "internet -> 10.0.0.4:3389", allowed);
    check(&nsgs, "40.1.2.3 -> 10.0.0.4:3389", allowed);
    // 8.8.8.8 is public but not in this (truncated) expansion: the expansion is trusted.
    check(
        &nsgs,
        "8.8.8.8 -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower: n/rdp@300:Allow[Internet]",
    );
}

#[test]
fn internet_tag_without_expansion() {
    // Without the defaults: AllowVnetInBound would (rightly) admit the private sources.
    let nsgs = "nic n
               rdp Allow 300 In Tcp src=internet port=3389
               deny-all Deny 4000 In All";
    let allowed = "allowed=true deciding=n/rdp@300:Allow
                       per_nsg: n/rdp@300:Allow
                       narrower:";
    check(nsgs, "internet -> 10.0.0.4:3389", allowed);
    check(nsgs, "8.8.8.8 -> 10.0.0.4:3389", allowed);
    check(nsgs, "172.32.0.1 -> 10.0.0.4:3389", allowed);
    // Private, CGNAT, loopback, link-local sources are not "Internet".
    for ip in [
        "10.1.1.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
    ] {
        check(
            nsgs,
            &format!("{ip} -> 10.0.0.4:3389"),
            "allowed=false deciding=n/deny-all@4000:Deny
                 per_nsg: n/deny-all@4000:Deny
                 narrower: n/rdp@300:Allow[internet]",
        );
    }
}

#[test]
fn office_only_cidr() {
    let nsgs = with_defaults(
        "subnet n
               office-rdp Allow 300 In Tcp src=203.0.113.0/24 port=3389",
    );
    check(
        &nsgs,
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower: n/office-rdp@300:Allow[203.0.113.0/24]",
    );
    check(
        &nsgs,
        "203.0.113.7 -> 10.0.0.4:3389",
        "allowed=true deciding=n/office-rdp@300:Allow
             per_nsg: n/office-rdp@300:Allow
             narrower:",
    );
    check(
        &nsgs,
        "198.51.100.1 -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower: n/office-rdp@300:Allow[203.0.113.0/24]",
    );
}

#[test]
fn narrower_allows_only_before_the_deny_and_not_private_for_internet() {
    check(
        "nic n
               vnet-rdp Allow 200 In Tcp src=VirtualNetwork port=3389
               office-rdp Allow 300 In Tcp src=203.0.113.0/24 port=3389
               block-rdp Deny 400 In Tcp port=3389
               late-office Allow 500 In Tcp src=198.51.100.0/24 port=3389",
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/block-rdp@400:Deny
             per_nsg: n/block-rdp@400:Deny
             narrower: n/office-rdp@300:Allow[203.0.113.0/24]",
    );
    // For a specific address every source-mismatched allow is a useful hint.
    check(
        "nic n
               vnet-rdp Allow 200 In Tcp src=VirtualNetwork port=3389
               office-rdp Allow 300 In Tcp src=203.0.113.0/24 port=3389
               block-rdp Deny 400 In Tcp port=3389",
        "8.8.8.8 -> 10.0.0.4:3389",
        "allowed=false deciding=n/block-rdp@400:Deny
             per_nsg: n/block-rdp@400:Deny
             narrower: n/vnet-rdp@200:Allow[VirtualNetwork] n/office-rdp@300:Allow[203.0.113.0/24]",
    );
}

#[test]
fn empty_list_allows_without_deciding_rule() {
    check(
        "",
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=-
             per_nsg:
             narrower:
             note: no network security group applies to this NIC; traffic is not filtered by NSGs",
    );
}

#[test]
fn implicit_deny_when_nothing_matches() {
    check(
        "subnet s
               web Allow 100 In Tcp port=443
             nic n
               rdp Allow 100 In Tcp port=3389",
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=s/implicit
             per_nsg: s/implicit n/rdp@100:Allow
             narrower:",
    );
    check(
        "nic n",
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/implicit
             per_nsg: n/implicit
             narrower:",
    );
}

#[test]
fn destination_cidr_must_contain_vm_ip() {
    let nsgs = with_defaults(
        "nic n
               other-vm Allow 100 In Tcp dst=10.0.1.0/24 port=3389
               this-vm Allow 200 In Tcp dst=10.0.0.4 port=3389",
    );
    check(
        &nsgs,
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=n/this-vm@200:Allow
             per_nsg: n/this-vm@200:Allow
             narrower:",
    );
    check(
        &nsgs,
        "internet -> 10.0.1.9:3389",
        "allowed=true deciding=n/other-vm@100:Allow
             per_nsg: n/other-vm@100:Allow
             narrower:",
    );
    check(
        &nsgs,
        "internet -> 10.0.2.9:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower:",
    );
}

#[test]
fn destination_expansion_and_unknown_vm_ip() {
    let nsgs = "nic n
               deny-other Deny 100 In Tcp dst=10.9.9.9/32 port=3389
               rdp Allow 200 In Tcp dst=VirtualNetwork dstx=10.0.0.0/16 port=3389";
    check(
        nsgs,
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=n/rdp@200:Allow
             per_nsg: n/rdp@200:Allow
             narrower:",
    );
    // Unknown VM IP: permissive, so the /32 deny is assumed to apply too.
    check(
        nsgs,
        "internet -> ?:3389",
        "allowed=false deciding=n/deny-other@100:Deny
             per_nsg: n/deny-other@100:Deny
             narrower:
             note: VM private IP unknown: rules with any IPv4 destination were assumed to apply",
    );
}

#[test]
fn unexpanded_other_tag_matches_nothing_with_note() {
    check(
            &with_defaults(
                "nic n
                   lb-rdp Allow 100 In Tcp src=AzureCloud.westeurope port=3389",
            ),
            "8.8.8.8 -> 10.0.0.4:3389",
            "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower: n/lb-rdp@100:Allow[AzureCloud.westeurope]
             note: rule lb-rdp (100): service tag 'AzureCloud.westeurope' in the source came without an expansion; treated as matching nothing",
        );
}

#[test]
fn internet_coverage_by_union_of_cidrs_and_ipv6_ignored() {
    check(
        &with_defaults(
            "nic n
                   halves Allow 100 In Tcp src=0.0.0.0/1,128.0.0.0/1 port=3389",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=true deciding=n/halves@100:Allow
             per_nsg: n/halves@100:Allow
             narrower:",
    );
    check(
        &with_defaults(
            "nic n
                   v6 Allow 100 In Tcp src=::/0 port=3389
                   half Allow 110 In Tcp src=128.0.0.0/1 port=3389",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower: n/half@110:Allow[128.0.0.0/1]",
    );
}

#[test]
fn garbage_ports_and_prefixes_do_not_panic_or_match() {
    check(
        &with_defaults(
            "nic n
                   bad1 Allow 100 In Tcp port=3389-3000
                   bad2 Allow 101 In Tcp port=abc,70000,-,3389-,+3389
                   bad3 Allow 102 In Tcp src=10.0.0.0/33,300.1.1.1,1.2.3/24 port=3389
                   bad4 Allow 103 In Tcp port=",
        ),
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=n/DenyAllInBound@65500:Deny
             per_nsg: n/DenyAllInBound@65500:Deny
             narrower:
             note: rule bad1 (100): unparseable destination port '3389-3000' ignored
             note: rule bad2 (101): unparseable destination port 'abc' ignored
             note: rule bad2 (101): unparseable destination port '70000' ignored
             note: rule bad2 (101): unparseable destination port '-' ignored
             note: rule bad2 (101): unparseable destination port '3389-' ignored
             note: rule bad2 (101): unparseable destination port '+3389' ignored
             note: rule bad3 (102): unparseable source prefix '10.0.0.0/33' ignored
             note: rule bad3 (102): unparseable source prefix '300.1.1.1' ignored
             note: rule bad3 (102): unparseable source prefix '1.2.3/24' ignored",
    );
}

#[test]
fn nsg_order_subnet_first_even_if_listed_last() {
    check(
        "other mgr
               m Deny 100 In Tcp port=3389
             nic nic-nsg
               a Deny 100 In Tcp port=3389
             subnet sub-nsg
               b Deny 100 In Tcp port=3389",
        "internet -> 10.0.0.4:3389",
        "allowed=false deciding=sub-nsg/b@100:Deny
             per_nsg: sub-nsg/b@100:Deny nic-nsg/a@100:Deny mgr/m@100:Deny
             narrower:",
    );
}

/// The rules of Microsoft's `NetworkInterfaceEffectiveNSGList.json` (2024-03-01), embedded
/// verbatim as literal data. The example has no DenyAllInBound, so the implicit deny shows.
#[test]
fn arm_example_effective_nsg_list() {
    let s = |v: &str| vec![v.to_string()];
    let rules = vec![
        EffectiveRule {
            name: "securityRules/rule1".into(),
            protocol: "Tcp".into(),
            source_address_prefixes: s("0.0.0.0/32"),
            expanded_source_address_prefixes: vec![],
            destination_address_prefixes: s("0.0.0.0/32"),
            expanded_destination_address_prefixes: vec![],
            destination_port_ranges: s("6579-6579"),
            access: Access::Allow,
            priority: 234,
            direction: Direction::Inbound,
        },
        EffectiveRule {
            name: "securityRules/default-allow-rdp".into(),
            protocol: "Tcp".into(),
            source_address_prefixes: s("1.1.1.1/32"),
            expanded_source_address_prefixes: vec![],
            destination_address_prefixes: s("0.0.0.0/0"),
            expanded_destination_address_prefixes: vec![],
            destination_port_ranges: s("3389-3389"),
            access: Access::Allow,
            priority: 1000,
            direction: Direction::Inbound,
        },
        EffectiveRule {
            name: "defaultSecurityRules/AllowInternetOutBound".into(),
            protocol: "All".into(),
            source_address_prefixes: s("0.0.0.0/0"),
            expanded_source_address_prefixes: vec![],
            destination_address_prefixes: s("Internet"),
            expanded_destination_address_prefixes: [
                "32.0.0.0/3",
                "4.0.0.0/6",
                "2.0.0.0/7",
                "1.0.0.0/8",
            ]
            .map(String::from)
            .to_vec(),
            destination_port_ranges: s("0-65535"),
            access: Access::Allow,
            priority: 65001,
            direction: Direction::Outbound,
        },
    ];
    let nsgs = vec![EffectiveNsg {
            nsg_id: "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups/test-nsg".into(),
            association: Association::Subnet(
                "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/rg1-vnet/subnets/default".into(),
            ),
            rules,
        }];
    assert_eq!(nsgs[0].name(), "test-nsg");
    assert_eq!(nsgs[0].rules[1].short_name(), "default-allow-rdp");
    assert!(nsgs[0].rules[2].is_default());

    let v = evaluate(&nsgs, &Probe::rdp_from_internet(None));
    assert!(!v.allowed);
    assert!(v.deciding.as_ref().unwrap().implicit);
    assert_eq!(v.narrower_allows.len(), 1);
    assert_eq!(v.narrower_allows[0].rule, "default-allow-rdp");
    assert_eq!(v.narrower_allows[0].priority, 1000);
    assert_eq!(v.narrower_allows[0].sources, vec!["1.1.1.1/32".to_string()]);

    let from = |ip: [u8; 4]| Probe {
        source: TrafficSource::Address(Ipv4Addr::from(ip)),
        destination: Some(Ipv4Addr::new(10, 0, 0, 4)),
        port: 3389,
    };
    let v = evaluate(&nsgs, &from([1, 1, 1, 1]));
    assert!(v.allowed);
    let d = v.deciding.unwrap();
    assert_eq!(
        (d.nsg.as_str(), d.rule.as_str(), d.priority),
        ("test-nsg", "default-allow-rdp", 1000)
    );
    assert_eq!(d.raw_name, "securityRules/default-allow-rdp");
    assert!(!evaluate(&nsgs, &from([1, 1, 1, 2])).allowed);
}

#[test]
fn parse_port_range_cases() {
    assert_eq!(parse_port_range("3389-3389"), Some((3389, 3389)));
    assert_eq!(parse_port_range("3389"), Some((3389, 3389)));
    assert_eq!(parse_port_range("*"), Some((0, 65535)));
    assert_eq!(parse_port_range("0-65535"), Some((0, 65535)));
    assert_eq!(parse_port_range(" 3000 - 4000 "), Some((3000, 4000)));
    for bad in [
        "",
        "-",
        "4000-3000",
        "65536",
        "1-2-3",
        "+1",
        "x",
        "3389-",
        "-3389",
        "٣٣٨٩",
    ] {
        assert_eq!(parse_port_range(bad), None, "{bad:?}");
    }
}

#[test]
fn parse_cidr_cases() {
    let n = |s: &str| s.parse::<Ipv4Net>().ok();
    assert_eq!(parse_cidr("10.0.0.4"), n("10.0.0.4/32"));
    assert_eq!(parse_cidr(" 203.0.113.0/24 "), n("203.0.113.0/24"));
    assert_eq!(parse_cidr("10.0.0.4/24"), n("10.0.0.0/24"));
    assert_eq!(parse_cidr("0.0.0.0/0"), n("0.0.0.0/0"));
    for bad in [
        "",
        "*",
        "Internet",
        "::/0",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0/8",
        "1.2.3.4/+8",
        "1.2.3.4/008",
    ] {
        assert_eq!(parse_cidr(bad), None, "{bad:?}");
    }
}

#[test]
fn public_nets_are_the_complement_of_non_public() {
    let pubs = public_nets();
    let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
    assert_eq!(pubs.first(), Some(&n("1.0.0.0/8")));
    assert_eq!(pubs.last(), Some(&n("208.0.0.0/4")));
    // Together with the non-public blocks they tile the address space exactly once.
    let size = |n: &Ipv4Net| 1u64 << (32 - n.prefix_len());
    let total: u64 = pubs.iter().chain(NON_PUBLIC.iter()).map(size).sum();
    assert_eq!(total, 1u64 << 32);
    assert_eq!(
        Ipv4Net::aggregate(&pubs.iter().chain(NON_PUBLIC.iter()).copied().collect()),
        vec![Ipv4Net::default()]
    );
    for ip in [
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.0",
        "223.255.255.255",
    ] {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(
            is_public(ip) && pubs.iter().any(|p| p.contains(&ip)),
            "{ip}"
        );
    }
    for ip in [
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.0",
        "169.254.1.1",
        "224.0.0.1",
    ] {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(
            !is_public(ip) && !pubs.iter().any(|p| p.contains(&ip)),
            "{ip}"
        );
    }
}

// -----------------------------------------------------------------------------------------
// Property tests against a reference evaluator over a structured model.
//
// The model is rendered to strings for `evaluate`, while the reference evaluates the model
// directly, using different techniques: octet comparisons / enumeration instead of masks,
// `filter` + `min_by_key` instead of sort + first, and `all` over NSGs.
// -----------------------------------------------------------------------------------------

/// Azure-like expansion of the `Internet` tag: exactly the public space as defined above.
const PUBLIC_EXPANSION: [&str; 51] = [
    "1.0.0.0/8",
    "2.0.0.0/7",
    "4.0.0.0/6",
    "8.0.0.0/7",
    "11.0.0.0/8",
    "12.0.0.0/6",
    "16.0.0.0/4",
    "32.0.0.0/3",
    "64.0.0.0/3",
    "96.0.0.0/6",
    "100.0.0.0/10",
    "100.128.0.0/9",
    "101.0.0.0/8",
    "102.0.0.0/7",
    "104.0.0.0/5",
    "112.0.0.0/5",
    "120.0.0.0/6",
    "124.0.0.0/7",
    "126.0.0.0/8",
    "128.0.0.0/3",
    "160.0.0.0/5",
    "168.0.0.0/8",
    "169.0.0.0/9",
    "169.128.0.0/10",
    "169.192.0.0/11",
    "169.224.0.0/12",
    "169.240.0.0/13",
    "169.248.0.0/14",
    "169.252.0.0/15",
    "169.255.0.0/16",
    "170.0.0.0/7",
    "172.0.0.0/12",
    "172.32.0.0/11",
    "172.64.0.0/10",
    "172.128.0.0/9",
    "173.0.0.0/8",
    "174.0.0.0/7",
    "176.0.0.0/4",
    "192.0.0.0/9",
    "192.128.0.0/11",
    "192.160.0.0/13",
    "192.169.0.0/16",
    "192.170.0.0/15",
    "192.172.0.0/14",
    "192.176.0.0/12",
    "192.192.0.0/10",
    "193.0.0.0/8",
    "194.0.0.0/7",
    "196.0.0.0/6",
    "200.0.0.0/5",
    "208.0.0.0/4",
];

const VNET_EXPANSION: [([u8; 4], u8); 2] = [([10, 0, 0, 0], 16), ([192, 168, 1, 0], 24)];

#[derive(Clone, Debug)]
enum Item {
    Star,
    /// Network (already masked) and a length from {0, 1, 8, 16, 24, 28, 32}.
    Net([u8; 4], u8),
    Internet,
    Vnet,
    /// Another service tag and what Azure would expand it to.
    Other(&'static str, Vec<([u8; 4], u8)>),
    V6,
    Junk(&'static str),
}

#[derive(Clone, Debug)]
struct MSide {
    items: Vec<Item>,
    expand: bool,
}

#[derive(Clone, Debug)]
enum MPort {
    Star,
    One(u16),
    Range(u16, u16),
    Junk(&'static str),
}

#[derive(Clone, Debug)]
struct MRule {
    proto: &'static str,
    src: MSide,
    dst: MSide,
    ports: Vec<MPort>,
    allow: bool,
    priority: i32,
    inbound: bool,
    default: bool,
}

#[derive(Clone, Debug)]
struct MNsg {
    kind: u8,
    rules: Vec<MRule>,
}

fn masked(base: [u8; 4], len: u8) -> [u8; 4] {
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    (u32::from_be_bytes(base) & m).to_be_bytes()
}

fn arb_net() -> impl Strategy<Value = ([u8; 4], u8)> {
    let bases = prop::sample::select(vec![
        [10, 0, 0, 0],
        [10, 0, 0, 4],
        [10, 0, 0, 16],
        [10, 0, 1, 0],
        [203, 0, 113, 0],
        [203, 0, 113, 7],
        [198, 51, 100, 0],
        [8, 8, 8, 0],
        [172, 16, 0, 0],
        [192, 168, 1, 0],
        [100, 64, 0, 0],
        [128, 0, 0, 0],
    ]);
    let lens = prop::sample::select(vec![0u8, 1, 8, 16, 24, 24, 28, 32, 32]);
    (bases, lens).prop_map(|(b, l)| (masked(b, l), l))
}

fn arb_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        2 => Just(Item::Star),
        6 => arb_net().prop_map(|(n, l)| Item::Net(n, l)),
        2 => Just(Item::Internet),
        2 => Just(Item::Vnet),
        1 => Just(Item::Other("AzureLoadBalancer", vec![([168, 63, 129, 16], 32)])),
        1 => Just(Item::Other("Storage.WestEurope", vec![([203, 0, 113, 0], 28), ([8, 8, 8, 0], 24)])),
        1 => Just(Item::Other("EmptyTag", vec![])),
        1 => Just(Item::V6),
        1 => prop::sample::select(vec!["10.0.0.0/33", "300.1.1.1", "::zz", "/", "1.2.3/24", "*/*", "10.0.0.4/"])
            .prop_map(Item::Junk),
    ]
}

fn arb_side() -> impl Strategy<Value = MSide> {
    (prop::collection::vec(arb_item(), 1..=3), any::<bool>())
        .prop_map(|(items, expand)| MSide { items, expand })
}

fn arb_port() -> impl Strategy<Value = MPort> {
    let p = prop::sample::select(vec![0u16, 22, 3388, 3389, 3390, 65535]);
    prop_oneof![
        1 => Just(MPort::Star),
        3 => p.clone().prop_map(MPort::One),
        3 => (p.clone(), p).prop_map(|(a, b)| MPort::Range(a.min(b), a.max(b))),
        1 => prop::sample::select(vec!["3390-3389", "abc", "", "-", "70000", "3389-"]).prop_map(MPort::Junk),
    ]
}

fn arb_rule() -> impl Strategy<Value = MRule> {
    let protos = prop::sample::select(vec![
        "Tcp", "TCP", "tcp", "All", "all", "*", "Udp", "Icmp", "Esp", "Ah", "junk", "",
    ]);
    let prio = prop_oneof![
        4 => 100i32..4096,
        1 => prop::sample::select(vec![65000i32, 65001, 65500]),
    ];
    (
        protos,
        arb_side(),
        arb_side(),
        prop::collection::vec(arb_port(), 1..=2),
        any::<bool>(),
        prio,
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(proto, src, dst, ports, allow, priority, inbound, default)| MRule {
                proto,
                src,
                dst,
                ports,
                allow,
                priority,
                inbound,
                default,
            },
        )
}

fn arb_nsgs() -> impl Strategy<Value = Vec<MNsg>> {
    prop::collection::vec(
        (0u8..3, prop::collection::vec(arb_rule(), 0..=8))
            .prop_map(|(kind, rules)| MNsg { kind, rules }),
        0..=3,
    )
}

fn arb_probe() -> impl Strategy<Value = Probe> {
    let ip = prop::sample::select(vec![
        [10, 0, 0, 4],
        [10, 0, 0, 5],
        [10, 0, 1, 9],
        [203, 0, 113, 7],
        [203, 0, 113, 200],
        [198, 51, 100, 1],
        [8, 8, 8, 8],
        [168, 63, 129, 16],
        [100, 64, 1, 1],
        [100, 100, 0, 1],
        [10, 9, 0, 1],
        [169, 254, 169, 254],
        [127, 0, 0, 1],
        [172, 16, 5, 4],
        [172, 32, 0, 1],
        [192, 168, 1, 1],
        [200, 1, 2, 3],
    ]);
    let src = prop_oneof![
        1 => Just(TrafficSource::Internet),
        2 => ip.prop_map(|o| TrafficSource::Address(Ipv4Addr::from(o))),
    ];
    let dst = prop::option::weighted(
        0.8,
        prop::sample::select(vec![[10, 0, 0, 4], [10, 0, 0, 5], [10, 0, 1, 9]]),
    );
    let port = prop::sample::select(vec![3389u16, 3389, 3390, 22]);
    (src, dst, port).prop_map(|(source, d, port)| Probe {
        source,
        destination: d.map(Ipv4Addr::from),
        port,
    })
}

fn net_str((n, l): ([u8; 4], u8)) -> String {
    let ip = Ipv4Addr::from(n);
    if l == 32 {
        ip.to_string()
    } else {
        format!("{ip}/{l}")
    }
}

fn render_side(s: &MSide) -> (Vec<String>, Vec<String>) {
    let mut raw = Vec::new();
    let mut exp = Vec::new();
    for it in &s.items {
        match it {
            Item::Star => raw.push("*".to_string()),
            Item::Net(n, l) => raw.push(net_str((*n, *l))),
            Item::Internet => {
                raw.push("Internet".into());
                exp.extend(PUBLIC_EXPANSION.iter().map(|s| s.to_string()));
            }
            Item::Vnet => {
                // Azure expands VirtualNetwork to the VNet's (and peers') address space,
                // which is narrower than the RFC 1918 fallback.
                raw.push("VirtualNetwork".into());
                exp.extend(VNET_EXPANSION.map(net_str));
            }
            Item::Other(name, nets) => {
                raw.push(name.to_string());
                exp.extend(nets.iter().map(|&n| net_str(n)));
                exp.push("2603:1000::/40".into());
            }
            Item::V6 => raw.push("2001:db8::/32".into()),
            Item::Junk(j) => raw.push(j.to_string()),
        }
    }
    (raw, if s.expand { exp } else { Vec::new() })
}

fn nsg_id(j: usize) -> String {
    format!("{ID_BASE}/networkSecurityGroups/nsg{j}")
}

fn rule_name(r: &MRule, i: usize) -> String {
    if r.default {
        format!("defaultSecurityRules/r{i}")
    } else {
        format!("securityRules/r{i}")
    }
}

fn render_nsgs(m: &[MNsg]) -> Vec<EffectiveNsg> {
    m.iter()
        .enumerate()
        .map(|(j, n)| EffectiveNsg {
            nsg_id: nsg_id(j),
            association: match n.kind {
                0 => Association::Subnet(format!("subnet{j}")),
                1 => Association::NetworkInterface(format!("nic{j}")),
                _ => Association::Other(format!("other{j}")),
            },
            rules: n
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let (src, srcx) = render_side(&r.src);
                    let (dst, dstx) = render_side(&r.dst);
                    EffectiveRule {
                        name: rule_name(r, i),
                        protocol: r.proto.to_string(),
                        source_address_prefixes: src,
                        expanded_source_address_prefixes: srcx,
                        destination_address_prefixes: dst,
                        expanded_destination_address_prefixes: dstx,
                        destination_port_ranges: r
                            .ports
                            .iter()
                            .map(|p| match p {
                                MPort::Star => "*".to_string(),
                                MPort::One(p) => p.to_string(),
                                MPort::Range(a, b) => format!("{a}-{b}"),
                                MPort::Junk(j) => j.to_string(),
                            })
                            .collect(),
                        access: if r.allow { Access::Allow } else { Access::Deny },
                        priority: r.priority,
                        direction: if r.inbound {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        },
                    }
                })
                .collect(),
        })
        .collect()
}

// --- the reference evaluator ---

fn ref_in_net((n, l): ([u8; 4], u8), ip: [u8; 4]) -> bool {
    match l {
        0 => true,
        1 => (n[0] >= 128) == (ip[0] >= 128),
        8 | 16 | 24 | 32 => n[..usize::from(l / 8)] == ip[..usize::from(l / 8)],
        28 => (0..16u8).any(|k| [n[0], n[1], n[2], n[3] + k] == ip),
        _ => unreachable!("generator only makes the lengths above"),
    }
}

fn ref_public(ip: [u8; 4]) -> bool {
    let [a, b, _, _] = ip;
    !(a == 0
        || a == 10
        || a == 127
        || a >= 224
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168))
}

fn ref_private(ip: [u8; 4]) -> bool {
    ip[0] == 10 || (ip[0] == 172 && (16..32).contains(&ip[1])) || (ip[0] == 192 && ip[1] == 168)
}

fn ref_side_has(s: &MSide, ip: [u8; 4]) -> bool {
    s.items.iter().any(|it| match it {
        Item::Star => true,
        Item::Net(n, l) => ref_in_net((*n, *l), ip),
        Item::Internet => ref_public(ip),
        Item::Vnet if s.expand => VNET_EXPANSION.iter().any(|&n| ref_in_net(n, ip)),
        Item::Vnet => ref_private(ip),
        Item::Other(_, nets) => s.expand && nets.iter().any(|&n| ref_in_net(n, ip)),
        Item::V6 | Item::Junk(_) => false,
    })
}

fn ref_side_everyone(s: &MSide) -> bool {
    let has = |want: &dyn Fn(&Item) -> bool| s.items.iter().any(want);
    has(&|i| matches!(i, Item::Star | Item::Internet | Item::Net(_, 0)))
        || (has(&|i| matches!(i, Item::Net([0, 0, 0, 0], 1)))
            && has(&|i| matches!(i, Item::Net([128, 0, 0, 0], 1))))
}

fn ref_side_anything(s: &MSide) -> bool {
    s.items
        .iter()
        .any(|i| !matches!(i, Item::V6 | Item::Junk(_)))
}

fn ref_matches_except_source(r: &MRule, p: &Probe) -> bool {
    let tcp = ["Tcp", "TCP", "tcp", "All", "all", "*"].contains(&r.proto);
    let port = r.ports.iter().any(|q| match *q {
        MPort::Star => true,
        MPort::One(x) => x == p.port,
        MPort::Range(a, b) => (a..=b).any(|x| x == p.port),
        MPort::Junk(_) => false,
    });
    let dst = match p.destination {
        Some(ip) => ref_side_has(&r.dst, ip.octets()),
        None => ref_side_anything(&r.dst),
    };
    r.inbound && tcp && port && dst
}

fn ref_matches(r: &MRule, p: &Probe) -> bool {
    ref_matches_except_source(r, p)
        && match p.source {
            TrafficSource::Internet => ref_side_everyone(&r.src),
            TrafficSource::Address(ip) => ref_side_has(&r.src, ip.octets()),
        }
}

/// Per NSG: the matching rule with the smallest priority (first in input order on ties).
fn ref_nsg<'a>(n: &'a MNsg, p: &Probe) -> Option<(usize, &'a MRule)> {
    n.rules
        .iter()
        .enumerate()
        .filter(|(_, r)| ref_matches(r, p))
        .min_by_key(|(_, r)| r.priority)
}

fn ref_allowed(m: &[MNsg], p: &Probe) -> bool {
    m.iter()
        .all(|n| ref_nsg(n, p).is_some_and(|(_, r)| r.allow))
}

fn arb_junk_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::sample::select(vec![
            "",
            " ",
            "-",
            "*",
            "/",
            "//",
            "0-",
            "-0",
            "65535-65536",
            "4294967296",
            "1.2.3.4/4294967296",
            "255.255.255.255/32",
            "0.0.0.0/0",
            "::/0",
            ":",
            "a:b",
            "Internet",
            "internet",
            "1-2-3",
            "३३८९",
            "10.0.0.0/0x8",
            "\u{0}",
            "Tcp ",
        ])
        .prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_matches_reference(model in arb_nsgs(), p in arb_probe()) {
        let nsgs = render_nsgs(&model);
        let v = evaluate(&nsgs, &p);
        prop_assert_eq!(v.allowed, ref_allowed(&model, &p), "verdict {:#?}", v);
        assert_invariants(&nsgs, &p, &v);

        // Per-NSG decisions follow the reference, in subnet/NIC/other order.
        let mut order: Vec<usize> = (0..model.len()).collect();
        order.sort_by_key(|&j| model[j].kind);
        for (d, &j) in v.per_nsg.iter().zip(&order) {
            prop_assert_eq!(&d.nsg_id, &nsg_id(j));
            match ref_nsg(&model[j], &p) {
                None => prop_assert!(d.rule.implicit && d.access == Access::Deny),
                Some((i, r)) => {
                    prop_assert_eq!(&d.rule.raw_name, &rule_name(r, i));
                    prop_assert_eq!(d.access == Access::Allow, r.allow);
                }
            }
        }

        // The deciding rule is one the reference agrees matches, with the claimed access.
        if let Some(d) = &v.deciding {
            let j = (0..model.len()).find(|&j| nsg_id(j) == d.nsg_id).unwrap();
            if d.implicit {
                prop_assert!(ref_nsg(&model[j], &p).is_none());
            } else {
                let i = (0..model[j].rules.len())
                    .find(|&i| rule_name(&model[j].rules[i], i) == d.raw_name)
                    .unwrap();
                let r = &model[j].rules[i];
                prop_assert!(ref_matches(r, &p));
                prop_assert_eq!(r.allow, d.access == Access::Allow);
            }
        } else {
            prop_assert!(model.is_empty());
        }

        // Narrower allows: allows that the reference says match all but the source.
        for n in &v.narrower_allows {
            let j = (0..model.len()).find(|&j| nsg_id(j) == n.nsg_id).unwrap();
            let i = (0..model[j].rules.len())
                .find(|&i| rule_name(&model[j].rules[i], i) == n.raw_name)
                .unwrap();
            let r = &model[j].rules[i];
            prop_assert!(r.allow && !r.default);
            prop_assert!(ref_matches_except_source(r, &p) && !ref_matches(r, &p));
        }
    }

    #[test]
    fn prop_never_panics_on_arbitrary_strings(
        proto in arb_junk_string(),
        ports in prop::collection::vec(arb_junk_string(), 0..3),
        src in prop::collection::vec(arb_junk_string(), 0..3),
        srcx in prop::collection::vec(arb_junk_string(), 0..3),
        dst in prop::collection::vec(arb_junk_string(), 0..3),
        id in arb_junk_string(),
        name in arb_junk_string(),
        priority in any::<i32>(),
        p in arb_probe(),
    ) {
        let rule = EffectiveRule {
            name,
            protocol: proto,
            source_address_prefixes: src,
            expanded_source_address_prefixes: srcx,
            destination_address_prefixes: dst.clone(),
            expanded_destination_address_prefixes: dst,
            destination_port_ranges: ports.clone(),
            access: Access::Deny,
            priority,
            direction: Direction::Inbound,
        };
        let nsgs = vec![EffectiveNsg {
            nsg_id: id,
            association: Association::NetworkInterface("nic".into()),
            rules: vec![rule.clone(), EffectiveRule { access: Access::Allow, ..rule }],
        }];
        let v = evaluate(&nsgs, &p);
        prop_assert_eq!(v.per_nsg.len(), 1);
        for s in &ports {
            let _ = parse_port_range(s);
            let _ = parse_cidr(s);
        }
    }

    #[test]
    fn prop_parse_cidr_roundtrip(ip in any::<u32>(), len in 0u8..=32) {
        let net = if len == 0 { 0 } else { ip & (u32::MAX << (32 - u32::from(len))) };
        let s = format!("{}/{}", Ipv4Addr::from(ip), len);
        let parsed = parse_cidr(&s).expect("a valid CIDR parses");
        prop_assert_eq!((u32::from(parsed.network()), parsed.prefix_len()), (net, len));
        prop_assert!(parsed.contains(&Ipv4Addr::from(ip)));
    }

    #[test]
    fn prop_parse_port_range_roundtrip(a in any::<u16>(), b in any::<u16>()) {
        let s = format!("{a}-{b}");
        prop_assert_eq!(parse_port_range(&s), (a <= b).then_some((a, b)));
        prop_assert_eq!(parse_port_range(&a.to_string()), Some((a, a)));
    }
}
