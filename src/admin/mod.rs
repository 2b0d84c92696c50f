//! The admin listener (its own address, loopback by default):
//! `GET /metrics` (Prometheus text), `GET /healthz`, `POST /reload`,
//! `GET /bans` (JSON), `DELETE /bans/ADDRESS` and `POST /purge` (see
//! `purge.rs`).
//! It is never reachable through the proxy listeners.

pub mod metrics;
mod purge;
mod sharded;

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::ResponseBody;
use crate::ratelimit::bucket::{Clock, SystemClock};
use crate::server::Server;

pub async fn serve(
    listener: TcpListener,
    server: Weak<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let server = server.clone();
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = server.clone();
                async move {
                    if req.method() == Method::POST && req.uri().path() == "/purge" {
                        return Ok::<_, Infallible>(purge::answer(&server, req).await);
                    }
                    Ok::<_, Infallible>(answer(&server, req))
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(server: &Weak<Server>, req: Request<Incoming>) -> Response<ResponseBody> {
    let Some(server) = server.upgrade() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut r = text(StatusCode::OK, server.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/reload") => match server.reload() {
            Ok(()) => text(StatusCode::OK, "reloaded\n"),
            Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        },
        (&Method::GET, "/bans") => bans(&server),
        (&Method::DELETE, path) if path.starts_with("/bans/") => lift(&server, &path[6..]),
        (_, "/metrics" | "/healthz" | "/reload" | "/bans" | "/purge") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The banned clients: `[{"ip": "192.0.2.1", "seconds_left": 599}, ...]`.
fn bans(server: &Server) -> Response<ResponseBody> {
    let now = SystemClock::new().now_nanos();
    let list: Vec<serde_json::Value> = server
        .runtime
        .load()
        .bans
        .list(now)
        .into_iter()
        .map(|(ip, left)| {
            serde_json::json!({"ip": ip.to_string(), "seconds_left": left.div_ceil(1_000_000_000)})
        })
        .collect();
    let mut r = text(StatusCode::OK, serde_json::Value::from(list).to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Lifts a ban: 204, or 404 when the address had none.
fn lift(server: &Server, address: &str) -> Response<ResponseBody> {
    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
        return text(StatusCode::BAD_REQUEST, "not an IP address\n");
    };
    let now = SystemClock::new().now_nanos();
    if server.runtime.load().bans.lift(ip, now) {
        text(StatusCode::NO_CONTENT, "")
    } else {
        text(StatusCode::NOT_FOUND, "not banned\n")
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
