//! Pure evaluator for Azure *effective* network security group rules.
//!
//! Question answered: does inbound TCP to the RDP port (normally 3389) reach the VM, given the
//! effective NSG list that `NetworkInterfaces_ListEffectiveNetworkSecurityGroups` returns for
//! the VM's NIC?
//!
//! This module does no I/O and knows no Azure SDK types; the caller maps the ARM JSON onto
//! [`EffectiveNsg`] / [`EffectiveRule`] (merging the singular and plural fields) and renders the
//! [`NsgVerdict`]. Everything is written so that malformed input never panics: a rule with an
//! unparseable port or prefix simply does not match on that item (and a note says so), because
//! a diagnostic tool must still say *something* useful when Azure hands back odd data.
//!
//! Semantics, in short (see [`evaluate`] for details):
//! * an empty NSG list means no NSG applies, so nothing is filtered;
//! * NSGs are evaluated subnet first, then NIC, then others; traffic must be allowed by all;
//! * within an NSG the matching rule with the lowest priority number decides, and no match
//!   means an implicit deny (the default `DenyAllInBound` normally makes this moot).

use crate::domain::cidr::complement;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::net::Ipv4Addr;

// ---------------------------------------------------------------------------------------------
// Input types
// ---------------------------------------------------------------------------------------------

/// `access` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Access {
    Allow,
    Deny,
}

impl Access {
    /// Case-insensitive parse of ARM's `"Allow"` / `"Deny"`; `None` for anything else so the
    /// caller can decide how to report a malformed rule.
    pub fn parse(s: &str) -> Option<Access> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Some(Access::Allow),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }
}

/// `direction` of a rule. Only inbound rules are relevant to reaching the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// Case-insensitive parse of ARM's `"Inbound"` / `"Outbound"`.
    pub fn parse(s: &str) -> Option<Direction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// One entry of `effectiveSecurityRules`.
///
/// The caller merges singular and plural ARM fields (`sourceAddressPrefix` and
/// `sourceAddressPrefixes`, etc.) into the `Vec`s; empty strings are ignored. Source *port*
/// ranges are deliberately not modelled: an RDP client uses an ephemeral port we cannot know,
/// and effective rules practically always carry `0-65535` there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveRule {
    /// Raw name as returned, e.g. `"securityRules/default-allow-rdp"`.
    pub name: String,
    /// `Tcp` | `Udp` | `All` (also `*`, `Icmp`, `Esp`, `Ah`; case-insensitive).
    pub protocol: String,
    pub source_address_prefixes: Vec<String>,
    pub expanded_source_address_prefixes: Vec<String>,
    pub destination_address_prefixes: Vec<String>,
    pub expanded_destination_address_prefixes: Vec<String>,
    pub destination_port_ranges: Vec<String>,
    pub access: Access,
    pub priority: i32,
    pub direction: Direction,
}

impl EffectiveRule {
    /// Name without the `securityRules/` / `defaultSecurityRules/` prefix, as users see it in
    /// the portal.
    pub fn short_name(&self) -> &str {
        short_rule_name(&self.name)
    }

    /// True for Azure's built-in rules (`defaultSecurityRules/...`), which users cannot edit.
    pub fn is_default(&self) -> bool {
        self.name
            .trim()
            .to_ascii_lowercase()
            .starts_with("defaultsecurityrules/")
    }
}

/// Strip the `securityRules/` or `defaultSecurityRules/` prefix (anything up to the last `/`).
pub fn short_rule_name(raw: &str) -> &str {
    raw.rsplit('/').next().unwrap_or(raw)
}

/// What the NSG is attached to (the resource id of the subnet / NIC / other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Association {
    Subnet(String),
    NetworkInterface(String),
    Other(String),
}

impl Association {
    /// Evaluation rank for inbound traffic: the subnet NSG sees the packet first, then the NIC.
    fn rank(&self) -> u8 {
        match self {
            Association::Subnet(_) => 0,
            Association::NetworkInterface(_) => 1,
            Association::Other(_) => 2,
        }
    }
}

/// One entry of the effective list: an NSG and its (default + custom) rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveNsg {
    pub nsg_id: String,
    pub association: Association,
    pub rules: Vec<EffectiveRule>,
}

impl EffectiveNsg {
    /// NSG name: the last segment of its resource id (the whole id if it has no `/`).
    pub fn name(&self) -> &str {
        self.nsg_id
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.nsg_id)
    }
}

/// Where the RDP connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TrafficSource {
    /// "Can an arbitrary person on the Internet connect?" Only rules whose source covers the
    /// whole public IPv4 Internet match (see [`evaluate`]).
    Internet,
    /// A specific client address (e.g. from `--from`); matched by CIDR containment.
    Address(Ipv4Addr),
}

/// An inbound TCP flow to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub source: TrafficSource,
    /// The VM's private IP, if known. Unknown means destinations are matched permissively.
    pub destination: Option<Ipv4Addr>,
    pub port: u16,
}

impl Probe {
    /// The usual question: TCP 3389 from anywhere on the Internet.
    pub fn rdp_from_internet(destination: Option<Ipv4Addr>) -> Probe {
        Probe {
            source: TrafficSource::Internet,
            destination,
            port: 3389,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output types
// ---------------------------------------------------------------------------------------------

/// A reference to the rule that decided something, in user-facing terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// NSG name (last id segment).
    pub nsg: String,
    pub nsg_id: String,
    /// Short rule name, without `securityRules/` / `defaultSecurityRules/`.
    pub rule: String,
    /// Raw rule name as returned by Azure (empty for the implicit deny).
    pub raw_name: String,
    /// For the implicit deny this is `i32::MAX`, so it sorts after every real rule.
    pub priority: i32,
    pub access: Access,
    /// Built-in (`defaultSecurityRules/...`) rule.
    pub default_rule: bool,
    /// No rule matched; the NSG denied by falling off the end of its rule list.
    pub implicit: bool,
    /// The rule's source prefixes as written (lets a report say "open only from X").
    pub sources: Vec<String>,
}

/// Name used in [`RuleRef::rule`] when no rule matched.
pub const IMPLICIT_DENY: &str = "(implicit deny: no rule matched)";

impl RuleRef {
    fn from_rule(nsg: &EffectiveNsg, rule: &EffectiveRule) -> RuleRef {
        RuleRef {
            nsg: nsg.name().to_string(),
            nsg_id: nsg.nsg_id.clone(),
            rule: rule.short_name().to_string(),
            raw_name: rule.name.clone(),
            priority: rule.priority,
            access: rule.access,
            default_rule: rule.is_default(),
            implicit: false,
            sources: rule.source_address_prefixes.clone(),
        }
    }

    fn implicit_deny(nsg: &EffectiveNsg) -> RuleRef {
        RuleRef {
            nsg: nsg.name().to_string(),
            nsg_id: nsg.nsg_id.clone(),
            rule: IMPLICIT_DENY.to_string(),
            raw_name: String::new(),
            priority: i32::MAX,
            access: Access::Deny,
            default_rule: false,
            implicit: true,
            sources: Vec::new(),
        }
    }
}

/// The decision of one NSG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NsgDecision {
    pub nsg: String,
    pub nsg_id: String,
    pub association: Association,
    pub access: Access,
    /// The matching rule, or the synthetic implicit deny ([`RuleRef::implicit`]).
    pub rule: RuleRef,
}

/// Result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NsgVerdict {
    pub allowed: bool,
    /// `None` only when no NSG applies (empty list). Otherwise: the rule of the first denying
    /// NSG in evaluation order, or, if all allow, the allowing rule of the last NSG evaluated.
    pub deciding: Option<RuleRef>,
    /// Decision of each NSG, in evaluation order (subnet, NIC, other).
    pub per_nsg: Vec<NsgDecision>,
    /// Allow rules that would have let the port through but for their source (see
    /// [`evaluate`]); filled only when the verdict is "denied".
    pub narrower_allows: Vec<RuleRef>,
    /// Human-readable caveats (unexpanded service tags, unparseable items, unknown VM IP...).
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------------------------

/// Parse a destination port item: `"3389"`, `"3000-4000"`, `"*"` (whole range). Whitespace
/// around numbers is tolerated; anything else (reversed ranges, signs, out-of-range numbers,
/// empty strings) yields `None`.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    if s == "*" || s.eq_ignore_ascii_case("any") {
        return Some((0, u16::MAX));
    }
    let num = |t: &str| -> Option<u16> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let p = num(s)?;
            (p, p)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

/// Parse an IPv4 CIDR (`"203.0.113.0/24"`) or bare address (`"10.0.0.4"`, taken as /32).
/// Returns the network with its host bits masked off, since Azure treats `10.0.0.4/24` as
/// `10.0.0.0/24`. IPv6, tags and garbage give `None`; so do a prefix length with a sign or
/// more than two digits (`/+8`, `/008`), which `ipnet`'s own parser would not all refuse.
pub fn parse_cidr(s: &str) -> Option<Ipv4Net> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 2 {
                return None;
            }
            (a, l.parse().ok()?)
        }
        None => (s, 32),
    };
    let ip: Ipv4Addr = addr.parse().ok()?;
    Ipv4Net::new(ip, len).ok().map(|net| net.trunc())
}

/// One item of a source/destination prefix list, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prefix {
    /// `*` (or `Any`): everything.
    Any,
    Net(Ipv4Net),
    /// A service tag such as `Internet`, `VirtualNetwork`, `Storage.WestEurope`.
    Tag(String),
    /// IPv6 prefix: never matches the IPv4 traffic we test.
    Ipv6,
    Invalid,
}

fn classify_prefix(s: &str) -> Prefix {
    let t = s.trim();
    if t == "*" || t.eq_ignore_ascii_case("any") {
        return Prefix::Any;
    }
    if let Some(c) = parse_cidr(t) {
        return Prefix::Net(c);
    }
    if t.contains(':') {
        let addr = t.split_once('/').map_or(t, |(a, _)| a);
        return if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            Prefix::Ipv6
        } else {
            Prefix::Invalid
        };
    }
    let mut chars = t.chars();
    let tag_like = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if tag_like {
        Prefix::Tag(t.to_string())
    } else {
        Prefix::Invalid
    }
}

const fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

/// Address blocks that are not "the public Internet" for our purposes: 0/8, RFC 1918,
/// CGNAT 100.64/10, loopback, link-local, and 224/3 (multicast + reserved + broadcast, which
/// can never be the source of a TCP connection).
const NON_PUBLIC: [Ipv4Net; 8] = [
    net(0, 0, 0, 0, 8),
    net(10, 0, 0, 0, 8),
    net(100, 64, 0, 0, 10),
    net(127, 0, 0, 0, 8),
    net(169, 254, 0, 0, 16),
    net(172, 16, 0, 0, 12),
    net(192, 168, 0, 0, 16),
    net(224, 0, 0, 0, 3),
];

/// What `VirtualNetwork` means when Azure did not expand it: RFC 1918 space.
const RFC1918: [Ipv4Net; 3] = [
    net(10, 0, 0, 0, 8),
    net(172, 16, 0, 0, 12),
    net(192, 168, 0, 0, 16),
];

fn is_public(ip: Ipv4Addr) -> bool {
    !NON_PUBLIC.iter().any(|n| n.contains(&ip))
}

/// Public IPv4 space as the fewest CIDR blocks (the complement of [`NON_PUBLIC`]), in address
/// order: the blocks `ipnet` splits each gap between non-public blocks into. Computed once.
fn public_nets() -> &'static [Ipv4Net] {
    static PUBLIC: std::sync::LazyLock<Vec<Ipv4Net>> =
        std::sync::LazyLock::new(|| complement(&NON_PUBLIC));
    &PUBLIC
}

fn is_tag(tag: &str, name: &str) -> bool {
    tag.eq_ignore_ascii_case(name)
}

// ---------------------------------------------------------------------------------------------
// Address sides (source or destination of a rule)
// ---------------------------------------------------------------------------------------------

/// A rule's source or destination: raw prefixes plus Azure's flat expansion list.
///
/// Azure expands service tags into `expanded*AddressPrefix`; that list is per rule, not per
/// item, so when it is non-empty we rely on it for every tag in the rule. Only when it is
/// absent do we fall back to built-in meanings for `Internet` and `VirtualNetwork`.
struct Side<'a> {
    raw: &'a [String],
    expanded: &'a [String],
}

impl Side<'_> {
    fn has_expansion(&self) -> bool {
        self.expanded.iter().any(|s| !s.trim().is_empty())
    }

    fn items(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.raw
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| classify_prefix(s))
    }

    fn expanded_nets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.expanded.iter().filter_map(|s| parse_cidr(s))
    }

    /// Does this side contain the address? Tags use the expansion when present, otherwise
    /// `Internet` = public IPv4, `VirtualNetwork` = RFC 1918, anything else = nothing.
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let expanded = self.has_expansion();
        self.items().any(|p| match p {
            Prefix::Any => true,
            Prefix::Net(c) => c.contains(&ip),
            Prefix::Tag(t) if !expanded && is_tag(&t, "Internet") => is_public(ip),
            Prefix::Tag(t) if !expanded && is_tag(&t, "VirtualNetwork") => {
                RFC1918.iter().any(|c| c.contains(&ip))
            }
            Prefix::Tag(_) | Prefix::Ipv6 | Prefix::Invalid => false,
        }) || self.expanded_nets().any(|c| c.contains(&ip))
    }

    /// Permissive match used when the VM's IP is unknown: any IPv4-meaningful item counts.
    fn could_contain_something(&self) -> bool {
        self.items()
            .any(|p| matches!(p, Prefix::Any | Prefix::Net(_) | Prefix::Tag(_)))
            || self.expanded_nets().next().is_some()
    }

    /// The address space this side definitely covers, as the fewest CIDR blocks
    /// (`Ipv4Net::aggregate`; used for Internet coverage).
    fn nets(&self) -> Vec<Ipv4Net> {
        let expanded = self.has_expansion();
        let mut v = Vec::new();
        for p in self.items() {
            match p {
                Prefix::Any => v.push(Ipv4Net::default()),
                Prefix::Net(c) => v.push(c),
                Prefix::Tag(t) if !expanded && is_tag(&t, "Internet") => {
                    v.extend_from_slice(public_nets())
                }
                Prefix::Tag(t) if !expanded && is_tag(&t, "VirtualNetwork") => v.extend(RFC1918),
                _ => {}
            }
        }
        v.extend(self.expanded_nets());
        Ipv4Net::aggregate(&v)
    }

    /// Does this side admit *an arbitrary Internet host*? True for `*`, `Any`, the `Internet`
    /// tag (by name, expanded or not), or when the union of all its CIDRs (raw, expanded, and
    /// unexpanded `VirtualNetwork`) covers every public IPv4 address (e.g. `0.0.0.0/0`, or
    /// `0.0.0.0/1` + `128.0.0.0/1`). Anything narrower (an office range) does not.
    fn covers_internet(&self) -> bool {
        if self.items().any(|p| match p {
            Prefix::Any => true,
            Prefix::Tag(t) => is_tag(&t, "Internet"),
            _ => false,
        }) {
            return true;
        }
        // Both lists are the fewest blocks of their space, so a public block lies inside the
        // side's space exactly when one of the side's blocks contains it (two CIDR blocks are
        // either nested or disjoint).
        let have = self.nets();
        public_nets()
            .iter()
            .all(|p| have.iter().any(|h| h.contains(p)))
    }

    /// Does this side contain at least one public address? Used to keep purely private
    /// allows (e.g. from `VirtualNetwork`) out of the "open only from ..." hints for the
    /// Internet probe.
    fn touches_public(&self) -> bool {
        let have = self.nets();
        public_nets()
            .iter()
            .any(|p| have.iter().any(|h| h.contains(p) || p.contains(h)))
    }

    fn notes(&self, rule: &EffectiveRule, what: &str, notes: &mut Vec<String>) {
        let expanded = self.has_expansion();
        for (raw, p) in self
            .raw
            .iter()
            .zip(self.raw.iter().map(|s| classify_prefix(s)))
        {
            if raw.trim().is_empty() {
                continue;
            }
            match p {
                Prefix::Tag(t)
                    if !expanded && !is_tag(&t, "Internet") && !is_tag(&t, "VirtualNetwork") =>
                {
                    push_note(
                        notes,
                        format!(
                            "rule {} ({}): service tag '{}' in the {} came without an \
                             expansion; treated as matching nothing",
                            rule.short_name(),
                            rule.priority,
                            t,
                            what
                        ),
                    )
                }
                Prefix::Invalid => push_note(
                    notes,
                    format!(
                        "rule {} ({}): unparseable {} prefix '{}' ignored",
                        rule.short_name(),
                        rule.priority,
                        what,
                        raw
                    ),
                ),
                _ => {}
            }
        }
    }
}

fn push_note(notes: &mut Vec<String>, n: String) {
    if !notes.contains(&n) {
        notes.push(n);
    }
}

// ---------------------------------------------------------------------------------------------
// Rule matching
// ---------------------------------------------------------------------------------------------

/// TCP traffic matches `Tcp`, `All` and `*` (case-insensitive); `Udp`, `Icmp`, `Esp`, `Ah` and
/// anything unknown do not.
fn protocol_matches_tcp(p: &str) -> bool {
    let p = p.trim();
    p.eq_ignore_ascii_case("tcp") || p.eq_ignore_ascii_case("all") || p == "*"
}

fn port_matches(rule: &EffectiveRule, port: u16) -> bool {
    rule.destination_port_ranges
        .iter()
        .filter_map(|s| parse_port_range(s))
        .any(|(lo, hi)| lo <= port && port <= hi)
}

fn source_side(rule: &EffectiveRule) -> Side<'_> {
    Side {
        raw: &rule.source_address_prefixes,
        expanded: &rule.expanded_source_address_prefixes,
    }
}

fn destination_side(rule: &EffectiveRule) -> Side<'_> {
    Side {
        raw: &rule.destination_address_prefixes,
        expanded: &rule.expanded_destination_address_prefixes,
    }
}

/// Everything but the source: inbound, TCP, port, destination.
fn matches_except_source(rule: &EffectiveRule, probe: &Probe) -> bool {
    rule.direction == Direction::Inbound
        && protocol_matches_tcp(&rule.protocol)
        && port_matches(rule, probe.port)
        && match probe.destination {
            Some(ip) => destination_side(rule).contains(ip),
            None => destination_side(rule).could_contain_something(),
        }
}

fn source_matches(rule: &EffectiveRule, source: TrafficSource) -> bool {
    match source {
        TrafficSource::Internet => source_side(rule).covers_internet(),
        TrafficSource::Address(ip) => source_side(rule).contains(ip),
    }
}

/// Whether `rule` matches the probe's flow (direction, protocol, port, source, destination).
pub fn rule_matches(rule: &EffectiveRule, probe: &Probe) -> bool {
    matches_except_source(rule, probe) && source_matches(rule, probe.source)
}

fn collect_rule_notes(rule: &EffectiveRule, probe: &Probe, notes: &mut Vec<String>) {
    if rule.direction != Direction::Inbound || !protocol_matches_tcp(&rule.protocol) {
        return;
    }
    for p in &rule.destination_port_ranges {
        if !p.trim().is_empty() && parse_port_range(p).is_none() {
            push_note(
                notes,
                format!(
                    "rule {} ({}): unparseable destination port '{}' ignored",
                    rule.short_name(),
                    rule.priority,
                    p
                ),
            );
        }
    }
    if !port_matches(rule, probe.port) {
        return;
    }
    source_side(rule).notes(rule, "source", notes);
    destination_side(rule).notes(rule, "destination", notes);
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// Decide whether the probe's inbound TCP flow passes the effective NSGs.
///
/// * **Order.** NSGs are evaluated Subnet, then NetworkInterface, then Other (stable within a
///   kind), because inbound packets hit the subnet NSG first. Each NSG must allow.
/// * **Within an NSG** rules are sorted by priority (stable, so input order breaks ties) and
///   the first matching inbound rule decides. No match is an implicit deny, reported as a
///   synthetic [`RuleRef`] with `implicit: true` and priority `i32::MAX`.
/// * **Deciding rule.** The first denying NSG's rule; if all allow, the last NSG's allow
///   (normally the NIC's), since that is the last gate the packet passed. `None` only for an
///   empty list: no NSG applies and the traffic is not filtered.
/// * **Source, `TrafficSource::Internet`.** A rule matches only if its source admits an
///   arbitrary Internet host: `*`, `Any`, the `Internet` tag, or a set of CIDRs (raw and
///   expanded) whose union covers all public IPv4 space (`0.0.0.0/0` in practice). Public
///   means everything except 0/8, RFC 1918, 100.64/10, 127/8, 169.254/16 and 224/3. This errs
///   on the side of "not reachable by everyone" for partial coverage, which is what the
///   question "is RDP open to the Internet?" needs.
/// * **Source, `TrafficSource::Address`.** CIDR containment; tags use Azure's expansion when
///   present, else `Internet` = public IPv4, `VirtualNetwork` = RFC 1918, other tags match
///   nothing (with a note). IPv6 prefixes never match.
/// * **Destination.** With the VM's IP known, the same containment rules apply. With it
///   unknown, any `*`, IPv4 CIDR/address or tag is assumed to include the VM (permissive both
///   for allows and denies; a note says so).
/// * **Narrower allows.** When denied, for every denying NSG, the non-default Allow rules that
///   are evaluated before its deciding rule and match everything except the source. For the
///   Internet probe only rules whose source includes some public address are listed (an allow
///   from `VirtualNetwork` does not help someone on the Internet). These let a report say "RDP
///   is open only from 203.0.113.0/24 (rule office-rdp); re-check with --from YOUR_IP".
pub fn evaluate(nsgs: &[EffectiveNsg], probe: &Probe) -> NsgVerdict {
    let mut notes = Vec::new();
    if nsgs.is_empty() {
        push_note(
            &mut notes,
            "no network security group applies to this NIC; traffic is not filtered by NSGs"
                .to_string(),
        );
        return NsgVerdict {
            allowed: true,
            deciding: None,
            per_nsg: Vec::new(),
            narrower_allows: Vec::new(),
            notes,
        };
    }
    if probe.destination.is_none() {
        push_note(
            &mut notes,
            "VM private IP unknown: rules with any IPv4 destination were assumed to apply"
                .to_string(),
        );
    }

    let mut order: Vec<&EffectiveNsg> = nsgs.iter().collect();
    order.sort_by_key(|n| n.association.rank());

    let mut per_nsg = Vec::with_capacity(order.len());
    let mut narrower_allows = Vec::new();
    for nsg in order {
        let mut rules: Vec<&EffectiveRule> = nsg.rules.iter().collect();
        rules.sort_by_key(|r| r.priority);
        for r in &rules {
            collect_rule_notes(r, probe, &mut notes);
        }
        let hit = rules.iter().position(|r| rule_matches(r, probe));
        let rule_ref = match hit {
            Some(i) => RuleRef::from_rule(nsg, rules[i]),
            None => RuleRef::implicit_deny(nsg),
        };
        if rule_ref.access == Access::Deny {
            let before = &rules[..hit.unwrap_or(rules.len())];
            narrower_allows.extend(
                before
                    .iter()
                    .filter(|r| {
                        r.access == Access::Allow
                            && !r.is_default()
                            && matches_except_source(r, probe)
                            && match probe.source {
                                TrafficSource::Internet => source_side(r).touches_public(),
                                TrafficSource::Address(_) => true,
                            }
                    })
                    .map(|r| RuleRef::from_rule(nsg, r)),
            );
        }
        per_nsg.push(NsgDecision {
            nsg: nsg.name().to_string(),
            nsg_id: nsg.nsg_id.clone(),
            association: nsg.association.clone(),
            access: rule_ref.access,
            rule: rule_ref,
        });
    }

    let first_deny = per_nsg.iter().find(|d| d.access == Access::Deny);
    let allowed = first_deny.is_none();
    let deciding = first_deny.or(per_nsg.last()).map(|d| d.rule.clone());
    NsgVerdict {
        allowed,
        deciding,
        per_nsg,
        narrower_allows,
        notes,
    }
}

#[cfg(test)]
mod tests;
