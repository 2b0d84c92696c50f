//! Cache-Control as this cache reads it (RFC 9111 §5.2): the directives of
//! a request or a response, and which field speaks for a response
//! (targeted fields first, RFC 9213).
//!
//! Parsing is lenient where RFC 9111 allows it and strict where a wrong
//! guess would serve something the origin did not allow: a malformed
//! freshness value makes the response stale, never fresher.

use http::HeaderMap;

/// The largest delta-seconds RFC 9111 §1.2.2 lets us keep: bigger values
/// are read as this.
pub const DELTA_MAX: u64 = 2_147_483_648;

/// A delta-seconds directive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    Seconds(u64),
    /// Present but not a number: the directive cannot extend freshness.
    Invalid,
}

impl Delta {
    pub fn seconds(self) -> Option<u64> {
        match self {
            Delta::Seconds(s) => Some(s),
            Delta::Invalid => None,
        }
    }
}

/// The directives of one Cache-Control (or targeted) field. The first
/// occurrence of a repeated directive wins (RFC 9111 §4.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<Delta>,
    pub s_maxage: Option<Delta>,
    pub no_store: bool,
    /// `no-cache`, bare or with field names (both make us revalidate).
    pub no_cache: bool,
    /// `private`, bare: a shared cache must not store the response.
    pub private: bool,
    /// `private="a, b"`: the named fields are not stored.
    pub private_fields: Vec<String>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request only: `max-stale` with no value accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl Directives {
    /// Reads every field line of `name` in `headers` as one list.
    pub fn from_headers(headers: &HeaderMap, name: &str) -> Option<Directives> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut d = Directives::default();
        for line in lines {
            // A field value that is not visible ASCII is read as bytes;
            // directives are tokens, so nothing valid is lost.
            d.parse_into(&String::from_utf8_lossy(line.as_bytes()));
        }
        Some(d)
    }

    pub fn parse(text: &str) -> Directives {
        let mut d = Directives::default();
        d.parse_into(text);
        d
    }

    fn parse_into(&mut self, text: &str) {
        for (name, value) in split_directives(text) {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "max-age" => set_once(&mut self.max_age, delta(value)),
                "s-maxage" => set_once(&mut self.s_maxage, delta(value)),
                "no-store" => self.no_store = true,
                "no-cache" => self.no_cache = true,
                "private" => match value {
                    Some(fields) if !fields.trim().is_empty() => self
                        .private_fields
                        .extend(fields.split(',').map(|f| f.trim().to_ascii_lowercase())),
                    _ => self.private = true,
                },
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "must-understand" => self.must_understand = true,
                "no-transform" => self.no_transform = true,
                "immutable" => self.immutable = true,
                "stale-while-revalidate" => {
                    if let Some(Delta::Seconds(s)) = delta(value) {
                        set_once(&mut self.stale_while_revalidate, Some(s));
                    }
                }
                "stale-if-error" => {
                    if let Some(Delta::Seconds(s)) = delta(value) {
                        set_once(&mut self.stale_if_error, Some(s));
                    }
                }
                "max-stale" => match value {
                    None => set_once(&mut self.max_stale, Some(None)),
                    Some(_) => {
                        if let Some(Delta::Seconds(s)) = delta(value) {
                            set_once(&mut self.max_stale, Some(Some(s)));
                        }
                    }
                },
                "min-fresh" => {
                    if let Some(Delta::Seconds(s)) = delta(value) {
                        set_once(&mut self.min_fresh, Some(s));
                    }
                }
                "only-if-cached" => self.only_if_cached = true,
                _ => {}
            }
        }
    }
}

/// The directives that govern a response in this cache: the first of
/// `Palisade-Cache-Control`, `CDN-Cache-Control` (RFC 9213) that is present
/// and valid, else `Cache-Control`. `targeted` tells whether a targeted
/// field won, in which case Cache-Control and Expires are ignored.
pub fn response_directives(headers: &HeaderMap) -> (Directives, bool) {
    for name in TARGETED {
        if let Some(d) = Directives::from_headers(headers, name) {
            return (d, true);
        }
    }
    (
        Directives::from_headers(headers, "cache-control").unwrap_or_default(),
        false,
    )
}

/// The targeted fields this cache obeys, most specific first.
pub const TARGETED: [&str; 2] = ["palisade-cache-control", "cdn-cache-control"];

/// Removes our own targeted field, which is for us alone (RFC 9213 lets
/// its target remove it), from fields about to reach a client. The names
/// are walked first: almost no response carries it, and a removal by name
/// parses and hashes the name on every answer.
pub fn remove_own_field(headers: &mut HeaderMap) {
    if headers.keys().any(|name| name.as_str() == TARGETED[0]) {
        headers.remove(TARGETED[0]);
    }
}

/// The directives of a request: Cache-Control, or `Pragma: no-cache` when
/// there is no Cache-Control (RFC 9111 §5.4 keeps that for HTTP/1.0).
pub fn request_directives(headers: &HeaderMap) -> Directives {
    if let Some(d) = Directives::from_headers(headers, "cache-control") {
        return d;
    }
    let pragma_no_cache = headers.get_all("pragma").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
        })
    });
    Directives {
        no_cache: pragma_no_cache,
        ..Directives::default()
    }
}

fn set_once<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn delta(value: Option<&str>) -> Option<Delta> {
    let text = value?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Delta::Invalid);
    }
    Some(Delta::Seconds(
        text.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)),
    ))
}

/// Splits `a, b=1, c="x, y"` into (name, value) pairs; quoted values may
/// hold commas and backslash escapes.
fn split_directives(text: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let name = text[name_start..i].trim();
        let mut value = None;
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                let start = i;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                value = Some(&text[start..i.min(bytes.len())]);
                while i < bytes.len() && bytes[i] != b',' {
                    i += 1;
                }
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b',' {
                    i += 1;
                }
                value = Some(text[start..i].trim());
            }
        }
        if !name.is_empty() {
            out.push((name, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_of_a_repeated_directive_wins() {
        let d = Directives::parse("max-age=10, max-age=3600");
        assert_eq!(d.max_age, Some(Delta::Seconds(10)));
    }

    #[test]
    fn a_non_numeric_max_age_is_invalid_not_absent() {
        assert_eq!(
            Directives::parse("max-age=abc").max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(
            Directives::parse("max-age=\"60\"").max_age,
            Some(Delta::Seconds(60))
        );
    }

    #[test]
    fn an_overflowing_delta_is_capped() {
        let d = Directives::parse("s-maxage=99999999999999999999999");
        assert_eq!(d.s_maxage, Some(Delta::Seconds(DELTA_MAX)));
    }

    #[test]
    fn quoted_lists_keep_their_commas() {
        let d = Directives::parse("private=\"set-cookie, x-a\", max-age=5, PUBLIC");
        assert_eq!(d.private_fields, vec!["set-cookie", "x-a"]);
        assert!(!d.private);
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
        assert!(d.public);
    }

    #[test]
    fn targeted_field_wins_over_cache_control() {
        let mut h = HeaderMap::new();
        h.insert("cache-control", "no-store".parse().unwrap());
        h.insert("cdn-cache-control", "max-age=60".parse().unwrap());
        let (d, targeted) = response_directives(&h);
        assert!(targeted);
        assert!(!d.no_store);
        h.insert("palisade-cache-control", "no-store".parse().unwrap());
        assert!(response_directives(&h).0.no_store);
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert("pragma", "no-cache".parse().unwrap());
        assert!(request_directives(&h).no_cache);
        h.insert("cache-control", "max-age=5".parse().unwrap());
        assert!(!request_directives(&h).no_cache);
    }
}
