//! `RawConfig` to `Config`: meaning checks and defaults. Every problem is
//! recorded with the span of the value at fault and checking goes on, so one
//! run reports all of them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::diag::Collector;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::*;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
const MAX_SERVERS_PER_UPSTREAM: usize = 128;
const DEFAULT_HIDDEN_HEADERS: [&str; 4] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

pub fn validate(raw: RawConfig, diag: &mut Collector<'_>) -> Option<Config> {
    let base = diag
        .file()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let server = server(raw.server, &base, diag);
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .filter_map(|u| upstream(u, &base, diag))
        .collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, (raw_u, u)) in raw.upstreams.iter().zip(&upstreams).enumerate() {
        if names.insert(&u.name, i).is_some() {
            let span = raw_u
                .get_ref()
                .name
                .as_ref()
                .map_or(raw_u.span(), |n| n.span());
            diag.error(span, format!("upstream {:?} is defined twice", u.name));
        }
    }
    if raw.routes.is_empty() {
        diag.error(0..0, "no [[routes]]: every request would get 404");
    }
    let cache = super::validate_cache::cache(raw.cache.as_ref(), diag);
    let compression = super::validate_compression::compression(raw.compression.as_ref(), diag);
    let shared = Shared {
        upstreams: &names,
        cache: cache.as_ref(),
        compression: compression.as_ref(),
    };
    let routes = raw
        .routes
        .iter()
        .filter_map(|r| route(r, &shared, &base, diag))
        .collect();
    let log = log(raw.log, &base, diag);
    let ipfilter = super::validate_ipfilter::ipfilter(raw.ipfilter.as_ref(), &base, diag);
    let ratelimit = super::validate_ratelimit::ratelimit(raw.ratelimit.as_ref(), diag);
    Some(Config {
        source: diag.file().to_path_buf(),
        server,
        upstreams,
        routes,
        log,
        ipfilter,
        ratelimit,
        cache,
    })
}

fn server(raw: Option<S<RawServer>>, base: &Path, diag: &mut Collector<'_>) -> ServerConfig {
    let (span, raw) = match raw {
        Some(s) => (s.span(), s.into_inner()),
        None => (0..0, RawServer::default()),
    };
    let listen = match &raw.listen {
        Some(list) if list.is_empty() => {
            if raw.tls.as_ref().is_none_or(|t| t.is_empty()) {
                diag.error(span.clone(), "server.listen is empty: nothing to serve on");
            }
            Vec::new()
        }
        Some(list) => list.iter().filter_map(|a| socket_addr(a, diag)).collect(),
        None => DEFAULT_LISTEN.parse().into_iter().collect(),
    };
    let admin_listen = match &raw.admin_listen {
        Some(a) if a.get_ref() == "off" => None,
        Some(a) => socket_addr(a, diag),
        None => DEFAULT_ADMIN.parse().ok(),
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .flatten()
        .filter_map(|c| cidr(c, diag))
        .collect();
    let hide_headers = match &raw.hide_headers {
        Some(list) => list
            .iter()
            .filter_map(|h| match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    diag.error(h.span(), format!("{:?} is not a header name", h.get_ref()));
                    None
                }
            })
            .collect(),
        None => DEFAULT_HIDDEN_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect(),
    };
    let error_page = raw.error_page.as_ref().and_then(|p| {
        let path = resolve(base, p.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                diag.error(p.span(), format!("error_page {}: {e}", path.display()));
                None
            }
        }
    });
    let limits = raw
        .limits
        .as_ref()
        .map(|l| limits(l.get_ref(), diag))
        .unwrap_or_default();
    let (tls, tls_listen) =
        super::validate_tls::tls_entries(raw.tls.as_deref(), &listen, base, diag);
    let https_redirect = raw.https_redirect.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(flag) = &raw.https_redirect
        && https_redirect
        && tls_listen.is_empty()
    {
        diag.error(
            flag.span(),
            "https_redirect needs an HTTPS listener ([[server.tls]])",
        );
    }
    let hsts = super::validate_tls::hsts(&raw, diag);
    let mut hide_headers: Vec<HeaderName> = hide_headers;
    if hsts.is_some() && !hide_headers.contains(&http::header::STRICT_TRANSPORT_SECURITY) {
        // Ours replaces the origin's, rather than two disagreeing.
        hide_headers.push(http::header::STRICT_TRANSPORT_SECURITY);
    }
    ServerConfig {
        listen,
        admin_listen,
        trusted_proxies,
        hide_headers,
        replace_error_pages: raw.replace_error_pages.is_none_or(|b| *b.get_ref()),
        error_page,
        workers: count(&raw.workers, 0, 0, 1024, diag),
        limits,
        tls,
        tls_listen,
        https_redirect,
        hsts,
    }
}

fn limits(raw: &RawLimits, diag: &mut Collector<'_>) -> Limits {
    let d = Limits::default();
    Limits {
        max_connections: count(&raw.max_connections, d.max_connections, 1, 10_000_000, diag),
        max_connections_per_client: count(
            &raw.max_connections_per_client,
            d.max_connections_per_client,
            0,
            10_000_000,
            diag,
        ),
        header_read_timeout: duration(&raw.header_read_timeout, d.header_read_timeout, diag),
        keepalive_timeout: duration(&raw.keepalive_timeout, d.keepalive_timeout, diag),
        max_header_bytes: size(&raw.max_header_bytes, d.max_header_bytes as u64, 8192, diag)
            as usize,
        max_uri_bytes: size(&raw.max_uri_bytes, d.max_uri_bytes as u64, 256, diag) as usize,
        max_headers: count(&raw.max_headers, d.max_headers, 1, 10_000, diag),
        max_request_body: size(&raw.max_request_body, d.max_request_body, 0, diag),
        min_body_rate: size(&raw.min_body_rate, d.min_body_rate, 0, diag),
        request_timeout: duration(&raw.request_timeout, d.request_timeout, diag),
        drain_timeout: duration(&raw.drain_timeout, d.drain_timeout, diag),
        h2_max_concurrent_streams: count(
            &raw.h2_max_concurrent_streams,
            d.h2_max_concurrent_streams as usize,
            1,
            10_000,
            diag,
        ) as u32,
    }
}

fn upstream(raw: &S<RawUpstream>, base: &Path, diag: &mut Collector<'_>) -> Option<UpstreamConfig> {
    let span = raw.span();
    let raw = raw.get_ref();
    let Some(name) = &raw.name else {
        diag.error(span, "upstream has no `name`");
        return None;
    };
    let servers: Vec<UpstreamServer> = match &raw.servers {
        None => {
            diag.error(
                span.clone(),
                format!("upstream {:?} has no `servers`", name.get_ref()),
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .filter_map(|s| upstream_server(s, diag))
            .collect(),
    };
    if raw.servers.as_ref().is_some_and(|l| l.is_empty()) {
        diag.error(
            span.clone(),
            format!("upstream {:?} has an empty `servers` list", name.get_ref()),
        );
    }
    if servers.len() > MAX_SERVERS_PER_UPSTREAM {
        diag.error(
            span.clone(),
            format!("upstream has more than {MAX_SERVERS_PER_UPSTREAM} servers"),
        );
    }
    let balance = match raw
        .balance
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("round_robin", _)) => Balance::RoundRobin,
        Some(("weighted", _)) => Balance::Weighted,
        Some(("least_conn", _)) => Balance::LeastConn,
        Some(("ip_hash", _)) => Balance::IpHash,
        Some((other, span)) => {
            diag.error(
                span,
                format!(
                    "unknown balance {other:?} (use round_robin, weighted, least_conn or ip_hash)"
                ),
            );
            Balance::RoundRobin
        }
    };
    let health_check = raw
        .health_check
        .as_ref()
        .map(|h| health_check(h.get_ref(), diag));
    let tls = super::validate_tls::upstream_tls(raw, &servers, base, diag);
    Some(UpstreamConfig {
        name: name.get_ref().clone(),
        servers,
        balance,
        connect_timeout: duration(&raw.connect_timeout, Duration::from_secs(5), diag),
        response_timeout: duration(&raw.response_timeout, Duration::from_secs(60), diag),
        retries: count(&raw.retries, 1, 0, 16, diag) as u32,
        max_idle_per_server: count(&raw.max_idle_per_server, 256, 0, 100_000, diag),
        idle_timeout: duration(&raw.idle_timeout, Duration::from_secs(60), diag),
        max_fails: count(&raw.max_fails, 3, 0, 1000, diag) as u32,
        fail_timeout: duration(&raw.fail_timeout, Duration::from_secs(10), diag),
        health_check,
        tls,
    })
}

fn upstream_server(raw: &S<RawServerEntry>, diag: &mut Collector<'_>) -> Option<UpstreamServer> {
    let (address, weight) = match raw.get_ref() {
        RawServerEntry::Address(a) => (a, None),
        RawServerEntry::Detailed { address, weight } => (address, *weight),
    };
    let weight = match weight {
        None => 1,
        Some(w) if (1..=1000).contains(&w) => w as u32,
        Some(w) => {
            diag.error(
                raw.span(),
                format!("weight {w} is out of range (1 to 1000)"),
            );
            1
        }
    };
    let (tls, address) = match address.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => (false, address.as_str()),
    };
    match address.parse::<SocketAddr>() {
        Ok(addr) => Some(UpstreamServer { addr, weight, tls }),
        Err(_) => {
            diag.error(
                raw.span(),
                format!(
                    "{address:?} is not an IP:port address (optionally after http:// or https://)"
                ),
            );
            None
        }
    }
}

fn health_check(raw: &RawHealthCheck, diag: &mut Collector<'_>) -> HealthCheckConfig {
    let path = raw
        .path
        .as_ref()
        .map_or("/".to_string(), |p| p.get_ref().clone());
    if let Some(p) = &raw.path
        && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        diag.error(
            p.span(),
            format!("health check path {path:?} must be an absolute path"),
        );
    }
    let expected_status = count(&raw.expected_status, 200, 100, 599, diag) as u16;
    HealthCheckConfig {
        path,
        host: raw.host.as_ref().map(|h| h.get_ref().clone()),
        interval: duration(&raw.interval, Duration::from_secs(5), diag),
        timeout: duration(&raw.timeout, Duration::from_secs(2), diag),
        expected_status,
        rise: count(&raw.rise, 2, 1, 100, diag) as u32,
        fall: count(&raw.fall, 3, 1, 100, diag) as u32,
    }
}

/// What routes refer to or inherit from the rest of the file.
struct Shared<'a> {
    upstreams: &'a HashMap<&'a str, usize>,
    cache: Option<&'a crate::cache::CacheConfig>,
    compression: Option<&'a (crate::compress::CompressionConfig, bool)>,
}

fn route(
    raw: &S<RawRoute>,
    shared: &Shared<'_>,
    base: &Path,
    diag: &mut Collector<'_>,
) -> Option<RouteConfig> {
    let upstreams = shared.upstreams;
    let span = raw.span();
    let raw = raw.get_ref();
    let host = match &raw.host {
        None => HostMatch::Any,
        Some(h) => match host_match(h.get_ref()) {
            Ok(m) => m,
            Err(msg) => {
                diag.error(h.span(), msg);
                HostMatch::Any
            }
        },
    };
    let path_prefix = path_prefix(raw.path_prefix.as_ref(), diag).unwrap_or_else(|| "/".into());
    let upstream = match &raw.upstream {
        None => {
            diag.error(span, "route has no `upstream`");
            return None;
        }
        Some(u) => match upstreams.get(u.get_ref().as_str()) {
            Some(i) => *i,
            None => {
                diag.error(
                    u.span(),
                    format!("route names unknown upstream {:?}", u.get_ref()),
                );
                return None;
            }
        },
    };
    let ipfilter = super::validate_ipfilter::ipfilter(raw.ipfilter.as_ref(), base, diag);
    let cache = super::validate_cache::route_cache(raw.cache.as_ref(), shared.cache, diag);
    let compression = super::validate_compression::route_compression(
        raw.compression.as_ref(),
        shared.compression,
        diag,
    );
    Some(RouteConfig {
        host,
        path_prefix,
        upstream,
        ipfilter,
        cache,
        compression,
        websocket: raw.websocket.as_ref().is_some_and(|w| *w.get_ref()),
    })
}

/// A `path_prefix` as written, checked to start with '/'.
pub(super) fn path_prefix(raw: Option<&S<String>>, diag: &mut Collector<'_>) -> Option<String> {
    let p = raw?;
    if !p.get_ref().starts_with('/') {
        diag.error(
            p.span(),
            format!("path_prefix {:?} must start with '/'", p.get_ref()),
        );
    }
    Some(p.get_ref().clone())
}

fn host_match(pattern: &str) -> Result<HostMatch, String> {
    let lower = pattern.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if lower == "*" {
        Ok(HostMatch::Any)
    } else if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            Ok(HostMatch::Suffix(format!(".{rest}")))
        } else {
            Err(format!("host pattern {pattern:?} is not `*.domain`"))
        }
    } else if valid(&lower) {
        Ok(HostMatch::Exact(lower))
    } else {
        Err(format!(
            "host pattern {pattern:?} must be a name, `*.domain` or `*`"
        ))
    }
}

fn log(raw: Option<S<RawLog>>, base: &Path, diag: &mut Collector<'_>) -> LogConfig {
    let raw = raw.map(|r| r.into_inner()).unwrap_or_default();
    let access = match raw.access.as_ref() {
        None => AccessLogTarget::Stdout,
        Some(a) => match a.get_ref().as_str() {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "stderr" => AccessLogTarget::Stderr,
            path => {
                let path = resolve(base, path);
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    diag.error(
                        a.span(),
                        format!("access log folder {} does not exist", dir.display()),
                    );
                }
                AccessLogTarget::File(path)
            }
        },
    };
    LogConfig {
        access,
        level: raw.level.map_or("info".to_string(), |l| l.into_inner()),
    }
}

pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn socket_addr(raw: &S<String>, diag: &mut Collector<'_>) -> Option<SocketAddr> {
    match raw.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.error(
                raw.span(),
                format!("{:?} is not an IP:port address", raw.get_ref()),
            );
            None
        }
    }
}

fn cidr(raw: &S<String>, diag: &mut Collector<'_>) -> Option<IpNet> {
    let text = raw.get_ref().trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    diag.error(raw.span(), format!("{text:?} is not an IP address or CIDR"));
    None
}

pub(super) fn duration(
    raw: &Option<S<String>>,
    default: Duration,
    diag: &mut Collector<'_>,
) -> Duration {
    match raw {
        None => default,
        Some(v) => parse_duration(v.get_ref()).unwrap_or_else(|msg| {
            diag.error(v.span(), msg);
            default
        }),
    }
}

fn size(raw: &Option<S<String>>, default: u64, min: u64, diag: &mut Collector<'_>) -> u64 {
    match raw {
        None => default,
        Some(v) => match parse_size(v.get_ref()) {
            Ok(n) if n >= min => n,
            Ok(n) => {
                diag.error(
                    v.span(),
                    format!("size {n} is below the minimum of {min} bytes"),
                );
                default
            }
            Err(msg) => {
                diag.error(v.span(), msg);
                default
            }
        },
    }
}

fn count(
    raw: &Option<S<i64>>,
    default: usize,
    min: i64,
    max: i64,
    diag: &mut Collector<'_>,
) -> usize {
    match raw {
        None => default,
        Some(v) if (min..=max).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            diag.error(
                v.span(),
                format!("{} is out of range ({min} to {max})", v.get_ref()),
            );
            default
        }
    }
}
