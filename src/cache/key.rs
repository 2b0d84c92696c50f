//! Cache keys. The primary key is the effective request URI, normalised
//! only in ways RFC 3986 §6.2.2 makes equivalent (case of scheme and host,
//! default port, percent-encoding of unreserved characters, hex case), so
//! two URLs the origin could tell apart never share an entry. Query
//! parameters the config names are dropped from it. GET and HEAD share a
//! key: a HEAD is answered from a stored GET.
//!
//! Secondary keys — the request fields the response `Vary`s on and the
//! extra parts the config adds (a header, a cookie) — select among the
//! variants stored under one primary key (see `store.rs`).

use http::HeaderMap;

use crate::pipeline::canonical::hex;

/// What a route adds to and takes from the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyParts {
    /// Request headers whose values become part of the key (lower-case).
    pub headers: Vec<String>,
    /// Cookies whose values become part of the key.
    pub cookies: Vec<String>,
    /// Query parameters left out of the key (e.g. `utm_source`).
    pub ignore_query_params: Vec<String>,
}

/// The primary key: `scheme://host[:port]/path?query`.
pub fn primary(scheme: &str, host: &str, path_and_query: &str, parts: &KeyParts) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut key = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 4);
    key.push_str(scheme);
    key.push_str("://");
    push_host(&mut key, scheme, host);
    push_normalised(&mut key, if path.is_empty() { "/" } else { path });
    if let Some(query) = query {
        let mut first = true;
        let mut kept_any = false;
        for pair in query.split('&') {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if parts
                .ignore_query_params
                .iter()
                .any(|ignored| ignored == name)
            {
                continue;
            }
            key.push(if first { '?' } else { '&' });
            first = false;
            kept_any = true;
            push_normalised(&mut key, pair);
        }
        // `/a?` is not `/a` (RFC 3986 keeps the empty query); a query
        // made only of ignored parameters is dropped entirely.
        if !kept_any && query.is_empty() {
            key.push('?');
        }
    }
    key
}

/// The host as it goes into a key: lower-cased, default port dropped.
fn push_host(key: &mut String, scheme: &str, host: &str) {
    let host = host.trim_end_matches('.');
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    for c in host.chars() {
        key.push(c.to_ascii_lowercase());
    }
}

/// Appends `text` with percent-encoded unreserved characters decoded and
/// the hex digits of the rest upper-cased (RFC 3986 §6.2.2.1–2). Anything
/// else, raw non-ASCII included, is copied as it is.
fn push_normalised(key: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            // `%` and two hex digits are ASCII: both ends are char
            // boundaries.
            key.push_str(&text[copied..i]);
            let decoded = h * 16 + l;
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                key.push(char::from(decoded));
            } else {
                key.push('%');
                key.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                key.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            }
            i += 3;
            copied = i;
            continue;
        }
        if bytes[i] == b'%' {
            // A `%` that starts no escape is a literal `%`, which is `%25`:
            // written so, decoding next to it cannot make a new escape
            // (`%%66` must not become `%f`, a different key next time).
            key.push_str(&text[copied..i]);
            key.push_str("%25");
            copied = i + 1;
        }
        i += 1;
    }
    key.push_str(&text[copied..]);
}

/// The values of the configured extra key parts in a request, in the
/// order `parts` lists them (headers, then cookies).
pub fn extra_values(request: &HeaderMap, parts: &KeyParts) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(parts.headers.len() + parts.cookies.len());
    for name in &parts.headers {
        out.push(field_value(request, name));
    }
    for name in &parts.cookies {
        out.push(cookie(request, name));
    }
    out
}

/// One request field as a secondary key compares it: every line joined
/// with ", ", whitespace around commas dropped (RFC 9111 §4.1 allows
/// normalising away such differences). `Accept-Encoding` is reduced
/// further, to the codings the client accepts, sorted: any response
/// chosen for one such client is acceptable to every other, and browsers
/// spell the same set in many ways.
pub fn field_value(request: &HeaderMap, name: &str) -> Option<String> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    if name == "accept-encoding" {
        return Some(accepted_codings(lines));
    }
    let mut out = String::new();
    for line in lines {
        let text = String::from_utf8_lossy(line.as_bytes());
        for item in text.split(',') {
            let item = item.trim();
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(item);
        }
    }
    Some(out)
}

/// The codings an Accept-Encoding accepts (q above 0), lower-cased,
/// sorted and deduplicated; a value we cannot read is kept whole, so it
/// matches only itself.
fn accepted_codings<'a>(lines: impl Iterator<Item = &'a http::HeaderValue>) -> String {
    let mut codings: Vec<String> = Vec::new();
    for line in lines {
        let Ok(text) = line.to_str() else {
            return String::from_utf8_lossy(line.as_bytes()).into_owned();
        };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            // Read as negotiation reads it: `q=0` or a malformed q-value
            // means not accepted.
            let q = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| crate::compress::negotiate::qvalue(v.trim()))
                })
                .unwrap_or(Some(1000));
            if q.is_some_and(|q| q > 0) && !codings.contains(&coding) {
                codings.push(coding);
            }
        }
    }
    codings.sort();
    codings.join(",")
}

fn cookie(request: &HeaderMap, name: &str) -> Option<String> {
    request
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the cache_key fuzz target: decoding `%66` next to a stray
    /// `%` made a new escape, so a key was not the key of its own text.
    #[test]
    fn a_stray_percent_is_a_literal_one() {
        let parts = KeyParts::default();
        let key = primary("http", "site.test", "/a?q=%%66x%", &parts);
        assert_eq!(key, "http://site.test/a?q=%25fx%25");
        let rest = key.strip_prefix("http://site.test").unwrap_or_default();
        assert_eq!(primary("http", "site.test", rest, &parts), key);
    }

    /// Found by the cache_key fuzz target: raw non-ASCII bytes went into
    /// the key one Latin-1 char per byte, so a key was not the key of its
    /// own path (harmless for lookups, wrong for purges typed as text).
    #[test]
    fn raw_non_ascii_is_kept_as_it_is() {
        let parts = KeyParts::default();
        let key = primary("http", "site.test", "/caf\u{e9}/%7e%2f", &parts);
        assert_eq!(key, "http://site.test/caf\u{e9}/~%2F");
        let rest = key.strip_prefix("http://site.test").unwrap_or_default();
        assert_eq!(primary("http", "site.test", rest, &parts), key);
    }

    fn key(path: &str) -> String {
        primary("http", "Example.COM:80", path, &KeyParts::default())
    }

    #[test]
    fn equivalent_urls_share_a_key() {
        assert_eq!(key("/a%7Eb?x=%2f"), key("/a~b?x=%2F"));
        assert_eq!(
            key("/a"),
            primary("http", "example.com", "/a", &KeyParts::default())
        );
    }

    #[test]
    fn urls_an_origin_could_tell_apart_do_not() {
        assert_ne!(key("/a/b"), key("/a%2Fb"));
        assert_ne!(key("/a"), key("/a?"));
        assert_ne!(key("/a?x=1&y=2"), key("/a?y=2&x=1"));
        assert_ne!(
            primary("http", "a.example", "/", &KeyParts::default()),
            primary("https", "a.example", "/", &KeyParts::default())
        );
    }

    #[test]
    fn ignored_query_parameters_leave_the_key() {
        let parts = KeyParts {
            ignore_query_params: vec!["utm_source".into()],
            ..KeyParts::default()
        };
        assert_eq!(
            primary("http", "h", "/p?utm_source=x&id=1", &parts),
            primary("http", "h", "/p?id=1", &parts)
        );
        assert_eq!(
            primary("http", "h", "/p?utm_source=x", &parts),
            primary("http", "h", "/p", &parts)
        );
    }

    #[test]
    fn accept_encoding_keys_by_the_set_of_codings_accepted() {
        let value = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", v.parse().unwrap());
            field_value(&h, "accept-encoding")
        };
        assert_eq!(value("gzip, deflate, br"), value("br,gzip;q=0.5, Deflate"));
        assert_ne!(value("gzip"), value("gzip, br"));
        assert_eq!(value("gzip, br;q=0"), value("gzip"));
        assert_eq!(field_value(&HeaderMap::new(), "accept-encoding"), None);
    }

    #[test]
    fn extra_parts_read_headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", "blue".parse().unwrap());
        h.insert("cookie", "a=1; lang=fr".parse().unwrap());
        let parts = KeyParts {
            headers: vec!["x-tenant".into()],
            cookies: vec!["lang".into(), "missing".into()],
            ..KeyParts::default()
        };
        assert_eq!(
            extra_values(&h, &parts),
            vec![Some("blue".into()), Some("fr".into()), None]
        );
    }
}
