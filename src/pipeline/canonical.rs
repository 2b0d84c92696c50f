//! The one canonical form of a request path, used by routing, route
//! policies, the cache key and what the backend is sent: percent-encoded
//! unreserved characters decoded (RFC 3986 §6.2.2.2), hex digits
//! upper-cased, dot segments removed (§5.2.4) — so `/a/%2e%2e/admin`,
//! `/./admin` and `/%61dmin` are all `/admin` everywhere, and a route rule
//! for `/admin` cannot be walked around.
//!
//! Refused: malformed percent-encoding, an encoded NUL, backslashes (some
//! servers read them as `/`), and overlong UTF-8 forms (`%C0%AE` is a dot
//! to a lenient decoder). Reserved characters stay encoded: `%2F` is not a
//! path separator.

use std::borrow::Cow;

/// The canonical form of `path` (no query), or why it is refused.
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') {
        // `*` (OPTIONS) and the like: nothing to normalise.
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Err("backslash in path");
    }
    let needs_work = bytes.contains(&b'%') || has_dot_segment(path);
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// The path as routing compares it: path parameters (`;jsessionid=…`)
/// dropped from every segment and runs of `/` merged, as servlet
/// containers and most servers read a path (`/;x/admin` and `//admin`
/// are `/admin` to them, so they must be to route rules too).
pub fn routing_path(canonical: &str) -> Cow<'_, str> {
    if !canonical.contains(';') && !canonical.contains("//") {
        return Cow::Borrowed(canonical);
    }
    let mut out = String::with_capacity(canonical.len());
    for segment in canonical.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        if !segment.is_empty() {
            out.push('/');
            out.push_str(segment);
        }
    }
    if out.is_empty() || canonical.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, &'static str> {
    // Bytes, not chars: raw non-ASCII bytes (which some clients send
    // unencoded) must come out as they went in, not re-encoded one by one.
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut previous_encoded: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            previous_encoded = None;
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err("bad percent-encoding in path");
        };
        let decoded = h * 16 + l;
        if decoded == 0 {
            return Err("encoded NUL in path");
        }
        if overlong(previous_encoded, decoded) {
            return Err("overlong UTF-8 in path");
        }
        if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
            out.push(decoded);
        } else {
            out.push(b'%');
            out.push(bytes[i + 1].to_ascii_uppercase());
            out.push(bytes[i + 2].to_ascii_uppercase());
        }
        previous_encoded = Some(decoded);
        i += 3;
    }
    // Only ASCII was decoded into the UTF-8 the path was, so this holds.
    String::from_utf8(out).map_err(|_| "bad UTF-8 in path")
}

/// Overlong UTF-8: a `C0`/`C1` lead byte, or `E0`/`F0` followed by a
/// continuation that makes the form longer than needed.
fn overlong(previous: Option<u8>, byte: u8) -> bool {
    matches!(byte, 0xC0 | 0xC1)
        || matches!(
            (previous, byte),
            (Some(0xE0), 0x80..=0x9F) | (Some(0xF0), 0x80..=0x8F)
        )
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    let last = parts.len() - 1;
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the request_head fuzz target: raw non-ASCII bytes in a path
    /// that also needed decoding were re-encoded byte by byte as Latin-1,
    /// so the backend got another path (and normalising was not
    /// idempotent).
    #[test]
    fn raw_non_ascii_bytes_survive_decoding_unchanged() {
        let path = "/\u{70d}\u{69d}2%3b2P%41";
        let once = canonical_path(path).unwrap();
        assert_eq!(once, "/\u{70d}\u{69d}2%3B2PA");
        assert_eq!(canonical_path(&once).unwrap(), once);
    }

    fn canon(p: &str) -> String {
        canonical_path(p).unwrap().into_owned()
    }

    #[test]
    fn path_tricks_all_reach_the_same_path() {
        for trick in [
            "/admin",
            "/%61dmin",
            "/./admin",
            "/x/../admin",
            "/x/%2e%2e/admin",
            "/x/%2E%2E/admin",
            "/a/b/../../admin",
            "/../admin",
        ] {
            assert_eq!(canon(trick), "/admin", "{trick}");
        }
        assert_eq!(canon("/a/."), "/a/");
        assert_eq!(canon("/a/.."), "/");
        assert_eq!(canon("/a/%2f/b"), "/a/%2F/b", "reserved stays encoded");
        assert_eq!(
            canon("/a/%252e%252e/b"),
            "/a/%252e%252e/b",
            "decoded once only"
        );
        assert_eq!(canon("/"), "/");
        assert_eq!(canon("*"), "*");
    }

    #[test]
    fn hostile_encodings_are_refused() {
        for bad in [
            "/a%zz",
            "/a%2",
            "/a%00b",
            "/a\\..\\b",
            "/%c0%ae%c0%ae/x",
            "/%C1%9C",
            "/%e0%80%ae",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad}");
        }
        assert!(canonical_path("/caf%C3%A9").is_ok(), "valid UTF-8 stays");
        assert!(
            canonical_path("/caf%E9").is_ok(),
            "Latin-1 from legacy apps stays"
        );
    }

    #[test]
    fn canonical_form_is_idempotent() {
        for p in [
            "/x/%2e%2e/a%7eb/./c/",
            "/a/%2f/../b",
            "/%41%42/..",
            "/a;x=1/b",
        ] {
            let once = canon(p);
            assert_eq!(canon(&once), once, "{p}");
        }
    }

    #[test]
    fn routing_ignores_path_parameters() {
        assert_eq!(routing_path("/;x/admin"), "/admin");
        assert_eq!(routing_path("//admin//x/"), "/admin/x/");
        assert_eq!(routing_path("/admin;jsessionid=1/page"), "/admin/page");
        assert_eq!(routing_path("/plain"), "/plain");
    }
}
