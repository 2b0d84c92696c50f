//! Header hygiene between client and backend, both directions: hop-by-hop
//! headers (RFC 9110 §7.6.1) and every header the `Connection` header names
//! are removed; forwarding headers are set from what we know, never from what
//! an untrusted client claims; backend-identifying response headers go.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::framing::OriginFields;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const URL_OVERRIDES: [&str; 6] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-host",
];

/// Fields that ask a framework to treat a request as another method. A
/// cached GET must stay a GET at the origin, or one client could store a
/// DELETE's answer (or an error) for everyone.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Hop-by-hop headers that never cross a proxy (RFC 9110 §7.6.1, plus the
/// non-standard ones still sent in the wild).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// `is_hop_by_hop` for a name as it came off the wire, in any case.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
    ];
    NAMES
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers and the headers listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `Connection` is itself hop-by-hop: without any, nothing is named.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual tokens are options, not header names to drop.
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    remove_where(headers, |name| is_hop_by_hop(name) || named.contains(name));
}

/// Drops request fields whose names contain `_`. CGI-style backends (PHP,
/// many frameworks) read `X_Forwarded_For` and `X-Forwarded-For` as the
/// same variable, `HTTP_X_FORWARDED_FOR`, so such a field would slip past
/// the hygiene above; nginx drops them by default for the same reason.
pub fn drop_underscored(headers: &mut HeaderMap) {
    remove_where(headers, |name| name.as_str().contains('_'));
}

/// Removes every field whose name `doomed` picks. The names are walked
/// first: most requests carry none of them, and each removal by name
/// costs a parse and a hash (six of them were 8% of a forwarded request's
/// instructions).
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&doomed) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// What the proxy knows about the client side of a request.
pub struct ClientSide<'a> {
    pub peer_ip: IpAddr,
    /// `peer_ip` as a header value, made once per connection.
    pub peer_ip_value: &'a HeaderValue,
    /// The peer is one of `trusted_proxies`: its forwarding headers stand.
    pub peer_trusted: bool,
    pub scheme: &'static str,
    pub host: Option<&'a HeaderValue>,
    pub version: http::Version,
}

/// Makes the request headers the backend will see.
pub fn prepare_request(headers: &mut HeaderMap, side: &ClientSide<'_>, request_id: &HeaderValue) {
    strip_hop_by_hop(headers);
    drop_underscored(headers);
    // The body is buffered before it is sent: the backend must not wait for a
    // 100-continue we already answered.
    headers.remove(header::EXPECT);

    if side.peer_trusted && headers.contains_key(&X_FORWARDED_FOR) {
        let mut chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        chain.push_str(", ");
        chain.push_str(&side.peer_ip.to_string());
        set(headers, &X_FORWARDED_FOR, &chain);
    } else {
        headers.insert(&X_FORWARDED_FOR, side.peer_ip_value.clone());
    }
    if !(side.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(side.scheme));
    }
    if !(side.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match side.host {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if !side.peer_trusted {
        // `Forwarded`, and fields some frameworks read as the "real" URL
        // or host: from an untrusted client they would let one request be
        // answered (and cached) as another.
        remove_where(headers, |name| {
            *name == FORWARDED || URL_OVERRIDES.contains(&name.as_str())
        });
    }
    let hop = match side.version {
        http::Version::HTTP_2 => "2 palisade",
        http::Version::HTTP_10 => "1.0 palisade",
        _ => "1.1 palisade",
    };
    match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(existing) => {
            let via = format!("{existing}, {hop}");
            set(headers, &header::VIA, &via);
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(hop));
        }
    }
    headers.insert(&X_REQUEST_ID, request_id.clone());
}

/// Cleans the backend's response fields before they reach the client: the
/// `hide` list goes, and so does the origin's X-Request-Id (ours replaces
/// it). Hop-by-hop fields never got this far: `h1::parse_head` drops them.
pub fn clean_response(fields: &mut OriginFields, hide: &[HeaderName]) {
    let ours = X_REQUEST_ID.as_str().as_bytes();
    fields.retain(|name| {
        !name.eq_ignore_ascii_case(ours)
            && !hide
                .iter()
                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
    });
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    } else {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let side = ClientSide {
            peer_ip: "192.0.2.7".parse().unwrap(),
            peer_ip_value: &HeaderValue::from_static("192.0.2.7"),
            peer_trusted: false,
            scheme: "http",
            host: Some(&HeaderValue::from_static("site.test")),
            version: http::Version::HTTP_11,
        };
        prepare_request(&mut h, &side, &HeaderValue::from_static("id1"));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "site.test");
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["via"], "1.1 palisade");
        assert_eq!(h["x-request-id"], "id1");
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        let side = ClientSide {
            peer_ip: "127.0.0.1".parse().unwrap(),
            peer_ip_value: &HeaderValue::from_static("127.0.0.1"),
            peer_trusted: true,
            scheme: "http",
            host: Some(&HeaderValue::from_static("site.test")),
            version: http::Version::HTTP_2,
        };
        prepare_request(&mut h, &side, &HeaderValue::from_static("id1"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 127.0.0.1");
        assert_eq!(h["via"], "2 palisade");
    }
}
