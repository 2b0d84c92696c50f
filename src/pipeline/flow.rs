//! One request from head to response: context, route, stages, body, upstream,
//! response hygiene. Errors anywhere become a `ProxyError` and are turned
//! into a response by `respond.rs` only.

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Response, request};
use http_body_util::BodyExt;

use crate::upstream::h1::UpstreamBody;
use tokio::time::Instant;

use super::body::LogOnEnd;
use super::canonical::{canonical_path, routing_path};
use super::request_body::RequestBody;
use super::request_id;
use super::router::normalise_host;
use super::{LocalRuntime, RequestCtx, ResponseBody, Runtime, SharedRuntime, Verdict};
use crate::cache::exchange::{self, CacheRequest};
use crate::cache::key as cache_key;
use crate::framing::OriginFields;
use crate::server::respond::{ProxyError, error_response};
use crate::upstream::Outgoing;
use crate::upstream::headers::{
    ClientSide, METHOD_OVERRIDES, X_REQUEST_ID, clean_response, prepare_request,
};

/// The client side of the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP as a header value, made once per connection.
    pub peer_ip_value: HeaderValue,
    pub scheme: &'static str,
    /// Where HTTPS is served, for `https_redirect` on plain HTTP.
    pub https_port: Option<u16>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, scheme: &'static str, https_port: Option<u16>) -> ConnInfo {
        let ip = peer.ip().to_canonical().to_string();
        ConnInfo {
            peer,
            peer_ip_value: HeaderValue::from_str(&ip)
                .unwrap_or(HeaderValue::from_static("unknown")),
            scheme,
            https_port,
        }
    }
}

/// Logs a request refused before it had a head worth routing (too large,
/// malformed): one access-log line (method `-`) and the metrics, like any
/// request Palisade answers itself. `id` is the request id its error page
/// carries.
pub fn log_rejected_head(
    shared: &SharedRuntime,
    conn: &ConnInfo,
    err: &ProxyError,
    id: HeaderValue,
) {
    let rt = LocalRuntime::current(shared);
    let mut ctx = RequestCtx::new(
        id,
        conn.peer,
        conn.peer.ip().to_canonical(),
        std::time::Instant::now(),
        http::Method::from_bytes(b"-").unwrap_or(http::Method::GET),
        String::new(),
        String::new(),
        http::Version::HTTP_11,
    );
    ctx.error = Some(err.clone());
    let summary = super::Summary {
        status: err.status().as_u16(),
        bytes_out: 0,
        duration: std::time::Duration::ZERO,
        aborted: false,
    };
    for stage in &rt.stages {
        stage.on_log(&ctx, &summary);
    }
}

/// Answers one request, given its head and its body still unread. Never
/// fails: every error becomes our error page.
pub async fn handle<B: RequestBody>(
    shared: &SharedRuntime,
    conn: ConnInfo,
    head: request::Parts,
    body: B,
) -> Response<ResponseBody> {
    let rt = LocalRuntime::current(shared);
    let started = std::time::Instant::now();
    let peer_trusted = rt.trusted.contains(conn.peer.ip());
    let client_ip = if peer_trusted {
        rt.trusted.client_behind(conn.peer.ip(), &head.headers)
    } else {
        conn.peer.ip().to_canonical()
    };
    let id = match head.headers.get(&X_REQUEST_ID) {
        Some(v) if peer_trusted && request_id::is_acceptable(v) => v.clone(),
        _ => request_id::generate(),
    };
    let raw_host = head
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| head.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let mut ctx = RequestCtx::new(
        id,
        conn.peer,
        client_ip,
        started,
        head.method.clone(),
        normalise_host(raw_host),
        head.uri.path().to_string(),
        head.version,
    );
    let limit = rt.config.server.limits.request_timeout;
    // Every wait below runs against this deadline; no separate timer
    // watches the whole request.
    let deadline = Instant::from_std(started) + limit;
    // Boxed: the proxying future is several KiB, and kept inline it would be
    // copied into every future that awaits this one.
    let outcome = Box::pin(proxy(
        &rt,
        &mut ctx,
        head,
        body,
        peer_trusted,
        &conn,
        deadline,
    ))
    .await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(e) => {
            let response = error_response(&e, &ctx.id, rt.error_page());
            ctx.error = Some(e);
            response
        }
    };
    response.headers_mut().insert(&X_REQUEST_ID, ctx.id.clone());
    if conn.scheme == "https"
        && let Some(hsts) = &rt.config.server.hsts
    {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let status = response.status().as_u16();
    response.body_mut().attach_log(LogOnEnd {
        runtime: rt,
        ctx,
        status,
        bytes_out: 0,
        complete: false,
    });
    response
}

async fn proxy<B: RequestBody>(
    rt: &LocalRuntime,
    ctx: &mut RequestCtx,
    mut head: request::Parts,
    body: B,
    peer_trusted: bool,
    conn: &ConnInfo,
    deadline: Instant,
) -> Result<Response<ResponseBody>, ProxyError> {
    if ctx.host.is_empty() && head.version != http::Version::HTTP_10 {
        return Err(ProxyError::BadRequest("missing Host"));
    }
    let target_len = head.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > rt.config.server.limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    // RFC 9113 §8.3.1: a Host naming another host than `:authority` makes
    // the request malformed (which one would the backend believe?).
    if head.version == http::Version::HTTP_2
        && let (Some(authority), Some(host)) =
            (head.uri.authority(), head.headers.get(header::HOST))
        && host.to_str().map_or(true, |h| {
            normalise_host(h) != normalise_host(authority.as_str())
        })
    {
        return Err(ProxyError::BadRequest(":authority and Host differ"));
    }
    if conn.scheme == "http"
        && rt.config.server.https_redirect
        && let Some(port) = conn.https_port
    {
        return redirect_to_https(&ctx.host, port, &head.uri);
    }
    // From here on, routing, policies, the cache and the backend all see
    // the canonical path.
    if let Cow::Owned(path) = canonical_path(head.uri.path()).map_err(ProxyError::BadRequest)? {
        head.uri = with_path(&head.uri, &path)?;
        ctx.path = path;
    }
    let route_index = rt
        .router
        .find(&ctx.host, &routing_path(&ctx.path))
        .ok_or(ProxyError::NoRoute)?;
    ctx.route = Some(route_index);
    for stage in &rt.stages {
        let verdict = match stage.on_request(ctx, &head) {
            Verdict::Wait(deferred) => {
                let resume = tokio::time::timeout_at(deadline, deferred)
                    .await
                    .map_err(|_| ProxyError::RequestTimeout)?;
                resume(ctx)
            }
            verdict => verdict,
        };
        if let Verdict::Reject(e) = verdict {
            return Err(e);
        }
    }

    let limits = &rt.config.server.limits;
    let body = tokio::time::timeout_at(deadline, read_body(body, limits.max_request_body))
        .await
        .map_err(|_| ProxyError::RequestTimeout)??;
    ctx.bytes_in = body.len() as u64;
    // Stages judge the body the application will read; the origin still
    // gets the bytes as sent.
    let decoded = decode_for_inspection(rt, route_index, &head.headers, &body)?;
    let inspected = decoded.as_ref().unwrap_or(&body);
    for stage in &rt.stages {
        if let Verdict::Reject(e) = stage.on_request_body(ctx, inspected) {
            return Err(e);
        }
    }
    drop(decoded);

    let route = Route {
        index: route_index,
        peer_trusted,
        conn: conn.clone(),
    };
    // A handshake has no body (RFC 6455 §4.1); one with a body stays HTTP,
    // so no byte the client sent is dropped.
    if rt.config.routes[route_index].websocket
        && body.is_empty()
        && super::upgrade::is_websocket_upgrade(&head)
    {
        return super::upgrade::upgrade(rt, ctx, &route, head, deadline).await;
    }
    let compression = rt.config.routes[route_index].compression.as_ref();
    // Only what compression needs of the request outlives it.
    let accept_encoding: Vec<HeaderValue> = match compression {
        Some(_) => head
            .headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let method = head.method.clone();
    if let Some((cache, rules)) = rt.cache_for(route_index)
        && matches!(head.method, http::Method::GET | http::Method::HEAD)
    {
        let request = CacheRequest {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
            scheme: conn.scheme,
            host: ctx.host.clone(),
        };
        let fetch = OriginFetch {
            rt: rt.clone(),
            route,
            body,
        };
        let mut response = exchange::handle(cache, rules, ctx, request, fetch, deadline).await?;
        for (name, value) in std::mem::take(&mut ctx.response_headers) {
            response.headers_mut().insert(name, value);
        }
        if let Some(config) = compression {
            crate::compress::apply(config, &method, &accept_encoding, &mut response);
        }
        return Ok(response);
    }
    // Kept only where a successful answer invalidates cached URIs.
    let invalidates = (rt.cache.is_some() && !head.method.is_safe()).then(|| head.uri.clone());
    let (mut parts, fields, body) =
        forward(rt, ctx, &route, head, body, compression.is_some(), deadline).await?;
    if let Some(uri) = invalidates
        && (parts.status.is_success() || parts.status.is_redirection())
    {
        invalidate_after_unsafe(rt, ctx, &route, &uri, &parts, fields.as_ref());
    }
    let mut fields = fields;
    if !ctx.response_headers.is_empty() {
        let added = std::mem::take(&mut ctx.response_headers);
        if let Some(fields) = fields.as_mut() {
            fields.retain(|name| {
                !added
                    .iter()
                    .any(|(ours, _)| name.eq_ignore_ascii_case(ours.as_str().as_bytes()))
            });
        }
        for (name, value) in added {
            parts.headers.insert(name, value);
        }
    }
    let mut body = body;
    if let Some(fields) = fields {
        body.set_origin_fields(fields);
    }
    let mut response = Response::from_parts(parts, body);
    if let Some(config) = compression {
        crate::compress::apply(config, &method, &accept_encoding, &mut response);
    }
    Ok(response)
}

/// Where a request goes and who sent it: what forwarding needs beyond the
/// request itself.
#[derive(Clone)]
pub(super) struct Route {
    pub(super) index: usize,
    peer_trusted: bool,
    pub(super) conn: ConnInfo,
}

/// The request as forwarding takes it.
pub(super) struct ForwardHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl From<request::Parts> for ForwardHead {
    fn from(head: request::Parts) -> Self {
        ForwardHead {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
        }
    }
}

/// Sends the request to the route's upstream and runs the response
/// stages. The origin's fields stay unparsed (returned apart) unless a
/// stage reads them or `want_map` asks for them in the head's map.
async fn forward(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    route: &Route,
    head: impl Into<ForwardHead>,
    body: Bytes,
    want_map: bool,
    deadline: Instant,
) -> Result<(http::response::Parts, Option<OriginFields>, ResponseBody), ProxyError> {
    let head: ForwardHead = head.into();
    let upstream = &rt.upstreams[rt.config.routes[route.index].upstream];
    let method = head.method.clone();
    let outgoing = outgoing(ctx, route, head, body);
    let forwarded = upstream.forward(&outgoing, deadline).await?;
    answer(rt, ctx, &method, forwarded, want_map, deadline).await
}

/// The request as the backend gets it: hop-by-hop fields gone, forwarding
/// fields set, the body re-framed with its own length, the Host the
/// client meant.
pub(super) fn outgoing(
    ctx: &RequestCtx,
    route: &Route,
    mut head: ForwardHead,
    body: Bytes,
) -> Outgoing {
    let original_host = host_value(&head.headers, &head.uri);
    let side = ClientSide {
        peer_ip: ctx.peer.ip(),
        peer_ip_value: &route.conn.peer_ip_value,
        peer_trusted: route.peer_trusted,
        scheme: route.conn.scheme,
        host: original_host.as_ref(),
        version: head.version,
    };
    prepare_request(&mut head.headers, &side, &ctx.id);
    // Re-frame: the backend gets the length of the body we read, never the
    // client's framing.
    if !body.is_empty() || head.headers.contains_key(header::CONTENT_LENGTH) {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    // HTTP/2 requests carry `:authority` instead of a Host header, and an
    // absolute-form target overrides the Host field.
    if let Some(host) = original_host {
        head.headers.insert(header::HOST, host);
    }
    let path_and_query = head
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Outgoing {
        method: head.method,
        path_and_query,
        headers: head.headers,
        body,
        client_ip: ctx.client_ip,
    }
}

/// The backend's answer as the client will get it, after the response
/// stages: its head, its fields (unparsed unless a stage or `want_map`
/// needed them) and its body.
pub(super) async fn answer(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    method: &http::Method,
    forwarded: crate::upstream::Forwarded,
    want_map: bool,
    deadline: Instant,
) -> Result<(http::response::Parts, Option<OriginFields>, ResponseBody), ProxyError> {
    ctx.upstream_server = Some(forwarded.server);

    let mut origin = forwarded.head;
    if origin.status.is_server_error() && rt.config.server.replace_error_pages {
        return Err(ProxyError::OriginError(origin.status));
    }
    clean_response(&mut origin.fields, &rt.config.server.hide_headers);
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = origin.status;
    parts.version = origin.version;
    let mut fields = Some(origin.fields);
    if rt.inspects_responses || want_map {
        if let Some(fields) = fields.take() {
            fields.move_into(&mut parts.headers);
        }
        for stage in rt.stages.iter().filter(|s| s.inspects_response()) {
            if let Verdict::Reject(e) = stage.on_response(ctx, &mut parts) {
                return Err(e);
            }
        }
    }
    let body = tokio::time::timeout_at(deadline, first_bytes(method, forwarded.body))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)??;
    Ok((parts, fields, body))
}

/// The cache's way to the origin: forwarding with this request's route,
/// client and body.
#[derive(Clone)]
struct OriginFetch {
    rt: LocalRuntime,
    route: Route,
    body: Bytes,
}

impl exchange::Fetch for OriginFetch {
    async fn fetch(
        &self,
        ctx: &mut RequestCtx,
        request: &CacheRequest,
        mode: exchange::Mode,
        deadline: Instant,
    ) -> Result<exchange::Fetched, ProxyError> {
        let mut headers = request.headers.clone();
        mode.apply(&mut headers);
        for name in METHOD_OVERRIDES {
            headers.remove(name);
        }
        let head = ForwardHead {
            method: request.method.clone(),
            uri: request.uri.clone(),
            version: request.version,
            headers,
        };
        let (parts, _, body) = forward(
            &self.rt,
            ctx,
            &self.route,
            head,
            self.body.clone(),
            true,
            deadline,
        )
        .await?;
        Ok(exchange::Fetched {
            response: Response::from_parts(parts, body),
            flagged: ctx.response_flagged,
        })
    }

    fn background_deadline(&self) -> Instant {
        Instant::now() + self.rt.config.server.limits.request_timeout
    }
}

/// RFC 9111 §4.4: a successful unsafe request invalidates its target and
/// the same-origin URIs in Location and Content-Location.
fn invalidate_after_unsafe(
    rt: &Runtime,
    ctx: &RequestCtx,
    route: &Route,
    uri: &http::Uri,
    parts: &http::response::Parts,
    fields: Option<&OriginFields>,
) {
    let Some(cache) = rt.cache.as_ref() else {
        return;
    };
    let scheme = route.conn.scheme;
    let mut targets = vec![uri.path_and_query().map_or("/", |p| p.as_str()).to_string()];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let value = match fields {
            Some(fields) => fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_str().as_bytes()))
                .map(|(_, v)| v.to_vec()),
            None => parts.headers.get(&name).map(|v| v.as_bytes().to_vec()),
        };
        let Some(value) = value.and_then(|v| String::from_utf8(v).ok()) else {
            continue;
        };
        if let Some(target) = same_origin_target(&value, scheme, &ctx.host) {
            targets.push(target);
        }
    }
    for target in targets {
        // The key parts of the route the target falls in decide its key.
        let path = target.split('?').next().unwrap_or("/");
        let rules = rt
            .router
            .find(&ctx.host, path)
            .and_then(|i| rt.config.routes.get(i))
            .and_then(|r| r.cache.as_ref());
        let parts = rules.map(|r| r.key.clone()).unwrap_or_default();
        cache.invalidate(&cache_key::primary(scheme, &ctx.host, &target, &parts));
    }
}

/// A Location or Content-Location value as a path on this origin, or
/// `None` when it names another origin.
fn same_origin_target(value: &str, scheme: &str, host: &str) -> Option<String> {
    let value = value.trim();
    if value.starts_with('/') && !value.starts_with("//") {
        return Some(value.to_string());
    }
    let uri: http::Uri = value.parse().ok()?;
    let same = uri.scheme_str() == Some(scheme)
        && uri
            .authority()
            .is_some_and(|a| normalise_host(a.as_str()) == host);
    same.then(|| uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// The request body decoded from its Content-Encoding, where the route
/// decodes request bodies and the body has one.
fn decode_for_inspection(
    rt: &Runtime,
    route: usize,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<Option<Bytes>, ProxyError> {
    let Some(caps) = rt.config.routes[route]
        .compression
        .as_ref()
        .and_then(|c| c.decode_requests)
    else {
        return Ok(None);
    };
    let mut codings = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(coding) = codings.next() else {
        return Ok(None);
    };
    if body.is_empty() {
        return Ok(None);
    }
    // Two Content-Encoding lines mean stacked codings: refused like a
    // stacked list in one line.
    if codings.next().is_some() {
        return Err(ProxyError::UnsupportedEncoding);
    }
    let coding = coding
        .to_str()
        .map_err(|_| ProxyError::UnsupportedEncoding)?;
    use crate::compress::decode::{DecodeError, decode};
    decode(coding, body, caps).map_err(|e| match e {
        DecodeError::TooLarge => ProxyError::PayloadTooLarge,
        DecodeError::Malformed => {
            ProxyError::BadRequest("request body does not match its Content-Encoding")
        }
        DecodeError::Unsupported => ProxyError::UnsupportedEncoding,
    })
}

/// `uri` with its path replaced (query, scheme and authority kept).
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, ProxyError> {
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest("invalid path"))?);
    http::Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid path"))
}

/// The 308 that sends a plain-HTTP request to the same URL over HTTPS
/// (308 rather than 301: the method and body are kept).
fn redirect_to_https(
    host: &str,
    port: u16,
    uri: &http::Uri,
) -> Result<Response<ResponseBody>, ProxyError> {
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    if !host_ok {
        return Err(ProxyError::BadRequest("invalid Host"));
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let location =
        HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest("invalid target"))?;
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Responses up to this size (by Content-Length) are read whole before the
/// head is sent: one write for head and body, and a body cut short by the
/// origin becomes a clean 502 instead of a truncated 200.
const BUFFERED_RESPONSE_MAX: u64 = 16 * 1024;

/// Waits for the start of the origin's body so the response head and its
/// first bytes leave in one write: half the syscalls and wake-ups of sending
/// the head alone.
async fn first_bytes(
    method: &http::Method,
    mut body: UpstreamBody,
) -> Result<ResponseBody, ProxyError> {
    use http_body::Body as _;
    if *method == http::Method::HEAD || body.is_end_stream() {
        return Ok(ResponseBody::upstream(body));
    }
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= BUFFERED_RESPONSE_MAX)
    {
        return match body.collect().await {
            Ok(collected) => Ok(ResponseBody::full(collected.to_bytes())),
            Err(_) => Err(ProxyError::UpstreamUnavailable),
        };
    }
    match body.frame().await {
        None => Ok(ResponseBody::empty()),
        Some(Err(_)) => Err(ProxyError::UpstreamUnavailable),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) if body.is_end_stream() => Ok(ResponseBody::full(data)),
            Ok(data) => Ok(ResponseBody::upstream_after(
                http_body::Frame::data(data),
                body,
            )),
            Err(frame) => Ok(ResponseBody::upstream_after(frame, body)),
        },
    }
}

/// The Host to send upstream: the target's authority when it has one
/// (absolute-form, or HTTP/2's `:authority`), which RFC 9112 §3.2.2 puts
/// before any Host field, else the Host field. Routing, the cache key and
/// the backend all see this one host.
fn host_value(headers: &http::HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    uri.authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| headers.get(header::HOST).cloned())
}

/// Reads the whole request body, refusing more than `limit` bytes. A
/// declared length over the limit is refused before reading.
async fn read_body<B: RequestBody>(body: B, limit: u64) -> Result<Bytes, ProxyError> {
    if body.declared_length().is_some_and(|len| len > limit) {
        return Err(ProxyError::PayloadTooLarge);
    }
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    body.read_all(limit).await
}
