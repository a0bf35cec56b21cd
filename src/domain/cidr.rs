//! IPv4 block arithmetic the NSG evaluator and the simulator's service tags share.

use ipnet::{Ipv4Net, Ipv4Subnets};
use std::net::Ipv4Addr;

/// The IPv4 space outside `blocked`, as the fewest CIDR blocks in address order: the blocks
/// `ipnet` splits each gap between the (aggregated) blocked ones into.
pub fn complement(blocked: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    let mut next = Some(Ipv4Addr::UNSPECIFIED);
    for blocked in Ipv4Net::aggregate(&blocked.to_vec()) {
        if let Some(start) = next.filter(|&start| start < blocked.network()) {
            let end = Ipv4Addr::from(u32::from(blocked.network()) - 1);
            out.extend(Ipv4Subnets::new(start, end, 0));
        }
        next = u32::from(blocked.broadcast())
            .checked_add(1)
            .map(Ipv4Addr::from);
    }
    if let Some(start) = next {
        out.extend(Ipv4Subnets::new(start, Ipv4Addr::BROADCAST, 0));
    }
    out
}

/// The blocks that are not the public Internet (RFC 1918, shared address space, "this
/// network", loopback, link-local, multicast and reserved).
const NOT_PUBLIC: [(u8, u8, u8); 8] = [
    (0, 0, 8),
    (10, 0, 8),
    (100, 64, 10),
    (127, 0, 8),
    (169, 254, 16),
    (172, 16, 12),
    (192, 168, 16),
    (224, 0, 3),
];

/// Does `net` hold at least one public Internet address (is it not inside a non-public block)?
pub fn has_public_address(net: &Ipv4Net) -> bool {
    !NOT_PUBLIC.iter().any(|&(a, b, len)| {
        Ipv4Net::new(Ipv4Addr::new(a, b, 0, 0), len).is_ok_and(|block| block.contains(net))
    })
}
