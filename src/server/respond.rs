//! The one place where errors become HTTP responses.
//!
//! Everything that can stop a request — a stage's rejection, a bad request, a
//! failed or slow origin — is a `ProxyError`; `error_response` turns it into
//! our own error page carrying the request id and nothing else: no rule id,
//! no backend address, no origin error text.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::pipeline::ResponseBody;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route for this host and path")]
    NoRoute,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("request body larger than the limit")]
    PayloadTooLarge,
    #[error("request target longer than the limit")]
    UriTooLong,
    #[error("request head larger than the limit")]
    HeadersTooLarge,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("client sent the request body too slowly")]
    RequestTimeout,
    #[error("no upstream server answered")]
    UpstreamUnavailable,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("origin answered {0}; its body was replaced")]
    OriginError(StatusCode),
    /// `only-if-cached` found nothing to use, or a response that must be
    /// revalidated could not be (RFC 9111 §5.2.1.7, §4.2.4).
    #[error("no usable cached response")]
    NotCached,
    /// A request body in a content coding Palisade cannot decode for
    /// inspection.
    #[error("unsupported request Content-Encoding")]
    UnsupportedEncoding,
    #[error("too many requests")]
    TooManyRequests(Box<RateLimited>),
    /// A limit that fails closed could not be checked (its Redis is down
    /// or slow).
    #[error("rate limit could not be checked")]
    LimitUnavailable,
    /// The client already holds `max_connections_per_client` connections.
    #[error("too many connections from this client")]
    TooManyConnections,
    /// The server holds `max_connections` connections.
    #[error("connection limit reached")]
    ServerFull,
}

/// What a 429 tells the client: when to come back and the limit's state
/// (IETF `RateLimit-Policy` and `RateLimit` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after_secs: u64,
    pub policy: HeaderValue,
    pub state: HeaderValue,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout | ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::OriginError(status) => *status,
            ProxyError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::LimitUnavailable | ProxyError::ServerFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A stable name for what went wrong: the access log's `error` field
    /// and the `reason` label of `palisade_requests_rejected_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::PayloadTooLarge => "payload_too_large",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::NotImplemented(_) => "not_implemented",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::UpstreamUnavailable => "upstream_unavailable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::OriginError(_) => "origin_error",
            ProxyError::NotCached => "not_cached",
            ProxyError::UnsupportedEncoding => "unsupported_encoding",
            ProxyError::TooManyRequests(_) => "too_many_requests",
            ProxyError::LimitUnavailable => "limit_unavailable",
            ProxyError::TooManyConnections => "too_many_connections",
            ProxyError::ServerFull => "server_full",
        }
    }

    /// The specific rule broken, for the access log (never the client):
    /// `"two Host fields"` for a `bad_request`.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            ProxyError::BadRequest(d)
            | ProxyError::Forbidden(d)
            | ProxyError::NotImplemented(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the client connection should be closed after this answer:
    /// after a framing problem the rest of the stream cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::PayloadTooLarge
                | ProxyError::HeadersTooLarge
                | ProxyError::NotImplemented(_)
                | ProxyError::RequestTimeout
        )
    }
}

const DEFAULT_PAGE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title>\
<style>body{font-family:sans-serif;margin:4em auto;max-width:40em;color:#222}code{background:#eee;padding:.1em .3em}</style>\
</head><body><h1>{status} {reason}</h1><p>The request could not be completed.</p>\
<p>Request id: <code>{request_id}</code></p></body></html>\n";

/// Our error page for `err`. `template` is the configured page, if any.
pub fn error_response(
    err: &ProxyError,
    request_id: &HeaderValue,
    template: Option<&str>,
) -> Response<ResponseBody> {
    let status = err.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let id = request_id.to_str().unwrap_or("");
    let page = template
        .unwrap_or(DEFAULT_PAGE)
        .replace("{status}", status.as_str())
        .replace("{reason}", &escape_html(reason))
        .replace("{request_id}", &escape_html(id));
    let mut response = Response::new(ResponseBody::full(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if err.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let ProxyError::TooManyRequests(limited) = err {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(limited.retry_after_secs),
        );
        headers.insert("ratelimit-policy", limited.policy.clone());
        headers.insert("ratelimit", limited.state.clone());
    }
    if let ProxyError::LimitUnavailable = err {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_names_status_and_request_id_only() {
        let id = HeaderValue::from_static("abc123");
        let r = error_response(&ProxyError::UpstreamUnavailable, &id, None);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let page = r.body().peek_full().expect("full body");
        let page = std::str::from_utf8(page).expect("utf8");
        assert!(page.contains("502 Bad Gateway"));
        assert!(page.contains("abc123"));
    }

    #[test]
    fn custom_template_is_filled_and_escaped() {
        let id = HeaderValue::from_static("x<y");
        let r = error_response(
            &ProxyError::NoRoute,
            &id,
            Some("{status}|{reason}|{request_id}"),
        );
        let page = r.body().peek_full().expect("full body");
        assert_eq!(page.as_ref(), b"404|Not Found|x&lt;y");
    }
}
