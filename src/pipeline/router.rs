//! Route selection: Host (exact, `*.suffix`, `*`) and path prefix.
//!
//! The most specific route wins, decided first by host (an exact name beats
//! a wildcard, a longer wildcard suffix beats a shorter one, `*` comes last)
//! and then by the longest path prefix, the way nginx picks a server block
//! and then a prefix location. Config order breaks remaining ties.

use crate::config::{HostMatch, RouteConfig};

pub struct Router {
    /// Most specific first.
    entries: Vec<Entry>,
}

struct Entry {
    host: HostMatch,
    prefix: String,
    route: usize,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Router {
        let mut entries: Vec<Entry> = routes
            .iter()
            .enumerate()
            .map(|(route, r)| Entry {
                host: r.host.clone(),
                prefix: r.path_prefix.clone(),
                route,
            })
            .collect();
        entries.sort_by_key(|e| {
            let host_rank = match &e.host {
                HostMatch::Exact(_) => (2, 0),
                HostMatch::Suffix(s) => (1, s.len()),
                HostMatch::Any => (0, 0),
            };
            std::cmp::Reverse((host_rank, e.prefix.len()))
        });
        Router { entries }
    }

    /// The index of the route for a normalised host (lowercase, no port) and
    /// request path.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| host_matches(&e.host, host) && path.starts_with(&e.prefix))
            .map(|e| e.route)
    }
}

fn host_matches(pattern: &HostMatch, host: &str) -> bool {
    match pattern {
        HostMatch::Any => true,
        HostMatch::Exact(name) => name == host,
        HostMatch::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
    }
}

/// Lowercases a Host value and strips the port and a trailing dot.
/// Whether a Host value is an RFC 3986 `host [ ":" port ]` (or empty,
/// which RFC 9112 §3.2 allows when the target has no authority).
pub fn valid_host(raw: &[u8]) -> bool {
    let (host, port) = if raw.first() == Some(&b'[') {
        let Some(end) = raw.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &raw[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &raw[end + 1..] {
            [] => (&raw[..0], None),
            [b':', port @ ..] => (&raw[..0], Some(port)),
            _ => return false,
        }
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(at) => (&raw[..at], Some(&raw[at + 1..])),
            None => (raw, None),
        }
    };
    let host_ok = host
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%'));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    host_ok && port_ok
}

pub fn normalise_host(raw: &str) -> String {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows `]`.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: HostMatch, prefix: &str) -> RouteConfig {
        RouteConfig {
            host,
            path_prefix: prefix.into(),
            upstream: 0,
            ipfilter: None,
            cache: None,
            compression: None,
            websocket: false,
        }
    }

    #[test]
    fn host_values_are_host_and_optional_port() {
        for ok in ["a", "example.com:8080", "[::1]:80", "[::1]", "", "a-b.c_d"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "a b", "a:8x", "a@b", "a:123456", "[::1", "[zz]", "a/b", "a:1:2x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_then_longest_prefix() {
        let router = Router::new(&[
            route(HostMatch::Any, "/"),
            route(HostMatch::Suffix(".example.com".into()), "/"),
            route(HostMatch::Exact("api.example.com".into()), "/"),
            route(HostMatch::Exact("api.example.com".into()), "/v2/"),
            route(HostMatch::Suffix(".a.example.com".into()), "/"),
        ]);
        assert_eq!(router.find("api.example.com", "/v2/x"), Some(3));
        assert_eq!(router.find("api.example.com", "/v1/x"), Some(2));
        assert_eq!(router.find("www.example.com", "/"), Some(1));
        assert_eq!(router.find("b.a.example.com", "/"), Some(4));
        assert_eq!(router.find("example.com", "/"), Some(0));
        assert_eq!(router.find("other.org", "/"), Some(0));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let router = Router::new(&[route(HostMatch::Exact("a.test".into()), "/app")]);
        assert_eq!(router.find("a.test", "/other"), None);
        assert_eq!(router.find("b.test", "/app"), None);
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:8080"), "example.com");
        assert_eq!(normalise_host("example.com."), "example.com");
        assert_eq!(normalise_host("[::1]:80"), "[::1]");
    }
}
