//! `POST /purge`: removes stored responses by exact URL or by prefix.
//!
//! The body is JSON, `{"url": "https://example.com/a?b=1"}` or
//! `{"prefix": "https://example.com/static/"}`; the answer is
//! `{"purged": N}`. A URL is keyed as a request for it would be (its
//! route's ignored query parameters left out), so purging the URL a
//! client fetched removes what that fetch stored, in every variant.

use std::sync::Weak;

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::text;
use crate::cache::key::{KeyParts, primary};
use crate::pipeline::ResponseBody;
use crate::pipeline::router::normalise_host;
use crate::server::Server;

/// Purge requests are a line of JSON; anything longer is refused.
const MAX_BODY: usize = 64 * 1024;

pub async fn answer(server: &Weak<Server>, req: Request<Incoming>) -> Response<ResponseBody> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "purge body too large\n"),
    };
    let Some(server) = server.upgrade() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let (target, prefix) = match parse(&body) {
        Ok(t) => t,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let runtime = server.runtime.load();
    let Some(cache) = runtime.cache.as_ref() else {
        return text(StatusCode::NOT_FOUND, "no [cache] configured\n");
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return text(StatusCode::BAD_REQUEST, "not a URL\n");
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the URL must be absolute: scheme://host/path\n",
        );
    };
    let host = normalise_host(authority.as_str());
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let key = if prefix {
        // A prefix is compared as written after the host: no query rules.
        primary(scheme, &host, path_and_query, &KeyParts::default())
    } else {
        let parts = runtime
            .router
            .find(&host, uri.path())
            .and_then(|i| runtime.config.routes.get(i))
            .and_then(|r| r.cache.as_ref())
            .map(|r| r.key.clone())
            .unwrap_or_default();
        primary(scheme, &host, path_and_query, &parts)
    };
    let purged = cache.purge(&key, prefix);
    let mut r = text(
        StatusCode::OK,
        serde_json::json!({ "purged": purged }).to_string(),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads `{"url": …}` or `{"prefix": …}`: the target and whether it is a
/// prefix.
fn parse(body: &[u8]) -> Result<(String, bool), &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "body must be JSON: {\"url\": \"…\"} or {\"prefix\": \"…\"}")?;
    match (
        value.get("url").and_then(|v| v.as_str()),
        value.get("prefix").and_then(|v| v.as_str()),
    ) {
        (Some(url), None) => Ok((url.to_string(), false)),
        (None, Some(prefix)) => Ok((prefix.to_string(), true)),
        _ => Err("give exactly one of \"url\" and \"prefix\""),
    }
}
