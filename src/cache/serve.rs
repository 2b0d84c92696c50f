//! Answers made from a stored response: `Age` and `Cache-Status` added,
//! a client's own conditional request answered 304 (RFC 9110 §13), a HEAD
//! answered without the body, a single byte range answered 206 (RFC 9110
//! §14) from the stored full response.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::control::remove_own_field;
use super::store::Stored;
use crate::pipeline::ResponseBody;

pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Builds the answer to a request from `stored` at `now`.
pub fn answer(
    stored: &Stored,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let mut headers = client_headers(&stored.headers);
    let age = stored.freshness.age(now).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(&CACHE_STATUS, cache_status);
    let head_only = method == Method::HEAD;
    let (status, body) = if stored.status == StatusCode::OK && not_modified(stored, request) {
        strip_for_304(&mut headers);
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if stored.status == StatusCode::OK
        && let Some(range) = request.get(header::RANGE)
        && if_range_holds(stored, request)
    {
        match byte_range(range, stored.body.len() as u64) {
            Some(RangeAnswer::Partial(start, end)) => {
                let total = stored.body.len();
                let content_range = format!("bytes {start}-{end}/{total}");
                if let Ok(v) = HeaderValue::from_str(&content_range) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (
                    StatusCode::PARTIAL_CONTENT,
                    stored.body.slice(start as usize..=end as usize),
                )
            }
            Some(RangeAnswer::Unsatisfiable) => {
                let content_range = format!("bytes */{}", stored.body.len());
                if let Ok(v) = HeaderValue::from_str(&content_range) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
            None => (stored.status, stored.body.clone()),
        }
    } else {
        (stored.status, stored.body.clone())
    };
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let body = if head_only || body.is_empty() {
        ResponseBody::empty()
    } else {
        ResponseBody::full(body).with_file(stored.file.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The stored fields as a client gets them: our own targeted field is for
/// us alone (RFC 9213 lets its target remove it).
pub fn client_headers(stored: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    remove_own_field(&mut headers);
    headers
}

/// RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it.
fn not_modified(stored: &Stored, request: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak_eq(tag, etag));
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return false;
    };
    let modified = stored
        .headers
        .get(header::LAST_MODIFIED)
        .or_else(|| stored.headers.get(header::DATE))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    modified.is_some_and(|m| m <= since)
}

/// Weak comparison (RFC 9110 §8.8.3.2): opaque tags equal, `W/` ignored.
pub fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// The fields a 304 keeps (RFC 9110 §15.4.5): those that would have been
/// sent with a 200, less the content-describing ones.
fn strip_for_304(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
    ] {
        headers.remove(name);
    }
}

/// If-Range (RFC 9110 §13.1.5): the range applies only if the validator
/// (a strong ETag or a date) still matches the stored response.
fn if_range_holds(stored: &Stored, request: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let condition = condition.trim();
    if condition.starts_with('"') {
        return stored
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| etag == condition);
    }
    if condition.starts_with("W/") {
        return false;
    }
    let (Ok(date), Some(modified)) = (
        httpdate::parse_http_date(condition),
        stored
            .headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok()),
    ) else {
        return false;
    };
    date == modified
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// First and last byte, inclusive.
    Partial(u64, u64),
    Unsatisfiable,
}

/// Reads a single `bytes=` range against a body of `len` bytes. `None`:
/// answer with the whole body (several ranges, another unit, or a field
/// we do not understand: RFC 9110 §14.2 lets us ignore Range).
pub fn byte_range(field: &HeaderValue, len: u64) -> Option<RangeAnswer> {
    let text = field.to_str().ok()?.trim();
    let spec = text.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Some(RangeAnswer::Unsatisfiable);
        }
        return Some(RangeAnswer::Partial(len.saturating_sub(suffix), len - 1));
    }
    let start = number(first)?;
    let end = if last.is_empty() {
        u64::MAX
    } else {
        let end = number(last)?;
        if end < start {
            return None;
        }
        end
    };
    if start >= len {
        return Some(RangeAnswer::Unsatisfiable);
    }
    Some(RangeAnswer::Partial(start, end.min(len - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &'static str, len: u64) -> Option<RangeAnswer> {
        byte_range(&HeaderValue::from_static(text), len)
    }

    #[test]
    fn single_ranges_of_every_form() {
        assert_eq!(range("bytes=0-4", 10), Some(RangeAnswer::Partial(0, 4)));
        assert_eq!(range("bytes=5-", 10), Some(RangeAnswer::Partial(5, 9)));
        assert_eq!(range("bytes=-3", 10), Some(RangeAnswer::Partial(7, 9)));
        assert_eq!(range("bytes=-30", 10), Some(RangeAnswer::Partial(0, 9)));
        assert_eq!(range("bytes=8-100", 10), Some(RangeAnswer::Partial(8, 9)));
        assert_eq!(range("bytes=10-", 10), Some(RangeAnswer::Unsatisfiable));
    }

    #[test]
    fn ranges_we_do_not_serve_get_the_whole_body() {
        assert_eq!(range("bytes=0-1,3-4", 10), None);
        assert_eq!(range("items=0-1", 10), None);
        assert_eq!(range("bytes=5-2", 10), None);
        assert_eq!(range("bytes=x-2", 10), None);
    }
}
