//! Configuration: the validated, immutable `Config` the rest of Palisade is
//! built from, and loading it from a TOML file with every error reported as
//! `file:line:col: message`.
//!
//! `raw.rs` is the file as written (serde, unknown keys rejected), `parse.rs`
//! turns text into it collecting all structural errors, `validate.rs` checks
//! meaning (addresses, durations, references between sections, files) and
//! fills in defaults.

mod diag;
mod parse;
mod raw;
pub mod tls;
pub mod units;
mod validate;
mod validate_cache;
mod validate_compression;
mod validate_ipfilter;
mod validate_ratelimit;
mod validate_tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::pki_types::ServerName;

pub use diag::{ConfigErrors, Diagnostic};

/// A validated configuration. Built once per load or reload and then shared
/// read-only.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; relative paths in it were resolved against its folder.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub log: LogConfig,
    /// `[ipfilter]`, when the file has one.
    pub ipfilter: Option<IpFilterConfig>,
    /// `[ratelimit]`, when the file has one.
    pub ratelimit: Option<RateLimitConfig>,
    /// `[cache]`, when the file has one.
    pub cache: Option<crate::cache::CacheConfig>,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub max_keys: usize,
    /// Bans of clients refused too often.
    pub ban: Option<crate::ratelimit::ban::BanPolicy>,
    /// Send the `RateLimit` fields on allowed responses too.
    pub headers: bool,
    pub limits: Vec<LimitConfig>,
    /// `[ratelimit.redis]`, for limits with `store = "redis"`.
    pub redis: Option<RedisConfig>,
}

/// Where fleet-wide buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// The longest a decision waits for Redis before the limit's fallback.
    pub timeout: std::time::Duration,
    pub prefix: String,
}

/// What a limit kept in Redis does when Redis fails or is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFallback {
    /// Decide with this instance's own bucket.
    Open,
    /// Refuse with 503.
    Closed,
}

/// One `[[ratelimit.limits]]` entry.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub name: String,
    pub key: LimitKey,
    pub rate: crate::ratelimit::bucket::Rate,
    /// Only requests under this path; None: all.
    pub path_prefix: Option<String>,
    /// Only these methods; empty: all.
    pub methods: Vec<http::Method>,
    /// Some when the limit's buckets live in Redis: what to do without it.
    pub shared: Option<RedisFallback>,
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    ClientIpRoute,
    Header(HeaderName),
    Cookie(String),
}

/// Which addresses `[ipfilter]` lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFilterMode {
    /// Everyone but the denied (allow blocks carve exceptions out of them).
    Denylist,
    /// Only the allowed (deny blocks carve exceptions out of them).
    Allowlist,
}

#[derive(Debug, Clone)]
pub struct IpFilterConfig {
    pub mode: IpFilterMode,
    pub map: Arc<crate::ipgeo::cidr::CidrMap>,
    pub geo: Option<Arc<GeoRules>>,
}

/// Country and ASN rules of `[ipfilter]`, with their databases.
#[derive(Debug)]
pub struct GeoRules {
    pub countries: Option<crate::ipgeo::geo::GeoDb>,
    pub asns: Option<crate::ipgeo::geo::GeoDb>,
    pub deny_countries: Vec<crate::ipgeo::geo::CountryCode>,
    /// Empty: every country not denied gets through.
    pub allow_countries: Vec<crate::ipgeo::geo::CountryCode>,
    pub deny_asns: Vec<u32>,
    /// Whether an address the country database does not know is denied
    /// (only asked when there are country rules).
    pub deny_unknown_country: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub hide_headers: Vec<HeaderName>,
    pub replace_error_pages: bool,
    /// Contents of the custom error page template, if one is configured.
    pub error_page: Option<String>,
    /// Worker threads of the async runtime (0: one per core).
    pub workers: usize,
    pub limits: Limits,
    /// `[[server.tls]]` certificates, in config order.
    pub tls: Vec<TlsCertConfig>,
    /// Every HTTPS listen address, in config order.
    pub tls_listen: Vec<SocketAddr>,
    /// Plain-HTTP requests get a 308 to the same URL over https.
    pub https_redirect: bool,
    /// The Strict-Transport-Security value for HTTPS responses.
    pub hsts: Option<HeaderValue>,
}

/// One `[[server.tls]]` entry with its files loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsCertConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The HTTPS addresses that serve this certificate.
    pub listen: Vec<SocketAddr>,
    /// SNI names, lower case; `*.example.com` matches one label.
    pub names: Vec<String>,
    pub default: bool,
    pub loaded: tls::LoadedCert,
}

/// Connection and request limits. Defaults are safe for an edge proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    /// Open connections per client (TCP peer) address; 0: no limit.
    /// Trusted proxies are exempt.
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    /// The longest request target (path and query) accepted; longer gets 414.
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_request_body: u64,
    /// Bytes per second an HTTP/1 request body must average once
    /// `header_read_timeout` has passed since its head; 0: no check.
    pub min_body_rate: u64,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_client: 0,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            max_request_body: 1024 * 1024,
            min_body_rate: 500,
            request_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            h2_max_concurrent_streams: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Weighted,
    LeastConn,
    IpHash,
}

#[derive(Debug, Clone)]
pub struct UpstreamServer {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `https://`: TLS to this server with the upstream's `tls` settings.
    pub tls: bool,
}

/// TLS towards an upstream's `https://` servers.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub client: Arc<rustls::ClientConfig>,
    /// SNI and the name verified; `None`: the server's IP address.
    pub server_name: Option<ServerName<'static>>,
    pub skip_verify: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Extra attempts on another server after a failed one.
    pub retries: u32,
    pub max_idle_per_server: usize,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheckConfig>,
    /// Set when some server is `https://`.
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub expected_status: u16,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: stores ".example.com".
    Suffix(String),
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostMatch,
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Replaces the global `[ipfilter]` for this route.
    pub ipfilter: Option<IpFilterConfig>,
    /// How this route caches; `None`: it does not.
    pub cache: Option<crate::cache::CacheRules>,
    /// How this route compresses; `None`: it does not.
    pub compression: Option<crate::compress::CompressionConfig>,
    /// WebSocket upgrades are tunnelled to the backend once it answers 101;
    /// elsewhere `Upgrade` is dropped and the request stays plain HTTP.
    pub websocket: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub access: AccessLogTarget,
    pub level: String,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                col: 1,
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Self::from_str_at(path, &text)
    }

    /// Validates `text` as if it were the contents of `path` (used in
    /// messages and to resolve relative paths).
    pub fn from_str_at(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut diag = diag::Collector::new(path, text);
        let raw = parse::parse_raw(text, &mut diag);
        let config = raw.and_then(|raw| validate::validate(raw, &mut diag));
        match config {
            Some(config) if diag.is_empty() => Ok(config),
            _ => Err(ConfigErrors(diag.finish())),
        }
    }
}
