//! Validation of `[ratelimit]`: each limit's key, rate, burst and scope.

use std::time::Duration;

use http::{HeaderName, Method};

use super::diag::Collector;
use super::raw::{RawBan, RawLimit, RawRateLimit, RawRedis, S};
use super::validate::{duration, path_prefix};
use super::{LimitConfig, LimitKey, RateLimitConfig, RedisConfig, RedisFallback};
use crate::ratelimit::ban::BanPolicy;
use crate::ratelimit::bucket::Rate;

const DEFAULT_MAX_KEYS: usize = 1_000_000;

pub fn ratelimit(
    raw: Option<&S<RawRateLimit>>,
    diag: &mut Collector<'_>,
) -> Option<RateLimitConfig> {
    let raw = raw?.get_ref();
    let max_keys = match &raw.max_keys {
        None => DEFAULT_MAX_KEYS,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                diag.error(n.span(), "ratelimit.max_keys must be a positive number");
                DEFAULT_MAX_KEYS
            }
        },
    };
    let redis = raw.redis.as_ref().and_then(|r| redis(r, diag));
    let limits = raw
        .limits
        .iter()
        .enumerate()
        .filter_map(|(i, l)| limit(i, l, raw.redis.is_some(), diag))
        .collect();
    let headers = raw.headers.as_ref().is_none_or(|h| *h.get_ref());
    let ban = raw.ban.as_ref().and_then(|b| ban(b, diag));
    Some(RateLimitConfig {
        max_keys,
        ban,
        headers,
        limits,
        redis,
    })
}

fn limit(
    index: usize,
    raw: &S<RawLimit>,
    has_redis: bool,
    diag: &mut Collector<'_>,
) -> Option<LimitConfig> {
    let span = raw.span();
    let raw = raw.get_ref();
    // Checked first, used last: its error does not hide the others.
    let shared = store(raw, has_redis, diag);
    let key = match &raw.key {
        None => LimitKey::ClientIp,
        Some(k) => match parse_key(k.get_ref()) {
            Ok(key) => key,
            Err(message) => {
                diag.error(k.span(), message);
                return None;
            }
        },
    };
    let Some(rate_text) = &raw.rate else {
        diag.error(span, "limit has no `rate` (e.g. \"100/s\")");
        return None;
    };
    let (count, period) = match parse_rate(rate_text.get_ref()) {
        Ok(r) => r,
        Err(message) => {
            diag.error(rate_text.span(), message);
            return None;
        }
    };
    let burst = match &raw.burst {
        None => u32::try_from(count).unwrap_or(u32::MAX),
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(b) if b > 0 => b,
            _ => {
                diag.error(b.span(), "burst must be a positive number");
                return None;
            }
        },
    };
    let rate = Rate::new(count, period, burst)?;
    let methods = raw
        .methods
        .iter()
        .flatten()
        .filter_map(
            |m| match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    diag.error(m.span(), format!("{:?} is not an HTTP method", m.get_ref()));
                    None
                }
            },
        )
        .collect();
    Some(LimitConfig {
        name: raw
            .name
            .as_ref()
            .map_or_else(|| format!("limit{}", index + 1), |n| n.get_ref().clone()),
        key,
        rate,
        path_prefix: path_prefix(raw.path_prefix.as_ref(), diag),
        methods,
        shared: shared?,
    })
}

/// Where a limit keeps its buckets: `Some(None)` in memory, `Some(Some(f))`
/// in Redis with fallback `f`; None after an error.
fn store(
    raw: &RawLimit,
    has_redis: bool,
    diag: &mut Collector<'_>,
) -> Option<Option<RedisFallback>> {
    let fallback = match &raw.on_redis_error {
        None => RedisFallback::Open,
        Some(f) => match f.get_ref().as_str() {
            "open" => RedisFallback::Open,
            "closed" => RedisFallback::Closed,
            other => {
                diag.error(
                    f.span(),
                    format!("on_redis_error {other:?}: expected \"open\" or \"closed\""),
                );
                return None;
            }
        },
    };
    match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => {
            if let Some(f) = &raw.on_redis_error {
                diag.error(
                    f.span(),
                    "on_redis_error applies only with store = \"redis\"",
                );
                return None;
            }
            Some(None)
        }
        Some(("redis", span)) => {
            if !has_redis {
                diag.error(
                    span,
                    "store = \"redis\" needs a [ratelimit.redis] table with the server's url",
                );
                return None;
            }
            Some(Some(fallback))
        }
        Some((other, span)) => {
            diag.error(
                span,
                format!("store {other:?}: expected \"memory\" or \"redis\""),
            );
            None
        }
    }
}

const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

fn redis(raw: &S<RawRedis>, diag: &mut Collector<'_>) -> Option<RedisConfig> {
    let span = raw.span();
    let raw = raw.get_ref();
    let timeout = duration(&raw.timeout, DEFAULT_REDIS_TIMEOUT, diag);
    let timeout_ok = !timeout.is_zero();
    if let Some(t) = raw.timeout.as_ref().filter(|_| !timeout_ok) {
        diag.error(t.span(), "ratelimit.redis.timeout must be more than 0");
    }
    let Some(url) = &raw.url else {
        diag.error(
            span,
            "[ratelimit.redis] needs `url` (e.g. \"redis://127.0.0.1:6379\")",
        );
        return None;
    };
    let url_text = url.get_ref();
    if !(url_text.starts_with("redis://") || url_text.starts_with("redis+unix://"))
        || redis::Client::open(url_text.as_str()).is_err()
    {
        diag.error(
            url.span(),
            "ratelimit.redis.url must look like redis://HOST:PORT[/DB] or redis+unix:///PATH",
        );
        return None;
    }
    timeout_ok.then(|| RedisConfig {
        url: url_text.clone(),
        timeout,
        prefix: raw
            .prefix
            .as_ref()
            .map_or_else(|| "palisade:rl:".to_string(), |p| p.get_ref().clone()),
    })
}

fn parse_key(text: &str) -> Result<LimitKey, String> {
    match text {
        "client_ip" => Ok(LimitKey::ClientIp),
        "client_ip+route" => Ok(LimitKey::ClientIpRoute),
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                HeaderName::from_bytes(name.as_bytes())
                    .map(LimitKey::Header)
                    .map_err(|_| format!("{name:?} is not a header name"))
            } else if let Some(name) = text.strip_prefix("cookie:")
                && !name.is_empty()
            {
                Ok(LimitKey::Cookie(name.to_string()))
            } else {
                Err(format!(
                    "limit key {text:?}: expected client_ip, client_ip+route, header:NAME or cookie:NAME"
                ))
            }
        }
    }
}

/// "100/s", "600/m", "1000/h", "5/d".
fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("rate {text:?}: expected a count per unit, like \"100/s\" or \"600/m\"");
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("rate {text:?}: the count must be at least 1"));
    }
    Ok((count, period))
}

fn ban(raw: &S<RawBan>, diag: &mut Collector<'_>) -> Option<BanPolicy> {
    let span = raw.span();
    let raw = raw.get_ref();
    let after = match &raw.after {
        Some(a) => match u32::try_from(*a.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                diag.error(a.span(), "ban.after must be a positive number");
                return None;
            }
        },
        None => {
            diag.error(span, "ban needs `after` (refusals before a ban)");
            return None;
        }
    };
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Some(BanPolicy {
        after,
        within: nanos(duration(&raw.within, Duration::from_secs(60), diag)),
        duration: nanos(duration(&raw.duration, Duration::from_secs(600), diag)),
    })
}
