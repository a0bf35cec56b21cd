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
