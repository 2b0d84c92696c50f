//! The config file exactly as written: serde structs that reject unknown keys
//! and keep the source span of every value, so validation can point at the
//! line that is wrong. Nothing here is interpreted; see `validate.rs`.
//!
//! Every field is optional at this level: a missing required key is reported
//! by validation with the span of its table, alongside every other error,
//! instead of stopping deserialization at the first one.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<S<RawServer>>,
    #[serde(default)]
    pub upstreams: Vec<S<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<S<RawRoute>>,
    pub log: Option<S<RawLog>>,
    pub ipfilter: Option<S<RawIpFilter>>,
    pub ratelimit: Option<S<RawRateLimit>>,
    pub cache: Option<S<RawCache>>,
    pub compression: Option<S<RawCompression>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Vec<S<String>>>,
    pub admin_listen: Option<S<String>>,
    pub trusted_proxies: Option<Vec<S<String>>>,
    /// Response headers removed because they identify the backend.
    pub hide_headers: Option<Vec<S<String>>>,
    /// Replace the body of origin 5xx responses with our own error page.
    pub replace_error_pages: Option<S<bool>>,
    /// An HTML file used for our error pages; `{status}`, `{reason}` and
    /// `{request_id}` are substituted.
    pub error_page: Option<S<String>>,
    /// Runtime worker threads; 0 or absent: one per CPU core.
    pub workers: Option<S<i64>>,
    pub limits: Option<S<RawLimits>>,
    /// HTTPS listeners, one entry per certificate.
    pub tls: Option<Vec<S<RawTls>>>,
    /// Plain-HTTP listeners answer every request with a 308 to https.
    pub https_redirect: Option<S<bool>>,
    /// Strict-Transport-Security on HTTPS responses, e.g. "365d".
    pub hsts_max_age: Option<S<String>>,
    pub hsts_include_subdomains: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<Vec<S<String>>>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
    /// SNI names this certificate answers; absent: the names in it.
    pub names: Option<Vec<S<String>>>,
    /// The certificate for clients that send no (or an unknown) SNI name.
    pub default: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<S<i64>>,
    pub max_connections_per_client: Option<S<i64>>,
    pub header_read_timeout: Option<S<String>>,
    pub keepalive_timeout: Option<S<String>>,
    pub max_header_bytes: Option<S<String>>,
    pub max_uri_bytes: Option<S<String>>,
    pub max_headers: Option<S<i64>>,
    pub max_request_body: Option<S<String>>,
    /// Bytes per second a request body must keep up after the first
    /// `header_read_timeout` ("500", "1KiB"); "0" turns the check off.
    pub min_body_rate: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub drain_timeout: Option<S<String>>,
    pub h2_max_concurrent_streams: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawServerEntry {
    Address(String),
    Detailed {
        address: String,
        #[serde(default)]
        weight: Option<i64>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<S<String>>,
    pub servers: Option<Vec<S<RawServerEntry>>>,
    pub balance: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub response_timeout: Option<S<String>>,
    pub retries: Option<S<i64>>,
    pub max_idle_per_server: Option<S<i64>>,
    pub idle_timeout: Option<S<String>>,
    /// Consecutive connect failures or 5xx answers that eject a server.
    pub max_fails: Option<S<i64>>,
    /// How long an ejected server stays out before it is tried again.
    pub fail_timeout: Option<S<String>>,
    pub health_check: Option<S<RawHealthCheck>>,
    /// PEM CA certificates that `https://` servers are verified against
    /// (absent: the system's roots).
    pub tls_ca: Option<S<String>>,
    /// The name sent as SNI and checked in the backend's certificate
    /// (absent: the server's IP address).
    pub tls_server_name: Option<S<String>>,
    pub tls_insecure_skip_verify: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub expected_status: Option<S<i64>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub host: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub upstream: Option<S<String>>,
    /// This route's own IP filter, in place of the global `[ipfilter]`.
    pub ipfilter: Option<S<RawIpFilter>>,
    /// This route's cache settings, over the `[cache]` defaults.
    pub cache: Option<S<RawRouteCache>>,
    /// `compression = { enabled = false }` turns compression off here.
    pub compression: Option<S<RawRouteCompression>>,
    /// WebSocket upgrades are tunnelled to this route's backend.
    pub websocket: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "stdout", "stderr", "off" or a file path.
    pub access: Option<S<String>>,
    /// tracing filter for the diagnostic log, e.g. "info" or "palisade=debug".
    pub level: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpFilter {
    /// "denylist" (default: only denied addresses are refused) or
    /// "allowlist" (only allowed addresses get through).
    pub mode: Option<S<String>>,
    pub allow: Option<Vec<S<String>>>,
    pub deny: Option<Vec<S<String>>>,
    pub allow_files: Option<Vec<S<String>>>,
    pub deny_files: Option<Vec<S<String>>>,
    /// A MaxMind Country (or City) database.
    pub geoip_db: Option<S<String>>,
    /// A MaxMind ASN database.
    pub asn_db: Option<S<String>>,
    pub deny_countries: Option<Vec<S<String>>>,
    /// When set, only these countries get through.
    pub allow_countries: Option<Vec<S<String>>>,
    pub deny_asns: Option<Vec<S<i64>>>,
    /// "allow" (default) or "deny": addresses the country database does not
    /// know, when country rules are set.
    pub unknown_country: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Buckets kept in memory at most (default 1,000,000).
    pub max_keys: Option<S<i64>>,
    /// `RateLimit-Policy` and `RateLimit` on allowed responses too
    /// (default true).
    pub headers: Option<S<bool>>,
    #[serde(default)]
    pub limits: Vec<S<RawLimit>>,
    pub ban: Option<S<RawBan>>,
    /// The Redis server limits with `store = "redis"` share.
    pub redis: Option<S<RawRedis>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: Option<S<String>>,
    /// How long a decision may wait for Redis (default "50ms").
    pub timeout: Option<S<String>>,
    /// What every bucket key starts with (default "palisade:rl:").
    pub prefix: Option<S<String>>,
}

/// Repeat offenders: refused `after` times within `within`, refused
/// outright for `duration`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBan {
    pub after: Option<S<i64>>,
    pub within: Option<S<String>>,
    pub duration: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Names the limit in the `RateLimit` headers.
    pub name: Option<S<String>>,
    /// "client_ip", "client_ip+route", "header:NAME" or "cookie:NAME".
    pub key: Option<S<String>>,
    /// "100/s", "600/m", "1000/h".
    pub rate: Option<S<String>>,
    pub burst: Option<S<i64>>,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<S<String>>,
    /// Only these methods.
    pub methods: Option<Vec<S<String>>>,
    /// "memory" (default): this instance's own buckets; "redis": buckets
    /// shared through `[ratelimit.redis]`.
    pub store: Option<S<String>>,
    /// With `store = "redis"`, when Redis fails or is slow: "open" (default;
    /// decide with this instance's own bucket) or "closed" (answer 503).
    pub on_redis_error: Option<S<String>>,
}

/// `[cache]`: the store and the defaults every route starts from. The
/// key and policy fields are the ones a route may override in its own
/// `cache` table (`RawRouteCache`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Routes cache unless they say otherwise (default true).
    pub enabled: Option<S<bool>>,
    pub max_size: Option<S<String>>,
    pub max_object_size: Option<S<String>>,
    pub coalesce_timeout: Option<S<String>>,
    pub stale_if_error: Option<S<String>>,
    /// Request headers whose values become part of the key.
    pub key_headers: Option<Vec<S<String>>>,
    /// Cookies whose values become part of the key.
    pub key_cookies: Option<Vec<S<String>>>,
    /// Query parameters left out of the key.
    pub ignore_query_params: Option<Vec<S<String>>>,
    /// Store responses with Set-Cookie (default false).
    pub store_set_cookie: Option<S<bool>>,
    /// Heuristic freshness as a fraction of the time since Last-Modified.
    pub heuristic_fraction: Option<S<f64>>,
    pub heuristic_max: Option<S<String>>,
    /// Freshness for responses that state none (instead of the heuristic).
    pub default_ttl: Option<S<String>>,
}

/// Per-route cache settings (`[routes.cache]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub enabled: Option<S<bool>>,
    /// Request headers whose values become part of the key.
    pub key_headers: Option<Vec<S<String>>>,
    /// Cookies whose values become part of the key.
    pub key_cookies: Option<Vec<S<String>>>,
    /// Query parameters left out of the key.
    pub ignore_query_params: Option<Vec<S<String>>>,
    /// Store responses with Set-Cookie (default false).
    pub store_set_cookie: Option<S<bool>>,
    /// Heuristic freshness as a fraction of the time since Last-Modified.
    pub heuristic_fraction: Option<S<f64>>,
    pub heuristic_max: Option<S<String>>,
    /// Freshness for responses that state none (instead of the heuristic).
    pub default_ttl: Option<S<String>>,
}

/// `[compression]`: responses compressed on the way out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// Routes compress unless they say otherwise (default true).
    pub enabled: Option<S<bool>>,
    /// Codings offered, in order of preference: "br", "zstd", "gzip".
    pub algorithms: Option<Vec<S<String>>>,
    pub min_size: Option<S<String>>,
    /// Media types; an entry ending in '/' is a prefix ("text/").
    pub types: Option<Vec<S<String>>>,
    pub gzip_level: Option<S<i64>>,
    pub brotli_level: Option<S<i64>>,
    pub zstd_level: Option<S<i64>>,
    /// Decode gzip/deflate/br/zstd request bodies for inspection (default
    /// true); unknown codings are refused with 415.
    pub decode_requests: Option<S<bool>>,
    /// The most a decoded request body may be (default "10MiB").
    pub max_decoded_body: Option<S<String>>,
    /// The most a request body may grow when decoded (default 100).
    pub max_decode_ratio: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCompression {
    pub enabled: Option<S<bool>>,
}
