//! Prometheus metrics. One registry for the life of the process (reloads keep
//! the counters). Label values come only from the config (route, upstream,
//! server address) or from fixed sets (status class): never one series per
//! client IP or per path.
//!
//! Per-request handles are looked up once, when a config snapshot is built,
//! so the hot path only touches atomics.

use std::net::SocketAddr;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::sharded::{LatencyHistogram, ShardedCounter};
use crate::pipeline::{RequestCtx, Stage, Summary};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    // Updated by every request on every serving thread: sharded.
    requests: Family<Labels, ShardedCounter>,
    latency: Family<Labels, LatencyHistogram>,
    upstream_healthy: Family<Labels, Gauge>,
    upstream_failures: Family<Labels, Counter>,
    upstream_ejections: Family<Labels, Counter>,
    pub open_connections: Gauge,
    pub refused_connections: Counter,
    /// Connections refused because their client had too many open.
    pub refused_client_connections: Counter,
    pub access_log_dropped: Counter,
    pub reloads: Family<Labels, Counter>,
    /// Each served certificate's notAfter (Unix seconds), by file.
    pub tls_cert_not_after: Family<Labels, Gauge>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// HTTP/2 connections that ended in a protocol error (floods, broken
    /// frames, resets past the limit).
    pub h2_connection_errors: Counter,
    /// Requests the IP filter denied, by reason (`cidr`, `asn`, `country`).
    ipfilter_denied: Family<Labels, Counter>,
    /// Requests denied for their country, by ISO code (or `unknown`).
    ipfilter_denied_countries: Family<Labels, Counter>,
    /// Requests refused with 429, by limit name (names come from the
    /// config).
    ratelimit_refused: Family<Labels, Counter>,
    /// Decisions Redis could not make (down, slow, error), by limit and the
    /// fallback taken (`open` or `closed`).
    ratelimit_redis_errors: Family<Labels, Counter>,
    /// Requests answered with Palisade's own error page, by
    /// `ProxyError::kind` (a fixed set of names).
    rejected: Family<Labels, Counter>,
    /// The cache's counters and gauges (one set: there is one store).
    pub cache: crate::cache::CacheMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("palisade")),
            requests: Family::default(),
            latency: Family::default(),
            upstream_healthy: Family::default(),
            upstream_failures: Family::default(),
            upstream_ejections: Family::default(),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            refused_client_connections: Counter::default(),
            access_log_dropped: Counter::default(),
            reloads: Family::default(),
            tls_cert_not_after: Family::default(),
            tls_handshake_failures: Counter::default(),
            h2_connection_errors: Counter::default(),
            ipfilter_denied: Family::default(),
            ipfilter_denied_countries: Family::default(),
            ratelimit_refused: Family::default(),
            ratelimit_redis_errors: Family::default(),
            rejected: Family::default(),
            cache: crate::cache::CacheMetrics::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register(
                "requests",
                "Requests by route and status class",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from request head to last response byte, by route",
                m.latency.clone(),
            );
            r.register(
                "upstream_server_healthy",
                "1 while active health checks pass for the server",
                m.upstream_healthy.clone(),
            );
            r.register(
                "upstream_failures",
                "Connect errors, timeouts and 5xx answers by server",
                m.upstream_failures.clone(),
            );
            r.register(
                "upstream_ejections",
                "Times a server was ejected after consecutive failures",
                m.upstream_ejections.clone(),
            );
            r.register(
                "open_connections",
                "Client connections currently open",
                m.open_connections.clone(),
            );
            r.register(
                "refused_connections",
                "Client connections refused at the connection limit",
                m.refused_connections.clone(),
            );
            r.register(
                "access_log_dropped",
                "Access log lines dropped because the writer fell behind",
                m.access_log_dropped.clone(),
            );
            r.register("reloads", "Config reloads by result", m.reloads.clone());
            r.register(
                "tls_certificate_not_after_seconds",
                "Expiry (notAfter, Unix time) of each served certificate, by file",
                m.tls_cert_not_after.clone(),
            );
            r.register(
                "tls_handshake_failures",
                "Client TLS handshakes that failed or timed out",
                m.tls_handshake_failures.clone(),
            );
            r.register(
                "h2_connection_errors",
                "HTTP/2 connections ended by a protocol error (floods, malformed frames)",
                m.h2_connection_errors.clone(),
            );
            r.register(
                "requests_rejected",
                "Requests answered with Palisade's own error page, by reason (uri_too_long, headers_too_large, payload_too_large, bad_request, ...)",
                m.rejected.clone(),
            );
            r.register(
                "refused_client_connections",
                "Connections refused: their client had max_connections_per_client open",
                m.refused_client_connections.clone(),
            );
            r.register(
                "ipfilter_denied",
                "Requests denied by the IP filter, by reason",
                m.ipfilter_denied.clone(),
            );
            r.register(
                "ipfilter_denied_countries",
                "Requests denied for their country, by ISO code",
                m.ipfilter_denied_countries.clone(),
            );
            r.register(
                "ratelimit_refused",
                "Requests refused with 429, by limit",
                m.ratelimit_refused.clone(),
            );
            r.register(
                "ratelimit_redis_errors",
                "Rate-limit decisions Redis could not make, by limit and fallback",
                m.ratelimit_redis_errors.clone(),
            );
            let c = &m.cache;
            r.register(
                "cache_hits",
                "Requests answered from the cache",
                c.hits.clone(),
            );
            r.register(
                "cache_misses",
                "Cacheable requests that went to the origin",
                c.misses.clone(),
            );
            r.register(
                "cache_stale_served",
                "Stale responses served (max-stale, stale-while-revalidate, stale-if-error)",
                c.stale_served.clone(),
            );
            r.register(
                "cache_coalesced_waiters",
                "Requests that waited for another request's origin fetch",
                c.coalesced_waiters.clone(),
            );
            r.register(
                "cache_revalidations",
                "Stored responses refreshed by a 304 from the origin",
                c.revalidations.clone(),
            );
            r.register("cache_stores", "Responses stored", c.stores.clone());
            r.register(
                "cache_evictions",
                "Stored responses evicted to keep within max_size",
                c.evictions.clone(),
            );
            r.register(
                "cache_invalidations",
                "URIs invalidated by unsafe requests (RFC 9111 section 4.4)",
                c.invalidations.clone(),
            );
            r.register(
                "cache_purged",
                "URIs removed through the admin purge endpoint",
                c.purged.clone(),
            );
            r.register(
                "cache_bytes_stored",
                "Bytes the stored responses take, as weighed",
                c.bytes_stored.clone(),
            );
            r.register("cache_entries", "URIs stored", c.entries.clone());
        }
        m
    }

    /// The counter of requests refused by the limit named `limit`.
    pub fn ratelimit_refused(&self, limit: &str) -> Counter {
        self.ratelimit_refused
            .get_or_create(&vec![("limit", limit.to_string())])
            .clone()
    }

    /// The counter of decisions the limit named `limit` could not make in
    /// Redis, falling back `open` or `closed`.
    pub fn ratelimit_redis_errors(&self, limit: &str, fallback: &str) -> Counter {
        self.ratelimit_redis_errors
            .get_or_create(&vec![
                ("limit", limit.to_string()),
                ("fallback", fallback.to_string()),
            ])
            .clone()
    }

    /// Counts a request denied for its country. `country` is an ISO code
    /// or `unknown`, so the series stay a few hundred at most.
    pub fn ipfilter_denied_country(&self, country: &str) {
        self.ipfilter_denied_countries
            .get_or_create(&vec![("country", country.to_string())])
            .inc();
    }

    /// The counter of requests the IP filter denies for `reason`.
    pub fn ipfilter_denied(&self, reason: &'static str) -> Counter {
        self.ipfilter_denied
            .get_or_create(&vec![("reason", reason.to_string())])
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &r);
        }
        out
    }

    pub fn server_labels(&self, upstream: &str, server: SocketAddr) -> Labels {
        vec![
            ("upstream", upstream.to_string()),
            ("server", server.to_string()),
        ]
    }

    pub fn upstream_healthy(&self, labels: &Labels) -> Gauge {
        self.upstream_healthy.get_or_create_owned(labels)
    }

    pub fn upstream_failures(&self, labels: &Labels) -> Counter {
        self.upstream_failures.get_or_create_owned(labels)
    }

    pub fn upstream_ejections(&self, labels: &Labels) -> Counter {
        self.upstream_ejections.get_or_create_owned(labels)
    }

    pub fn set_cert_expiry(&self, cert: &str, not_after: i64) {
        self.tls_cert_not_after
            .get_or_create(&vec![("cert", cert.to_string())])
            .set(not_after);
    }

    pub fn reload_result(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Counts a request answered with our error page for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// The log-phase stage that counts requests and latency per route.
    /// `route_labels[i]` names route i.
    pub fn route_stage(&self, route_labels: &[String]) -> RouteMetrics {
        let handles = |route: &str| RouteHandles {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
                self.requests.get_or_create_owned(&vec![
                    ("route", route.to_string()),
                    ("status", class.to_string()),
                ])
            }),
            latency: self
                .latency
                .get_or_create_owned(&vec![("route", route.to_string())]),
        };
        RouteMetrics {
            routes: route_labels.iter().map(|l| handles(l)).collect(),
            unrouted: handles("none"),
            rejected: self.rejected.clone(),
        }
    }
}

struct RouteHandles {
    by_class: [ShardedCounter; 5],
    latency: LatencyHistogram,
}

pub struct RouteMetrics {
    routes: Vec<RouteHandles>,
    unrouted: RouteHandles,
    rejected: Family<Labels, Counter>,
}

impl Stage for RouteMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn on_log(&self, ctx: &RequestCtx, summary: &Summary) {
        let handles = ctx
            .route
            .and_then(|r| self.routes.get(r))
            .unwrap_or(&self.unrouted);
        let class = (summary.status / 100).clamp(1, 5) as usize - 1;
        handles.by_class[class].inc();
        handles.latency.observe(summary.duration);
        if let Some(e) = &ctx.error {
            self.rejected
                .get_or_create(&vec![("reason", e.kind().to_string())])
                .inc();
        }
    }
}
