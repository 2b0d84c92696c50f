//! The request pipeline: the `Stage` trait every security and observability
//! feature implements, the per-request `RequestCtx`, and `build_stages`, the
//! one place where the ordered stage list is made from a config snapshot.
//!
//! The async core (routing, body buffering, forwarding) lives in `flow.rs`;
//! stages are synchronous hooks it calls at fixed points.

mod body;
pub mod canonical;
mod flow;
mod request_body;
pub mod request_id;
pub mod router;
mod runtime;
mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, request, response};

pub use body::{BodySink, ResponseBody};
pub use flow::{ConnInfo, handle, log_rejected_head};
pub use request_body::RequestBody;
pub use runtime::{LocalRuntime, Runtime, SharedRuntime};

use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::ipgeo::filter::IpFilter;
use crate::ratelimit::ban::BanList;
use crate::ratelimit::stage::RateLimiter;
use crate::ratelimit::stage::Stores;
use crate::server::access_log::AccessLog;
use crate::server::respond::ProxyError;

/// What a stage decided about the request or response.
pub enum Verdict {
    /// Go on to the next stage.
    Continue,
    /// Stop here and answer the client with this error page instead.
    Reject(ProxyError),
    /// The decision needs I/O (e.g. a rate limit kept in Redis): the flow
    /// awaits the future, bounded by the request's deadline, then hands
    /// the context to the closure it yields for the final verdict. Only
    /// `on_request` may answer this; stages use it only when they must, so
    /// the common path stays free of allocation and awaiting.
    Wait(Deferred),
}

/// The I/O half of a `Verdict::Wait`; its output finishes the decision.
pub type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = Resume> + Send>>;

/// Applies a deferred decision to the request's context.
pub type Resume = Box<dyn FnOnce(&mut RequestCtx) -> Verdict + Send>;

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Continue => f.write_str("Continue"),
            Verdict::Reject(e) => f.debug_tuple("Reject").field(e).finish(),
            Verdict::Wait(_) => f.write_str("Wait"),
        }
    }
}

/// A step of the request path. Every hook has a default that does nothing,
/// so a stage implements only the phases it cares about.
pub trait Stage: Send + Sync {
    /// A short lowercase name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Runs once the request head is read and a route is chosen, before the
    /// body is read. `Reject` answers at once; the body is never read.
    /// `Wait` suspends the request until its future is done; the closure it
    /// yields then gives the verdict (which must not be `Wait` again:
    /// that counts as `Continue`).
    fn on_request(&self, _ctx: &mut RequestCtx, _head: &request::Parts) -> Verdict {
        Verdict::Continue
    }

    /// Runs with the whole request body (at most `max_request_body` bytes)
    /// before anything is sent upstream. `Reject` answers at once.
    fn on_request_body(&self, _ctx: &mut RequestCtx, _body: &[u8]) -> Verdict {
        Verdict::Continue
    }

    /// Whether this stage reads or changes response heads. Only stages that
    /// say so get `on_response`; while none does, the origin's fields pass
    /// through without being parsed into a header map at all.
    fn inspects_response(&self) -> bool {
        false
    }

    /// Runs on the origin's response head after header hygiene, before
    /// anything is sent to the client, for stages whose
    /// `inspects_response` is true; `head.headers` then holds every field
    /// the origin sent that survived hygiene. `Reject` replaces the
    /// response with our error page.
    fn on_response(&self, _ctx: &mut RequestCtx, _head: &mut response::Parts) -> Verdict {
        Verdict::Continue
    }

    /// Runs on buffered response body bytes, where a stage asked for them.
    fn on_response_body(&self, _ctx: &mut RequestCtx, _body: &[u8]) -> Verdict {
        Verdict::Continue
    }

    /// Runs once per request after the last response byte was handed to the
    /// connection (or the client went away). Cannot change anything.
    fn on_log(&self, _ctx: &RequestCtx, _summary: &Summary) {}
}

/// Everything the pipeline knows about one request as it moves through.
/// Cloned only for a background cache refresh, which runs the response
/// stages on behalf of the request that started it.
#[derive(Clone)]
pub struct RequestCtx {
    pub id: HeaderValue,
    pub peer: SocketAddr,
    /// The client's address after trusted-proxy resolution.
    pub client_ip: IpAddr,
    pub started: Instant,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub http_version: http::Version,
    /// Index of the matched route in the config snapshot.
    pub route: Option<usize>,
    pub upstream_server: Option<SocketAddr>,
    pub cache_status: Option<&'static str>,
    pub waf_verdict: Option<&'static str>,
    /// Why the IP filter denied the request (`cidr`), if it did.
    pub ipfilter_denied: Option<&'static str>,
    /// The limit that refused the request, if one did.
    pub ratelimit_refused: Option<Arc<str>>,
    /// Fields a stage adds to the response (replacing the origin's of the
    /// same name) without reading the response head, e.g. `RateLimit`.
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
    pub bytes_in: u64,
    /// A response stage (the WAF's phases 3 and 4) flagged the response:
    /// the cache never stores it.
    pub response_flagged: bool,
    /// Why Palisade answered with its own error page, if it did.
    pub error: Option<ProxyError>,
}

impl RequestCtx {
    /// A request's context before any stage has run: who sent what, with
    /// everything stages and forwarding fill in still empty.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: HeaderValue,
        peer: SocketAddr,
        client_ip: IpAddr,
        started: Instant,
        method: Method,
        host: String,
        path: String,
        http_version: http::Version,
    ) -> RequestCtx {
        RequestCtx {
            id,
            peer,
            client_ip,
            started,
            method,
            host,
            path,
            http_version,
            route: None,
            upstream_server: None,
            cache_status: None,
            waf_verdict: None,
            ipfilter_denied: None,
            ratelimit_refused: None,
            response_headers: Vec::new(),
            bytes_in: 0,
            response_flagged: false,
            error: None,
        }
    }
}

/// The outcome of a request, handed to `Stage::on_log`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub status: u16,
    pub bytes_out: u64,
    pub duration: Duration,
    /// The response body was cut short (client gone or origin failed mid-body).
    pub aborted: bool,
}

/// Builds the ordered stage list for a config snapshot. Stages run in this
/// order for requests; `on_log` runs for all of them. Also returns the
/// rate limiter's bucket store, which the next snapshot takes over
/// (`previous_buckets`), and its Redis connection.
pub fn build_stages(
    config: &Config,
    metrics: &Arc<Metrics>,
    routes_labels: &[String],
    access_log: AccessLog,
    previous_buckets: Option<&Stores>,
    bans: &Arc<BanList>,
) -> (Vec<Box<dyn Stage>>, Option<Stores>) {
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    // Request-path stages in order: ipfilter, then (to come) ratelimit, waf.
    if let Some(filter) = IpFilter::new(config, metrics) {
        stages.push(Box::new(filter));
    }
    let mut buckets = None;
    if let Some(limiter) = RateLimiter::new(config, metrics, previous_buckets, bans) {
        buckets = Some(limiter.stores().clone());
        stages.push(Box::new(limiter));
    }
    stages.push(Box::new(metrics.route_stage(routes_labels)));
    stages.push(Box::new(access_log));
    (stages, buckets)
}
