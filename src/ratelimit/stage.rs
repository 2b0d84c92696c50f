//! The rate-limit stage: every limit that applies to the request (its
//! path and method) must have a token for the request's key; otherwise 429
//! with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields
//! of the limit that refused it.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, request};

use super::ban::{BanList, BanPolicy};
use super::bucket::{Clock, Decision, SystemClock};
use super::redis::{RedisStore, StoreError};
use super::store::MemoryStore;
use crate::admin::metrics::Metrics;
use crate::config::{Config, LimitConfig, LimitKey, RateLimitConfig, RedisFallback};
use crate::pipeline::{RequestCtx, Resume, Stage, Summary, Verdict};
use crate::server::respond::{ProxyError, RateLimited};
use prometheus_client::metrics::counter::Counter;

const NANOS: u64 = 1_000_000_000;

pub struct RateLimiter {
    inner: Arc<Limiter>,
}

/// Everything a decision needs, shared with decisions waiting on Redis.
struct Limiter {
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
    /// Per limit: its name for the access log, its 429 counter, and its
    /// counter of decisions Redis could not make.
    labels: Vec<Arc<str>>,
    refused: Vec<Counter>,
    redis_errors: Vec<Counter>,
    /// Whether allowed responses carry the `RateLimit` fields.
    headers: bool,
    stores: Stores,
    clock: Arc<dyn Clock>,
}

/// Where buckets live: this instance's memory, and Redis for limits with
/// `store = "redis"`. A reload hands them to the next snapshot's limiter.
#[derive(Clone)]
pub struct Stores {
    pub memory: Arc<MemoryStore>,
    pub redis: Option<Arc<RedisStore>>,
}

impl Stores {
    /// The stores for `config`, reusing `previous` where its settings are
    /// unchanged (a reload keeps every client's state and the Redis
    /// connection).
    fn for_config(config: &RateLimitConfig, previous: Option<&Stores>) -> Stores {
        let memory = match previous {
            Some(p) if p.memory.max_keys() == config.max_keys => Arc::clone(&p.memory),
            _ => Arc::new(MemoryStore::new(config.max_keys)),
        };
        let shared = config.limits.iter().any(|l| l.shared.is_some());
        let redis = config.redis.as_ref().filter(|_| shared).and_then(|wanted| {
            match previous.and_then(|p| p.redis.as_ref()) {
                Some(store) if store.config() == wanted => Some(Arc::clone(store)),
                _ => match RedisStore::new(wanted) {
                    Ok(store) => Some(Arc::new(store)),
                    // The url was checked with the config; should it still
                    // fail, shared limits fall back as if Redis were down.
                    Err(e) => {
                        tracing::error!(error = %e, "rate-limit redis url rejected");
                        None
                    }
                },
            }
        });
        Stores { memory, redis }
    }
}

impl RateLimiter {
    /// The stage for `config`'s limits, if it has any.
    /// `previous` holds the stores of the snapshot this one replaces.
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&Stores>,
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
        previous: Option<&Stores>,
        bans: &Arc<BanList>,
        clock: Arc<dyn Clock>,
    ) -> Option<RateLimiter> {
        let rl = config.ratelimit.as_ref().filter(|r| !r.limits.is_empty())?;
        // Only shared limits get a series; the others' counter is never
        // touched and never exported.
        let redis_errors = |l: &LimitConfig| match l.shared {
            Some(RedisFallback::Closed) => metrics.ratelimit_redis_errors(&l.name, "closed"),
            Some(RedisFallback::Open) => metrics.ratelimit_redis_errors(&l.name, "open"),
            None => Counter::default(),
        };
        let inner = Limiter {
            ban: rl.ban.map(|policy| (Arc::clone(bans), policy)),
            ids: rl.limits.iter().map(limit_id).collect(),
            stores: Stores::for_config(rl, previous),
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
            redis_errors: rl.limits.iter().map(redis_errors).collect(),
            policies: rl.limits.iter().map(policy).collect(),
            names: rl.limits.iter().map(quoted_name).collect(),
            limits: rl.limits.clone(),
            headers: rl.headers,
            clock,
        };
        Some(RateLimiter {
            inner: Arc::new(inner),
        })
    }

    /// The bucket stores, for the snapshot that replaces this one.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }
}

/// The running outcome of a request's limits, in order.
#[derive(Default)]
struct Tally {
    /// The limit that refused the request and its decision.
    refused: Option<(usize, Decision)>,
    /// A limit that fails closed could not be checked.
    unavailable: Option<usize>,
    /// The allowed limit closest to refusing.
    closest: Option<(usize, Decision)>,
}

impl Tally {
    /// Records one limit's decision; false once the request is refused
    /// (limits after it are not charged).
    fn record(&mut self, index: usize, decision: Decision) -> bool {
        if !decision.allowed {
            self.refused = Some((index, decision));
            return false;
        }
        if self
            .closest
            .is_none_or(|(_, c)| decision.remaining < c.remaining)
        {
            self.closest = Some((index, decision));
        }
        true
    }
}

/// One applicable limit and the request's keys for it.
struct Charge {
    index: usize,
    /// The key in this instance's memory store.
    memory_key: Vec<u8>,
    /// The key in Redis, for shared limits: readable and the same on every
    /// instance.
    shared_key: Option<Vec<u8>>,
}

impl Limiter {
    /// The charges of every limit that applies to the request, in order. A
    /// limit whose key the request lacks (no such header or cookie) does
    /// not apply.
    fn charges(&self, ctx: &RequestCtx, head: &request::Parts) -> Vec<Charge> {
        let mut charges = Vec::new();
        for (index, limit) in self.limits.iter().enumerate() {
            if !applies(limit, ctx) {
                continue;
            }
            let mut memory_key = Vec::with_capacity(48);
            memory_key.extend_from_slice(&self.ids[index].to_le_bytes());
            if !subject(limit, ctx, head, &mut memory_key, false) {
                continue;
            }
            let shared_key = limit.shared.map(|_| {
                let mut key = Vec::with_capacity(64);
                key.extend_from_slice(limit.name.as_bytes());
                key.push(b':');
                subject(limit, ctx, head, &mut key, true);
                key
            });
            charges.push(Charge {
                index,
                memory_key,
                shared_key,
            });
        }
        charges
    }

    fn take_memory(&self, charge: &Charge, now: u64) -> Decision {
        let rate = &self.limits[charge.index].rate;
        self.stores.memory.take(&charge.memory_key, rate, now)
    }

    /// Decides charges that need no Redis, in order, until one does (its
    /// position is returned) or the request is refused.
    fn decide_local(&self, charges: &[Charge], tally: &mut Tally, now: u64) -> Option<usize> {
        for (position, charge) in charges.iter().enumerate() {
            if charge.shared_key.is_some() {
                return Some(position);
            }
            if !tally.record(charge.index, self.take_memory(charge, now)) {
                return None;
            }
        }
        None
    }

    /// Decides the remaining charges, asking Redis for shared ones.
    async fn decide_shared(&self, charges: &[Charge], tally: &mut Tally) {
        for charge in charges {
            let decision = match (&charge.shared_key, &self.stores.redis) {
                (None, _) => self.take_memory(charge, self.clock.now_nanos()),
                (Some(key), redis) => {
                    let rate = &self.limits[charge.index].rate;
                    let outcome = match redis {
                        Some(redis) => redis.take(key, rate).await,
                        None => Err(StoreError::Down),
                    };
                    match outcome {
                        Ok(decision) => decision,
                        Err(e) => {
                            self.redis_errors[charge.index].inc();
                            tracing::debug!(limit = %self.labels[charge.index], error = %e, "rate-limit redis failed");
                            if self.limits[charge.index].shared == Some(RedisFallback::Closed) {
                                tally.unavailable = Some(charge.index);
                                return;
                            }
                            self.take_memory(charge, self.clock.now_nanos())
                        }
                    }
                }
            };
            if !tally.record(charge.index, decision) {
                return;
            }
        }
    }

    /// Turns the tally into the verdict, recording it on the request.
    fn finish(&self, tally: Tally, ctx: &mut RequestCtx) -> Verdict {
        if let Some(index) = tally.unavailable {
            ctx.ratelimit_refused = Some(Arc::clone(&self.labels[index]));
            return Verdict::Reject(ProxyError::LimitUnavailable);
        }
        if let Some((index, decision)) = tally.refused {
            ctx.ratelimit_refused = Some(Arc::clone(&self.labels[index]));
            self.refused[index].inc();
            if let Some((bans, policy)) = &self.ban
                && bans.strike(ctx.client_ip, self.clock.now_nanos(), policy)
            {
                tracing::warn!(client = %ctx.client_ip, "client banned after repeated refusals");
            }
            return Verdict::Reject(ProxyError::TooManyRequests(Box::new(RateLimited {
                retry_after_secs: decision.retry_after.div_ceil(NANOS).max(1),
                policy: self.policies[index].clone(),
                state: state(&self.names[index], &decision),
            })));
        }
        // Allowed responses carry the state of the limit closest to
        // refusing (added without reading the response head).
        if self.headers
            && let Some((index, d)) = tally.closest
        {
            ctx.response_headers
                .push((RATELIMIT_POLICY, self.policies[index].clone()));
            ctx.response_headers
                .push((RATELIMIT, state(&self.names[index], &d)));
        }
        Verdict::Continue
    }
}

/// Appends what a limit counts the request by (its address, address and
/// route, header or cookie value) to `key`; false when the request has no
/// such value. `text` spells addresses out (for keys people read in Redis).
fn subject(
    limit: &LimitConfig,
    ctx: &RequestCtx,
    head: &request::Parts,
    key: &mut Vec<u8>,
    text: bool,
) -> bool {
    let ip = |key: &mut Vec<u8>| {
        let ip = ctx.client_ip.to_canonical();
        if text {
            key.extend_from_slice(ip.to_string().as_bytes());
            return;
        }
        match ip {
            std::net::IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
            std::net::IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
        }
    };
    match &limit.key {
        LimitKey::ClientIp => ip(key),
        LimitKey::ClientIpRoute => {
            ip(key);
            if text {
                key.extend_from_slice(format!("@{}", ctx.route.unwrap_or(usize::MAX)).as_bytes());
            } else {
                key.push(0);
                key.extend_from_slice(&ctx.route.unwrap_or(usize::MAX).to_le_bytes());
            }
        }
        LimitKey::Header(name) => match head.headers.get(name) {
            Some(value) => client_value(key, value.as_bytes(), text),
            None => return false,
        },
        LimitKey::Cookie(name) => match cookie(head, name) {
            Some(value) => client_value(key, value, text),
            None => return false,
        },
    }
    true
}

/// Header and cookie values longer than this are kept in Redis as their
/// digest, so a client cycling through huge values cannot make Redis hold
/// kilobytes per key.
const LONGEST_SHARED_VALUE: usize = 64;

fn client_value(key: &mut Vec<u8>, value: &[u8], text: bool) {
    if !text || value.len() <= LONGEST_SHARED_VALUE {
        key.extend_from_slice(value);
        return;
    }
    use sha1::Digest;
    key.extend_from_slice(b"sha1:");
    for byte in sha1::Sha1::digest(value) {
        key.extend_from_slice(format!("{byte:02x}").as_bytes());
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
    /// has none answers 429 (limits after it are not charged). Limits kept
    /// in memory decide at once; from the first shared one on, the
    /// decision waits for Redis.
    fn on_request(&self, ctx: &mut RequestCtx, head: &request::Parts) -> Verdict {
        let limiter = &self.inner;
        let now = limiter.clock.now_nanos();
        if let Some((bans, _)) = &limiter.ban
            && bans.is_banned(ctx.client_ip, now)
        {
            ctx.ratelimit_refused = Some(Arc::from("banned"));
            return Verdict::Reject(ProxyError::Forbidden("banned"));
        }
        let charges = limiter.charges(ctx, head);
        let mut tally = Tally::default();
        let Some(first_shared) = limiter.decide_local(&charges, &mut tally, now) else {
            return limiter.finish(tally, ctx);
        };
        let limiter = Arc::clone(&self.inner);
        Verdict::Wait(Box::pin(async move {
            limiter
                .decide_shared(&charges[first_shared..], &mut tally)
                .await;
            Box::new(move |ctx: &mut RequestCtx| limiter.finish(tally, ctx)) as Resume
        }))
    }

    /// A request the WAF blocked counts toward a ban like a refusal here:
    /// the WAF runs after this stage, so the strike is taken once the
    /// request is done.
    fn on_log(&self, ctx: &RequestCtx, _summary: &Summary) {
        if ctx.waf_verdict == Some(WAF_BLOCKED)
            && let Some((bans, policy)) = &self.inner.ban
            && bans.strike(ctx.client_ip, self.inner.clock.now_nanos(), policy)
        {
            tracing::warn!(client = %ctx.client_ip, "client banned after repeated WAF blocks");
        }
    }
}

/// `RequestCtx::waf_verdict` of a request the WAF refused.
pub const WAF_BLOCKED: &str = "blocked";

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ratelimit::bucket::ManualClock;

    fn limiter(clock: &ManualClock, bans: &Arc<BanList>) -> RateLimiter {
        let text = "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
                    [[routes]]\nupstream = \"a\"\n\
                    [[ratelimit.limits]]\nrate = \"1000/s\"\n\
                    [ratelimit.ban]\nafter = 3\nwithin = \"1m\"\nduration = \"10m\"\n";
        let config = Config::from_str_at(Path::new("t.toml"), text).unwrap();
        let metrics = Metrics::new();
        RateLimiter::with_clock(&config, &metrics, None, bans, Arc::new(clock.clone())).unwrap()
    }

    fn request(ip: &str) -> (RequestCtx, request::Parts) {
        let (head, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut ctx = RequestCtx::new(
            HeaderValue::from_static("t"),
            "127.0.0.1:1".parse().unwrap(),
            ip.parse().unwrap(),
            Instant::now(),
            http::Method::GET,
            "site.test".into(),
            "/".into(),
            http::Version::HTTP_11,
        );
        ctx.route = Some(0);
        (ctx, head)
    }

    const DONE: Summary = Summary {
        status: 403,
        bytes_out: 0,
        duration: Duration::ZERO,
        aborted: false,
    };

    #[test]
    fn waf_blocks_count_toward_a_ban() {
        let clock = ManualClock::default();
        let bans = Arc::new(BanList::default());
        let stage = limiter(&clock, &bans);
        let blocked = "192.0.2.7".parse().unwrap();
        for strike in 1..=3 {
            let (mut ctx, head) = request("192.0.2.7");
            assert!(matches!(
                stage.on_request(&mut ctx, &head),
                Verdict::Continue
            ));
            ctx.waf_verdict = Some(WAF_BLOCKED);
            stage.on_log(&ctx, &DONE);
            assert_eq!(bans.is_banned(blocked, clock.now_nanos()), strike == 3);
        }
        let (mut ctx, head) = request("192.0.2.7");
        assert!(matches!(
            stage.on_request(&mut ctx, &head),
            Verdict::Reject(ProxyError::Forbidden("banned"))
        ));
        // Requests the WAF let through never count.
        for _ in 0..10 {
            let (mut ctx, _) = request("192.0.2.8");
            ctx.waf_verdict = Some("passed");
            stage.on_log(&ctx, &DONE);
        }
        assert!(!bans.is_banned("192.0.2.8".parse().unwrap(), clock.now_nanos()));
        clock.advance(Duration::from_secs(601));
        assert!(!bans.is_banned(blocked, clock.now_nanos()), "bans end");
    }
}
