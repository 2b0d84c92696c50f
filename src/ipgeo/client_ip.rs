//! The real client IP behind trusted proxies.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a trusted proxy,
//! and then only as far back as the chain stays trusted: walking from the
//! right, the first address that is not a trusted proxy is the client. An
//! untrusted peer's header is ignored entirely (and overwritten upstream).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::upstream::headers::X_FORWARDED_FOR;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request that arrived from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        self.client_behind(peer, headers)
    }

    /// The client address for a request from `peer`, already known to be a
    /// trusted proxy: the right-most untrusted X-Forwarded-For entry.
    pub fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        let mut client = peer;
        // Header lines are in arrival order; within a line the right-most
        // entry was added last.
        let lines: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
            let Some(ip) = parse_entry(entry) else {
                // Garbage in the chain: stop at the last hop we could trust.
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// One X-Forwarded-For entry: an IPv4 or IPv6 address, possibly with a port
/// (`1.2.3.4:5678`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ])
    }

    fn xff(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(v));
        h
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let ip = trusted().client_ip("192.0.2.1".parse().unwrap(), &xff("6.6.6.6"));
        assert_eq!(ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn right_most_untrusted_entry_is_the_client() {
        let ip = trusted().client_ip(
            "127.0.0.1".parse().unwrap(),
            &xff("6.6.6.6, 198.51.100.9, 10.1.2.3"),
        );
        assert_eq!(ip, "198.51.100.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_stops_the_walk() {
        let ip = trusted().client_ip(
            "127.0.0.1".parse().unwrap(),
            &xff("6.6.6.6, nonsense, 10.1.2.3"),
        );
        assert_eq!(ip, "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv6_peer_counts_as_ipv4() {
        let ip = trusted().client_ip("::ffff:127.0.0.1".parse().unwrap(), &xff("203.0.113.5"));
        assert_eq!(ip, "203.0.113.5".parse::<IpAddr>().unwrap());
    }
}
