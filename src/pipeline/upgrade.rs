//! WebSocket upgrades (RFC 6455 over HTTP/1.1) on routes with
//! `websocket = true`. The request goes to the backend with its `Upgrade`
//! and `Connection: upgrade` kept; only a real 101 from the backend turns
//! the client's connection into a tunnel (the server side does the
//! tunnelling, see `server::h1`). Any other answer is an ordinary response,
//! and the connection stays HTTP. Elsewhere `Upgrade` is hop-by-hop: it is
//! removed and the request is plain HTTP.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request};

use super::flow::{Route, answer, outgoing};
use super::{RequestCtx, ResponseBody, Runtime};
use crate::server::respond::ProxyError;
use crate::upstream::headers::clean_response;
use crate::upstream::{Tunnel, UpgradeAnswer};

/// Whether `head` asks to switch to WebSocket: a GET over HTTP/1.1 with
/// `Upgrade: websocket` and `upgrade` among its `Connection` options.
pub(super) fn is_websocket_upgrade(head: &request::Parts) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        head.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    head.method == http::Method::GET
        && head.version == http::Version::HTTP_11
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// Sends the upgrade to the route's backend. A 101 comes back with a
/// [`Tunnel`] extension for the client's connection to take over.
pub(super) async fn upgrade(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    route: &Route,
    head: request::Parts,
    deadline: tokio::time::Instant,
) -> Result<Response<ResponseBody>, ProxyError> {
    let upgrade = head
        .headers
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("websocket"));
    let method = head.method.clone();
    let mut out = outgoing(ctx, route, head.into(), Bytes::new());
    // Hop-by-hop, so removed for every other request: kept for this one.
    out.headers.insert(header::UPGRADE, upgrade.clone());
    out.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let upstream = &rt.upstreams[rt.config.routes[route.index].upstream];
    match upstream.upgrade(&out, deadline).await? {
        UpgradeAnswer::Switched {
            mut head,
            stream,
            leftover,
            server,
        } => {
            ctx.upstream_server = Some(server);
            clean_response(&mut head.fields, &rt.config.server.hide_headers);
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            head.fields.move_into(response.headers_mut());
            response.headers_mut().insert(header::UPGRADE, upgrade);
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            response
                .extensions_mut()
                .insert(Tunnel::new(stream, leftover));
            Ok(response)
        }
        UpgradeAnswer::Declined(forwarded) => {
            let (parts, fields, mut body) =
                answer(rt, ctx, &method, forwarded, false, deadline).await?;
            if let Some(fields) = fields {
                body.set_origin_fields(fields);
            }
            Ok(Response::from_parts(parts, body))
        }
    }
}
