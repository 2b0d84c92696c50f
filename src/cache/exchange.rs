//! One cacheable request (GET or HEAD on a route with caching on): look
//! in the store, decide with the policy, and when the origin must be
//! asked, ask it once per key (`coalesce.rs`), revalidate what is stale,
//! store what may be stored, and serve stale where RFC 9111 and RFC 5861
//! allow it.
//!
//! `Cache-Status` (RFC 9211) tells the client which of these happened:
//! `hit`, or `fwd=` `uri-miss` / `vary-miss` / `stale` / `request` /
//! `method`, with `stored`, `fwd-status`, `ttl` and a `detail` naming why
//! a response was not stored or which stale rule served it.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use tokio::time::Instant;

use super::Cache;
use super::CacheRules;
use super::coalesce::{Joined, Lead, Outcome};
use super::control::{Directives, remove_own_field, request_directives, response_directives};
use super::fill::Fill;
use super::key;
use super::policy::{self, Freshness, NotStored, Reuse, Timing};
use super::serve::{self, CACHE_STATUS};
use super::store::{Found, Stored};
use crate::pipeline::{RequestCtx, ResponseBody};
use crate::server::respond::ProxyError;

/// The request as the cache keeps it (owned: a background refresh
/// outlives the request that started it).
#[derive(Debug, Clone)]
pub struct CacheRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    pub host: String,
}

/// How the origin is asked.
#[derive(Debug, Clone)]
pub enum Mode {
    /// As the client asked.
    Pass,
    /// For the store: without the client's conditionals and Range, so the
    /// answer is a whole response we can keep.
    Fill,
    /// A conditional request with the stored response's validators.
    Revalidate {
        etag: Option<HeaderValue>,
        last_modified: Option<HeaderValue>,
    },
}

impl Mode {
    /// Rewrites the request fields the origin will see.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if matches!(self, Mode::Pass) {
            return;
        }
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
        ] {
            headers.remove(name);
        }
        if let Mode::Revalidate {
            etag,
            last_modified,
        } = self
        {
            if let Some(etag) = etag {
                headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(date) = last_modified {
                headers.insert(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
    }
}

/// The origin's response, after hygiene and the response stages, its
/// fields in the head's map.
pub struct Fetched {
    pub response: Response<ResponseBody>,
    /// A response stage (the WAF) flagged it: never stored.
    pub flagged: bool,
}

/// Asks the origin. Implemented by the proxy flow, which owns forwarding
/// and the stages.
pub trait Fetch: Clone + Send + Sync + 'static {
    fn fetch(
        &self,
        ctx: &mut RequestCtx,
        request: &CacheRequest,
        mode: Mode,
        deadline: Instant,
    ) -> impl Future<Output = Result<Fetched, ProxyError>> + Send;

    /// The deadline a background refresh runs against.
    fn background_deadline(&self) -> Instant;
}

/// Answers a GET or HEAD from the cache or through it.
pub async fn handle<F: Fetch>(
    cache: &Arc<Cache>,
    rules: &CacheRules,
    ctx: &mut RequestCtx,
    request: CacheRequest,
    fetch: F,
    deadline: Instant,
) -> Result<Response<ResponseBody>, ProxyError> {
    let request_cc = request_directives(&request.headers);
    let path_and_query = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let key = key::primary(request.scheme, &request.host, path_and_query, &rules.key);
    let extra = key::extra_values(&request.headers, &rules.key);
    let lookup = Lookup {
        cache,
        rules,
        request: &request,
        request_cc: &request_cc,
        key: &key,
        extra: &extra,
    };
    let mut waited = false;
    loop {
        let now = cache.now();
        let mut why = "uri-miss";
        let stale = match cache.store.find(&key, &request.headers, &extra) {
            Found::Hit(stored) => match policy::reuse(&stored.freshness, &request_cc, now) {
                Reuse::Fresh => {
                    cache.metrics.hits.inc();
                    ctx.cache_status = Some(if waited { "coalesced" } else { "hit" });
                    let ttl = stored.freshness.ttl(now);
                    let answer = lookup.answer_with(&stored, hit_status(ttl, waited));
                    return Ok(lookup.remember(answer, &stored));
                }
                Reuse::StaleAllowed => {
                    let answer = lookup.stale(ctx, &stored, "max-stale");
                    return Ok(lookup.remember(answer, &stored));
                }
                Reuse::StaleWhileRevalidate => {
                    lookup.refresh_behind(ctx, &stored, fetch.clone());
                    let answer = lookup.stale(ctx, &stored, "stale-while-revalidate");
                    return Ok(lookup.remember(answer, &stored));
                }
                Reuse::Revalidate => {
                    why = if request_cc.no_cache || request_cc.max_age.is_some() {
                        "request"
                    } else {
                        "stale"
                    };
                    Some(stored)
                }
            },
            Found::VaryMiss => {
                why = "vary-miss";
                None
            }
            Found::Miss => None,
        };
        if request_cc.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        cache.metrics.misses.inc();
        // A HEAD cannot fill the store; it goes as it came.
        if request.method != Method::GET {
            ctx.cache_status = Some("miss");
            let fetched = Box::pin(fetch.fetch(ctx, &request, Mode::Pass, deadline)).await?;
            return Ok(with_status(fetched.response, "fwd=method"));
        }
        if waited {
            // The lead ended but left nothing this request can use
            // (another variant, say): fetch alone, storing if we may.
            return Box::pin(lookup.fetch_and_store(ctx, stale, None, &fetch, why, deadline)).await;
        }
        let flight_key = flight_key(&key, &extra);
        match cache.flights.join(&flight_key) {
            Joined::Lead(lead) => {
                // Boxed, as every fetch here: inline, the fetch's state
                // would make this future KiB larger, and every hit would
                // copy it.
                return Box::pin(lookup.fetch_and_store(
                    ctx,
                    stale,
                    Some(lead),
                    &fetch,
                    why,
                    deadline,
                ))
                .await;
            }
            Joined::Wait(wait) => {
                cache.metrics.coalesced_waiters.inc();
                let give_up = Instant::now()
                    .checked_add(cache.config.coalesce_timeout)
                    .map_or(deadline, |t| t.min(deadline));
                match tokio::time::timeout_at(give_up, wait.done()).await {
                    Ok(Outcome::Stored) => waited = true,
                    Ok(Outcome::Abandoned | Outcome::Pending) => {}
                    Ok(Outcome::Uncacheable) | Err(_) => {
                        ctx.cache_status = Some("miss");
                        let fetched =
                            Box::pin(fetch.fetch(ctx, &request, Mode::Pass, deadline)).await?;
                        return Ok(with_status(fetched.response, &format!("fwd={why}")));
                    }
                }
            }
        }
    }
}

/// Coalescing is per primary key and extra key parts: requests that
/// differ there can never share a response.
fn flight_key(key: &str, extra: &[Option<String>]) -> String {
    let mut out = key.to_string();
    for value in extra {
        out.push('\0');
        out.push_str(value.as_deref().unwrap_or("\u{1}"));
    }
    out
}

struct Lookup<'a> {
    cache: &'a Arc<Cache>,
    rules: &'a CacheRules,
    request: &'a CacheRequest,
    request_cc: &'a Directives,
    key: &'a str,
    extra: &'a [Option<String>],
}

impl Lookup<'_> {
    /// Lets the compression step find the stored response behind a full
    /// answer, to encode its body once per coding.
    fn remember(
        &self,
        mut answer: Response<ResponseBody>,
        stored: &Arc<Stored>,
    ) -> Response<ResponseBody> {
        if answer.status() == StatusCode::OK && stored.status == StatusCode::OK {
            answer.extensions_mut().insert(CachedAnswer {
                cache: Arc::clone(self.cache),
                key: Arc::from(self.key),
                stored: Arc::clone(stored),
            });
        }
        answer
    }

    fn answer(&self, stored: &Stored, status: &str) -> Response<ResponseBody> {
        self.answer_with(stored, cache_status(status))
    }

    fn answer_with(&self, stored: &Stored, cache_status: HeaderValue) -> Response<ResponseBody> {
        serve::answer(
            stored,
            &self.request.method,
            &self.request.headers,
            self.cache.now(),
            cache_status,
        )
    }

    fn stale(&self, ctx: &mut RequestCtx, stored: &Stored, detail: &str) -> Response<ResponseBody> {
        self.cache.metrics.hits.inc();
        self.cache.metrics.stale_served.inc();
        ctx.cache_status = Some("stale");
        let ttl = stored.freshness.ttl(self.cache.now());
        self.answer(stored, &format!("hit; ttl={ttl}; detail={detail}"))
    }

    /// Starts a background revalidation of `stored` unless one is running.
    fn refresh_behind<F: Fetch>(&self, ctx: &RequestCtx, stored: &Arc<Stored>, fetch: F) {
        let Joined::Lead(lead) = self.cache.flights.join(&flight_key(self.key, self.extra)) else {
            return;
        };
        let owned = Owned {
            cache: Arc::clone(self.cache),
            rules: self.rules.clone(),
            request: self.request.clone(),
            request_cc: self.request_cc.clone(),
            key: self.key.to_string(),
            extra: self.extra.to_vec(),
        };
        let mut ctx = ctx.clone();
        let stored = Arc::clone(stored);
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let deadline = fetch.background_deadline();
            let lookup = owned.lookup();
            let refreshed = lookup
                .fetch_and_store(
                    &mut ctx,
                    Some(stored),
                    Some(lead),
                    &fetch,
                    "stale",
                    deadline,
                )
                .await;
            // Reading the body to its end is what stores a streamed one.
            if let Ok(response) = refreshed {
                let _ = tokio::time::timeout_at(deadline, response.into_body().collect()).await;
            }
        });
    }

    /// Goes to the origin for this request (revalidating `stale` when it
    /// has validators) and stores what may be stored.
    async fn fetch_and_store<F: Fetch>(
        &self,
        ctx: &mut RequestCtx,
        stale: Option<Arc<Stored>>,
        lead: Option<Lead>,
        fetch: &F,
        why: &str,
        deadline: Instant,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let mode = match &stale {
            Some(s) if has_validators(s) => Mode::Revalidate {
                etag: s.headers.get(header::ETAG).cloned(),
                last_modified: s.headers.get(header::LAST_MODIFIED).cloned(),
            },
            _ => Mode::Fill,
        };
        let revalidating = matches!(mode, Mode::Revalidate { .. });
        let request_time = self.cache.now();
        ctx.cache_status = Some(if stale.is_some() { "expired" } else { "miss" });
        let result = fetch.fetch(ctx, self.request, mode, deadline).await;
        let timing = Timing {
            request_time,
            response_time: self.cache.now(),
        };
        let fetched = match result {
            // A 5xx is an error only where a stale response could stand in
            // for it; otherwise it is an answer like any other (a 503 with
            // `max-age` may be stored).
            Ok(f) if !(f.response.status().is_server_error() && stale.is_some()) => f,
            outcome => {
                // RFC 5861 stale-if-error: an origin failure may be
                // answered with what we have, where that is allowed.
                if let Some(stored) = &stale
                    && policy::may_serve_on_error(
                        &stored.freshness,
                        self.request_cc,
                        self.cache.config.stale_if_error,
                        timing.response_time,
                    )
                {
                    let fwd_status = match &outcome {
                        Ok(f) => f.response.status().as_u16(),
                        Err(e) => e.status().as_u16(),
                    };
                    self.cache.metrics.hits.inc();
                    self.cache.metrics.stale_served.inc();
                    ctx.cache_status = Some("stale");
                    let ttl = stored.freshness.ttl(timing.response_time);
                    return Ok(self.answer(
                        stored,
                        &format!(
                            "hit; ttl={ttl}; fwd=stale; fwd-status={fwd_status}; detail=stale-if-error"
                        ),
                    ));
                }
                if let Some(stored) = &stale
                    && stored.freshness.must_revalidate
                    && outcome.is_err()
                {
                    // RFC 9111 §4.2.4: a must-revalidate response that
                    // cannot be revalidated is answered 504.
                    return Err(ProxyError::NotCached);
                }
                return outcome.map(|f| with_status(f.response, &format!("fwd={why}")));
            }
        };
        let status = fetched.response.status();
        if status == StatusCode::NOT_MODIFIED
            && revalidating
            && let Some(stored) = &stale
        {
            self.cache.metrics.revalidations.inc();
            let refreshed = Arc::new(refresh(
                stored,
                fetched.response.headers(),
                timing,
                self.rules,
            ));
            self.cache
                .store
                .replace(self.key, stored, Arc::clone(&refreshed));
            if let Some(lead) = lead {
                lead.finish(Outcome::Stored);
            }
            ctx.cache_status = Some("revalidated");
            return Ok(self.answer(&refreshed, "fwd=stale; fwd-status=304; stored"));
        }
        self.store_response(fetched, lead, timing, why)
    }

    fn store_response(
        &self,
        fetched: Fetched,
        lead: Option<Lead>,
        timing: Timing,
        why: &str,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, mut body) = fetched.response.into_parts();
        let verdict = if fetched.flagged {
            Err(NotStored::Flagged)
        } else {
            policy::storable(
                &self.request.method,
                &self.request.headers,
                self.request_cc,
                parts.status,
                &parts.headers,
                &self.rules.policy,
            )
        };
        let limit = self.cache.config.max_object_size;
        let verdict = verdict.and_then(|()| match http_body::Body::size_hint(&body).exact() {
            Some(n) if n > limit => Err(NotStored::TooLarge),
            _ => Ok(()),
        });
        if let Err(reason) = verdict {
            if let Some(lead) = lead {
                lead.finish(Outcome::Uncacheable);
            }
            let status = format!("fwd={why}; detail={}", reason.detail());
            parts.headers.insert(&CACHE_STATUS, cache_status(&status));
            remove_own_field(&mut parts.headers);
            return Ok(Response::from_parts(parts, body));
        }
        let stored = Stored {
            status: parts.status,
            headers: stored_headers(&parts.headers),
            body: bytes::Bytes::new(),
            freshness: Freshness::of(&parts.headers, timing, &self.rules.policy),
            vary: policy::vary_names(&parts.headers)
                .unwrap_or_default()
                .into_iter()
                .map(|name| {
                    let value = key::field_value(&self.request.headers, &name);
                    (name, value)
                })
                .collect(),
            extra: self.extra.to_vec(),
            encoded: Default::default(),
            file: None,
        };
        let ttl = stored.freshness.ttl(timing.response_time);
        if let Some(full) = body
            .peek_full()
            .cloned()
            .or_else(|| http_body::Body::is_end_stream(&body).then(bytes::Bytes::new))
        {
            // The client that fetched it gets every field (a shared
            // cache's `private="…"` fields included); the store keeps less.
            let mut fields = std::mem::take(&mut parts.headers);
            fields.remove(header::AGE);
            let fetched_view = Stored {
                headers: fields,
                body: full.clone(),
                ..stored.clone()
            };
            self.cache.insert(
                self.key,
                Stored {
                    body: full,
                    ..stored
                },
            );
            if let Some(lead) = lead {
                lead.finish(Outcome::Stored);
            }
            // Answered as a hit would be, so the client's own conditionals,
            // Range and HEAD are honoured.
            return Ok(self.answer(&fetched_view, &format!("fwd={why}; stored; ttl={ttl}")));
        }
        let capacity = http_body::Body::size_hint(&body).lower().min(limit) as usize;
        body.attach_sink(Box::new(Fill {
            cache: Arc::clone(self.cache),
            key: self.key.to_string(),
            stored: Some(stored),
            body: BytesMut::with_capacity(capacity),
            limit: limit as usize,
            lead,
        }));
        parts.headers.insert(
            &CACHE_STATUS,
            cache_status(&format!("fwd={why}; stored; ttl={ttl}")),
        );
        Ok(Response::from_parts(parts, body))
    }
}

/// The owned pieces of a `Lookup`, for a background task.
struct Owned {
    cache: Arc<Cache>,
    rules: CacheRules,
    request: CacheRequest,
    request_cc: Directives,
    key: String,
    extra: Vec<Option<String>>,
}

impl Owned {
    fn lookup(&self) -> Lookup<'_> {
        Lookup {
            cache: &self.cache,
            rules: &self.rules,
            request: &self.request,
            request_cc: &self.request_cc,
            key: &self.key,
            extra: &self.extra,
        }
    }
}

fn has_validators(stored: &Stored) -> bool {
    stored.headers.contains_key(header::ETAG) || stored.headers.contains_key(header::LAST_MODIFIED)
}

/// The response's fields as stored: without `Age` (recomputed on every
/// answer) and without the fields a `private="…"` keeps out of shared
/// caches.
fn stored_headers(response: &HeaderMap) -> HeaderMap {
    let mut headers = response.clone();
    headers.remove(header::AGE);
    headers.remove(&CACHE_STATUS);
    let (cc, _) = response_directives(response);
    for name in &cc.private_fields {
        headers.remove(name.as_str());
    }
    headers.reserve(ANSWER_FIELDS);
    headers
}

/// Room kept in a stored field map for what an answer adds to its clone
/// (`Age`, `Cache-Status`, `Content-Length`, `X-Request-Id`, ...), so the
/// clone never grows and rehashes on the hit path.
const ANSWER_FIELDS: usize = 6;

/// A stored response updated by a 304 (RFC 9111 §3.2, §4.3.4): the 304's
/// fields replace the stored ones of the same name, except those that
/// describe the stored body.
fn refresh(
    stored: &Stored,
    not_modified: &HeaderMap,
    timing: Timing,
    rules: &CacheRules,
) -> Stored {
    let mut headers = stored.headers.clone();
    for name in not_modified.keys() {
        // These describe the stored body (or, for ETag, select it): a
        // 304 cannot change them.
        if matches!(
            name.as_str(),
            "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "content-range"
                | "content-md5"
                | "etag"
                | "cache-status"
        ) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.remove(header::AGE);
    let freshness = {
        // The 304's own Age counts; the stored one was dropped.
        let mut for_age = headers.clone();
        if let Some(age) = not_modified.get(header::AGE) {
            for_age.insert(header::AGE, age.clone());
        }
        Freshness::of(&for_age, timing, &rules.policy)
    };
    headers.reserve(ANSWER_FIELDS);
    Stored {
        status: stored.status,
        headers,
        body: stored.body.clone(),
        freshness,
        vary: stored.vary.clone(),
        extra: stored.extra.clone(),
        encoded: Default::default(),
        file: stored.file.clone(),
    }
}

fn cache_status(params: &str) -> HeaderValue {
    let mut text = String::with_capacity(STATUS_PREFIX.len() + params.len());
    text.push_str(STATUS_PREFIX);
    text.push_str(params);
    status_value(text.into_bytes())
}

const STATUS_PREFIX: &str = "palisade; ";

/// `Cache-Status` of a fresh hit, written in one go: it is on every hit.
fn hit_status(ttl: i64, coalesced: bool) -> HeaderValue {
    let mut text = Vec::with_capacity(48);
    text.extend_from_slice(STATUS_PREFIX.as_bytes());
    text.extend_from_slice(b"hit; ttl=");
    crate::decimal::push_i64(&mut text, ttl);
    if coalesced {
        text.extend_from_slice(b"; detail=coalesced");
    }
    status_value(text)
}

/// The text as a field value without copying it.
fn status_value(text: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(HeaderValue::from_static("palisade"))
}

/// Marks a response passed through from the origin; our own targeted
/// field is for us alone (RFC 9213 lets its target remove it).
fn with_status(mut response: Response<ResponseBody>, params: &str) -> Response<ResponseBody> {
    let headers = response.headers_mut();
    headers.insert(&CACHE_STATUS, cache_status(params));
    remove_own_field(headers);
    response
}

/// The stored response a full answer came from (a response extension).
#[derive(Clone)]
pub struct CachedAnswer {
    cache: Arc<Cache>,
    key: Arc<str>,
    stored: Arc<Stored>,
}

impl CachedAnswer {
    /// The stored body in `coding`, encoded on first demand and kept with
    /// the stored response (and counted in the store's size).
    pub fn encoded(&self, coding: crate::compress::Coding, level: u32) -> Option<bytes::Bytes> {
        let slot = &self.stored.encoded[coding.index()];
        if let Some(done) = slot.get() {
            return Some(done.clone());
        }
        let bytes = crate::compress::encoder::encode_all(coding, level, &self.stored.body).ok()?;
        if slot.set(bytes.clone()).is_ok() {
            self.cache.store.reweigh(&self.key, bytes.len());
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_states_its_ttl_and_whether_it_waited() {
        assert_eq!(hit_status(600, false), "palisade; hit; ttl=600");
        assert_eq!(
            hit_status(-3, true),
            "palisade; hit; ttl=-3; detail=coalesced"
        );
    }
}
