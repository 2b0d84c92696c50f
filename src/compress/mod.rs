//! Compression on the way out: which responses may be compressed, the
//! coding a client gets (`negotiate.rs`), the streaming encoders
//! (`encoder.rs`), and the header changes a transformed body needs (RFC
//! 9110 §8.4, §8.8.3, §12.5.5). The proxy flow calls `apply` on every
//! response of a route with compression on, after the cache: the cache
//! stores identity bodies, and a stored body is encoded once per coding
//! (see `Stored::encoded`), not once per request.

pub mod decode;
pub mod encoder;
pub mod negotiate;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::cache::CachedAnswer;
use crate::pipeline::ResponseBody;
use encoder::Encoder;

/// A content coding Palisade can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    pub fn from_token(token: &str) -> Option<Coding> {
        let t = token.trim();
        if t.eq_ignore_ascii_case("br") {
            Some(Coding::Brotli)
        } else if t.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else {
            None
        }
    }

    /// A small index, for per-coding slots.
    pub fn index(self) -> usize {
        match self {
            Coding::Brotli => 0,
            Coding::Zstd => 1,
            Coding::Gzip => 2,
        }
    }
}

/// `[compression]`, as a route sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionConfig {
    /// Codings offered, in the server's order of preference.
    pub codings: Vec<Coding>,
    /// Bodies smaller than this (by Content-Length) are sent as they are.
    pub min_size: u64,
    /// Media types compressed: an entry ending in `/` is a prefix
    /// (`text/`), any other matches the type exactly.
    pub types: Vec<String>,
    pub gzip_level: u32,
    pub brotli_level: u32,
    pub zstd_level: u32,
    /// Decode coded request bodies for the stages that read bodies, with
    /// these caps; `None`: stages see the bytes as sent.
    pub decode_requests: Option<decode::Caps>,
}

impl CompressionConfig {
    pub fn level(&self, coding: Coding) -> u32 {
        match coding {
            Coding::Brotli => self.brotli_level,
            Coding::Zstd => self.zstd_level,
            Coding::Gzip => self.gzip_level,
        }
    }

    fn compressible_type(&self, headers: &HeaderMap) -> bool {
        let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str())
            } else {
                media == *t
            }
        })
    }
}

/// The default media types: text, and the structured formats that
/// compress well. Images, video, archives and fonts in WOFF2 are already
/// compressed.
pub const DEFAULT_TYPES: [&str; 12] = [
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
    "application/problem+json",
];

/// Compresses `response` for a client that sent `accept_encoding`, where
/// allowed. Responses that may not be compressed are left as they are.
pub fn apply(
    config: &CompressionConfig,
    method: &Method,
    accept_encoding: &[HeaderValue],
    response: &mut Response<ResponseBody>,
) {
    let status = response.status();
    if *method == Method::HEAD
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return;
    }
    let headers = response.headers();
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        || headers.contains_key(header::CONTENT_RANGE)
        || no_transform(headers)
        || !config.compressible_type(headers)
    {
        return;
    }
    let length = http_body::Body::size_hint(response.body()).exact();
    if length.is_some_and(|n| n < config.min_size) {
        return;
    }
    // Whatever is chosen for this client, the representation depends on
    // Accept-Encoding, and caches downstream must know it.
    add_vary(response.headers_mut());
    let Some(coding) = negotiate::choose(accept_encoding, &config.codings) else {
        return;
    };
    let level = config.level(coding);
    let encoded = match response.extensions().get::<CachedAnswer>() {
        Some(cached) => cached.encoded(coding, level),
        None => match response.body().peek_full() {
            Some(full) => encoder::encode_all(coding, level, full).ok(),
            None => None,
        },
    };
    let body = std::mem::replace(response.body_mut(), ResponseBody::empty());
    let new_body = match encoded {
        Some(bytes) => ResponseBody::full(bytes),
        None if body.peek_full().is_some() => {
            // The full body could not be encoded: send it as it was.
            *response.body_mut() = body;
            return;
        }
        None => match Encoder::new(coding, level) {
            Ok(encoder) => ResponseBody::encoding(body, encoder),
            Err(_) => {
                *response.body_mut() = body;
                return;
            }
        },
    };
    *response.body_mut() = new_body;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is already there.
fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|n| {
                let n = n.trim();
                n == "*" || n.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A strong ETag names exact bytes; the encoded body is other bytes
/// (RFC 9110 §8.8.3), so it becomes weak.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&weak) {
        headers.insert(header::ETAG, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_is_merged_not_duplicated() {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Cookie"));
        add_vary(&mut h);
        add_vary(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Cookie", "Accept-Encoding"]);
    }

    #[test]
    fn strong_etags_become_weak_once() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        weaken_etag(&mut h);
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
    }
}
