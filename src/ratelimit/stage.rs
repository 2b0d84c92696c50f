//! The rate-limit stage: every limit that applies to the request (its
//! path and method) must have a token for the request's key; otherwise 429
//! with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields
//! of the limit that refused it.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, request};

use super::ban::{BanList, BanPolicy};
use super::bucket::{Clock, Decision, SystemClock};
use super::store::MemoryStore;
use crate::admin::metrics::Metrics;
use crate::config::{Config, LimitConfig, LimitKey};
use crate::pipeline::{RequestCtx, Stage, Verdict};
use crate::server::respond::{ProxyError, RateLimited};
use prometheus_client::metrics::counter::Counter;

const NANOS: u64 = 1_000_000_000;

pub struct RateLimiter {
    limits: Vec<LimitConfig>,
    /// Where repeat offenders are banned, and when.
    ban: Option<(Arc<BanList>, BanPolicy)>,
    /// Per limit, what its bucket keys start with: a digest of its name,
    /// key and rate, so a reload that keeps a limit keeps its buckets and
    /// one that changes it starts afresh.
    ids: Vec<u64>,
    /// Per limit, its `RateLimit-Policy` value and its name as quoted in
    /// `RateLimit` (neither changes).
    policies: Vec<HeaderValue>,
    names: Vec<String>,
    /// Per limit: its name for the access log, and its 429 counter.
    labels: Vec<Arc<str>>,
    refused: Vec<Counter>,
    /// Whether allowed responses carry the `RateLimit` fields.
    headers: bool,
    store: Arc<MemoryStore>,
    clock: Arc<dyn Clock>,
}

impl RateLimiter {
    /// The stage for `config`'s limits, if it has any.
    /// `previous` is the store of the snapshot this one replaces: a reload
    /// keeps it (and every client's state) unless `max_keys` changed.
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&Arc<MemoryStore>>,
        bans: &Arc<BanList>,
    ) -> Option<RateLimiter> {
        Self::with_clock(
            config,
            metrics,
            previous,
            bans,
            Arc::new(SystemClock::new()),
        )
    }

    pub fn with_clock(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&Arc<MemoryStore>>,
        bans: &Arc<BanList>,
        clock: Arc<dyn Clock>,
    ) -> Option<RateLimiter> {
        let rl = config.ratelimit.as_ref().filter(|r| !r.limits.is_empty())?;
        let store = match previous {
            Some(store) if store.max_keys() == rl.max_keys => Arc::clone(store),
            _ => Arc::new(MemoryStore::new(rl.max_keys)),
        };
        Some(RateLimiter {
            ban: rl.ban.map(|policy| (Arc::clone(bans), policy)),
            ids: rl.limits.iter().map(limit_id).collect(),
            store,
            labels: rl
                .limits
                .iter()
                .map(|l| Arc::from(l.name.as_str()))
                .collect(),
            refused: rl
                .limits
                .iter()
                .map(|l| metrics.ratelimit_refused(&l.name))
                .collect(),
            policies: rl.limits.iter().map(policy).collect(),
            names: rl.limits.iter().map(quoted_name).collect(),
            limits: rl.limits.clone(),
            headers: rl.headers,
            clock,
        })
    }

    /// The bucket store, for the snapshot that replaces this one.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The key of the limit with id `id` for this request; None when the
    /// request has no such value (no header, no cookie): the limit does
    /// not apply.
    fn key(
        id: u64,
        limit: &LimitConfig,
        ctx: &RequestCtx,
        head: &request::Parts,
    ) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(48);
        key.extend_from_slice(&id.to_le_bytes());
        let ip = |key: &mut Vec<u8>| match ctx.client_ip.to_canonical() {
            std::net::IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
            std::net::IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
        };
        match &limit.key {
            LimitKey::ClientIp => ip(&mut key),
            LimitKey::ClientIpRoute => {
                ip(&mut key);
                key.push(0);
                key.extend_from_slice(&ctx.route.unwrap_or(usize::MAX).to_le_bytes());
            }
            LimitKey::Header(name) => key.extend_from_slice(head.headers.get(name)?.as_bytes()),
            LimitKey::Cookie(name) => key.extend_from_slice(cookie(head, name)?),
        }
        Some(key)
    }
}

/// A limit's identity for its bucket keys.
fn limit_id(limit: &LimitConfig) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    limit.name.hash(&mut h);
    format!("{:?}", limit.key).hash(&mut h);
    limit.rate.interval.hash(&mut h);
    limit.rate.burst.hash(&mut h);
    h.finish()
}

/// The value of cookie `name`, from any `Cookie` field.
fn cookie<'h>(head: &'h request::Parts, name: &str) -> Option<&'h [u8]> {
    head.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (n, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (n == name.as_bytes()).then_some(&v[1..])
        })
}

fn applies(limit: &LimitConfig, ctx: &RequestCtx) -> bool {
    limit
        .path_prefix
        .as_ref()
        .is_none_or(|p| ctx.path.starts_with(p.as_str()))
        && (limit.methods.is_empty() || limit.methods.contains(&ctx.method))
}

/// A limit's name as the content of a structured-field string.
fn quoted_name(limit: &LimitConfig) -> String {
    limit
        .name
        .chars()
        .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
        .collect()
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers) of a limit.
fn policy(limit: &LimitConfig) -> HeaderValue {
    let text = format!(
        "\"{}\";q={};w={}",
        quoted_name(limit),
        limit.rate.quota,
        limit.rate.window_secs
    );
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("\"limit\""))
}

/// `RateLimit` of the limit named `name` (see `quoted_name`) after one
/// decision.
fn state(name: &str, d: &Decision) -> HeaderValue {
    let text = format!("\"{name}\";r={};t={}", d.remaining, d.reset.div_ceil(NANOS));
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("\"limit\""))
}

impl Stage for RateLimiter {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    /// Takes a token from every applicable limit, in order; the first that
    /// has none answers 429 (limits after it are not charged).
    fn on_request(&self, ctx: &mut RequestCtx, head: &request::Parts) -> Verdict {
        let now = self.clock.now_nanos();
        if let Some((bans, _)) = &self.ban
            && bans.is_banned(ctx.client_ip, now)
        {
            ctx.ratelimit_refused = Some(Arc::from("banned"));
            return Verdict::Reject(ProxyError::Forbidden("banned"));
        }
        let mut closest: Option<(usize, Decision)> = None;
        for (index, limit) in self.limits.iter().enumerate() {
            if !applies(limit, ctx) {
                continue;
            }
            let Some(key) = Self::key(self.ids[index], limit, ctx, head) else {
                continue;
            };
            let decision = self.store.take(&key, &limit.rate, now);
            if !decision.allowed {
                ctx.ratelimit_refused = Some(Arc::clone(&self.labels[index]));
                self.refused[index].inc();
                if let Some((bans, policy)) = &self.ban
                    && bans.strike(ctx.client_ip, now, policy)
                {
                    tracing::warn!(client = %ctx.client_ip, "client banned after repeated refusals");
                }
                return Verdict::Reject(ProxyError::TooManyRequests(Box::new(RateLimited {
                    retry_after_secs: decision.retry_after.div_ceil(NANOS).max(1),
                    policy: self.policies[index].clone(),
                    state: state(&self.names[index], &decision),
                })));
            }
            if self.headers && closest.is_none_or(|(_, c)| decision.remaining < c.remaining) {
                closest = Some((index, decision));
            }
        }
        // Allowed responses carry the state of the limit closest to
        // refusing (added without reading the response head).
        if let Some((index, d)) = closest {
            ctx.response_headers
                .push((RATELIMIT_POLICY, self.policies[index].clone()));
            ctx.response_headers
                .push((RATELIMIT, state(&self.names[index], &d)));
        }
        Verdict::Continue
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
