//! The client's IP address for `allowed_ips` (SPEC §3).
//!
//! The TCP peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is walked right
//! to left (each proxy appends the address it saw) and the first address that is not a
//! trusted proxy is the client. Taking the leftmost entry instead would let any client claim
//! any address. Other client-IP headers (`X-Real-IP`, `CF-Connecting-IP`) are ignored.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// `None` when a trusted proxy forwarded an address that cannot be parsed: the client is then
/// unknown, which only a key without IP restrictions accepts.
pub fn resolve(
    peer: SocketAddr,
    headers: &http::HeaderMap,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer.ip().to_canonical();
    if !is_trusted(peer, trusted_proxies) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop)?.to_canonical();
        client = ip;
        if !is_trusted(ip, trusted_proxies) {
            break;
        }
    }
    Some(client)
}

pub fn is_trusted(ip: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// An address, possibly with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, xff: &[&str], trusted: &[&str], expected: Option<&str>) {
        let mut headers = http::HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().expect("header"));
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("net")).collect();
        let got = resolve(peer.parse().expect("peer"), &headers, &trusted);
        assert_eq!(
            got,
            expected.map(|e| e.parse().expect("ip")),
            "peer {peer} xff {xff:?}"
        );
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        check("203.0.113.9:5000", &["10.0.0.1"], &[], Some("203.0.113.9"));
        check(
            "203.0.113.9:5000",
            &["10.0.0.1"],
            &["10.0.0.0/8"],
            Some("203.0.113.9"),
        );
    }

    #[test]
    fn trusted_peers_forward_right_to_left() {
        let trusted = &["10.0.0.0/8"];
        check(
            "10.0.0.2:1",
            &["198.51.100.4"],
            trusted,
            Some("198.51.100.4"),
        );
        // A client that sends its own X-Forwarded-For cannot pick its address.
        check(
            "10.0.0.2:1",
            &["1.1.1.1, 198.51.100.4"],
            trusted,
            Some("198.51.100.4"),
        );
        check(
            "10.0.0.2:1",
            &["1.1.1.1", "198.51.100.4, 10.0.0.3"],
            trusted,
            Some("198.51.100.4"),
        );
        check(
            "10.0.0.2:1",
            &["[2001:db8::7]:443"],
            trusted,
            Some("2001:db8::7"),
        );
        check("10.0.0.2:1", &[], trusted, Some("10.0.0.2"));
        check("10.0.0.2:1", &["10.0.0.9"], trusted, Some("10.0.0.9"));
        check("10.0.0.2:1", &["garbage"], trusted, None);
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        check("[::ffff:127.0.0.1]:80", &[], &[], Some("127.0.0.1"));
        check(
            "[::ffff:10.0.0.2]:80",
            &["::ffff:198.51.100.4"],
            &["10.0.0.0/8"],
            Some("198.51.100.4"),
        );
    }
}
