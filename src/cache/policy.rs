//! RFC 9111 rules for a shared cache: may a response be stored (§3), how
//! long it is fresh (§4.2.1, heuristics §4.2.2), how old it is (§4.2.3),
//! and whether a stored response may answer a request as it is (§4.2.4,
//! §5.2.1) or must be revalidated first.
//!
//! Every function takes the time it reasons about as an argument: the
//! caller's clock decides, so tests step time instead of sleeping.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode, header};

use super::control::{Delta, Directives, response_directives};

/// Settings that shape the policy (from `[cache]` and the route).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    /// Store responses that set cookies (off by default: one user's
    /// session would be handed to the next).
    pub store_set_cookie: bool,
    /// Heuristic freshness: this fraction of the time since Last-Modified…
    pub heuristic_fraction: f64,
    /// …but never longer than this.
    pub heuristic_max: Duration,
    /// The operator's freshness for responses that state none (like
    /// nginx's `proxy_cache_valid`): used in place of the heuristic for
    /// heuristically cacheable statuses.
    pub default_ttl: Option<Duration>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            store_set_cookie: false,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(24 * 3600),
            default_ttl: None,
        }
    }
}

/// Status codes RFC 9110 §15.1 makes heuristically cacheable (206 aside:
/// this cache stores only whole responses).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose caching semantics this cache implements: those
/// RFC 9110 defines.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=308 | 400..=417 | 421..=426 | 428 | 429 | 431 | 451 | 500..=505 | 511
    )
}

/// Why a response is not stored; also what `Cache-Status` calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    /// Neither explicit freshness, nor heuristics, nor a validator.
    NothingToReuse,
    TooLarge,
    Flagged,
}

impl NotStored {
    pub fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NothingToReuse => "not-reusable",
            NotStored::TooLarge => "too-large",
            NotStored::Flagged => "waf",
        }
    }
}

/// RFC 9111 §3: may this response to this request be stored?
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &Directives,
    status: StatusCode,
    response: &HeaderMap,
    settings: &PolicySettings,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if status.is_informational() || status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::Status);
    }
    if status == StatusCode::NOT_MODIFIED {
        return Err(NotStored::Status);
    }
    let (cc, _) = response_directives(response);
    // §5.2.2.3: `must-understand` stores only status codes whose caching
    // rules we know, and then stands in for the `no-store` that caches
    // which do not understand it are meant to obey.
    if cc.must_understand && !understood(status) {
        return Err(NotStored::Status);
    }
    if (cc.no_store && !cc.must_understand) || request_cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    // §3.5: a shared cache stores an answer to an authenticated request
    // only when the response says it may be shared.
    if request.contains_key(header::AUTHORIZATION)
        && !(cc.must_revalidate || cc.public || cc.s_maxage.is_some())
    {
        return Err(NotStored::Authorization);
    }
    if !settings.store_set_cookie && response.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(response).is_none() {
        return Err(NotStored::VaryStar);
    }
    let explicit = cc.public
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || response.contains_key(header::EXPIRES);
    let has_validator =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    if !explicit && !has_validator && settings.default_ttl.is_none() {
        return Err(NotStored::NothingToReuse);
    }
    Ok(())
}

/// The field names a response varies on, lower-cased; `None` for `Vary: *`
/// (which never matches a later request, so is not stored).
pub fn vary_names(response: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for line in response.get_all(header::VARY) {
        let text = String::from_utf8_lossy(line.as_bytes());
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// The times RFC 9111 §4.2.3 reasons with, taken when the response came.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// The freshness facts of a stored response, worked out once when it is
/// stored (or refreshed by a 304).
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// §4.2.1: how long it is fresh, counted from its generation.
    pub lifetime: Duration,
    /// §4.2.3 `corrected_initial_age`.
    pub initial_age: Duration,
    pub response_time: SystemTime,
    /// Stale responses must not be served without revalidation
    /// (must-revalidate, proxy-revalidate, s-maxage).
    pub must_revalidate: bool,
    /// Every reuse needs revalidation (response `no-cache`).
    pub no_cache: bool,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

impl Freshness {
    pub fn of(response: &HeaderMap, timing: Timing, settings: &PolicySettings) -> Freshness {
        let (cc, targeted) = response_directives(response);
        let date = http_date(response, header::DATE);
        let lifetime = lifetime(&cc, targeted, response, date, timing, settings);
        let age_value = age_value(response);
        let date_value = date.unwrap_or(timing.response_time);
        let apparent_age = timing
            .response_time
            .duration_since(date_value)
            .unwrap_or_default();
        let response_delay = timing
            .response_time
            .duration_since(timing.request_time)
            .unwrap_or_default();
        let corrected_age_value = Duration::from_secs(age_value) + response_delay;
        Freshness {
            lifetime,
            initial_age: apparent_age.max(corrected_age_value),
            response_time: timing.response_time,
            must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache,
            stale_while_revalidate: Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0)),
            stale_if_error: Duration::from_secs(cc.stale_if_error.unwrap_or(0)),
        }
    }

    /// §4.2.3 `current_age` at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.response_time).unwrap_or_default()
    }

    /// Seconds of freshness left at `now`; negative once stale.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        let lifetime = self.lifetime.as_secs() as i64;
        lifetime.saturating_sub(self.age(now).as_secs() as i64)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.age(now)
    }

    /// How long past its lifetime it is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }
}

/// The origin's `Age` in seconds (RFC 9111 §5.1): the first member of a
/// list, parameters dropped. Age is a singleton, so an answer whose Age
/// is repeated, negative, fractional or not a number cannot say how old
/// it is: it counts as too old to be fresh, which costs a revalidation,
/// where trusting it could serve something stale as fresh.
fn age_value(response: &HeaderMap) -> u64 {
    let mut lines = response.get_all(header::AGE).iter();
    let Some(first) = lines.next() else {
        return 0;
    };
    if lines.next().is_some() {
        return super::control::DELTA_MAX;
    }
    let text = String::from_utf8_lossy(first.as_bytes());
    let member = text.split(',').next().unwrap_or("");
    let member = member.split(';').next().unwrap_or("").trim();
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return super::control::DELTA_MAX;
    }
    member
        .parse::<u64>()
        .map_or(super::control::DELTA_MAX, |n| {
            n.min(super::control::DELTA_MAX)
        })
}

/// §4.2.1 for a shared cache: s-maxage, then max-age, then Expires − Date,
/// then the heuristic (§4.2.2) for responses with Last-Modified.
fn lifetime(
    cc: &Directives,
    targeted: bool,
    response: &HeaderMap,
    date: Option<SystemTime>,
    timing: Timing,
    settings: &PolicySettings,
) -> Duration {
    if let Some(d) = cc.s_maxage.or(cc.max_age) {
        return match d {
            Delta::Seconds(s) => Duration::from_secs(s),
            Delta::Invalid => Duration::ZERO,
        };
    }
    if !targeted && response.contains_key(header::EXPIRES) {
        // An Expires that does not parse (e.g. "0") means already expired.
        let Some(expires) = http_date(response, header::EXPIRES) else {
            return Duration::ZERO;
        };
        let base = date.unwrap_or(timing.response_time);
        return expires.duration_since(base).unwrap_or_default();
    }
    if let Some(ttl) = settings.default_ttl {
        return ttl;
    }
    let Some(last_modified) = http_date(response, header::LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let base = date.unwrap_or(timing.response_time);
    let since = base.duration_since(last_modified).unwrap_or_default();
    since
        .mul_f64(settings.heuristic_fraction)
        .min(settings.heuristic_max)
}

/// Reads an HTTP-date field; a repeated field's first line counts.
pub fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let text = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

/// How a stored response may be used for a request (§4, §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh enough for this request: answer from cache.
    Fresh,
    /// Stale, but the request accepts that staleness (max-stale).
    StaleAllowed,
    /// Stale within stale-while-revalidate: answer, refresh behind.
    StaleWhileRevalidate,
    /// Must be validated with the origin before use.
    Revalidate,
}

/// Decides how a stored response with `freshness` may serve a request
/// with directives `request` at `now`.
pub fn reuse(freshness: &Freshness, request: &Directives, now: SystemTime) -> Reuse {
    if freshness.no_cache || request.no_cache {
        return Reuse::Revalidate;
    }
    let age = freshness.age(now);
    if let Some(max_age) = request.max_age {
        let limit = max_age.seconds().unwrap_or(0);
        if age.as_secs() > limit {
            return Reuse::Revalidate;
        }
    }
    if let Some(min_fresh) = request.min_fresh {
        let left = freshness.lifetime.saturating_sub(age);
        return if left.as_secs() >= min_fresh && freshness.is_fresh(now) {
            Reuse::Fresh
        } else {
            Reuse::Revalidate
        };
    }
    if freshness.is_fresh(now) {
        return Reuse::Fresh;
    }
    if freshness.must_revalidate {
        return Reuse::Revalidate;
    }
    let stale = freshness.staleness(now);
    match request.max_stale {
        Some(None) => return Reuse::StaleAllowed,
        Some(Some(limit)) if stale.as_secs() <= limit => return Reuse::StaleAllowed,
        _ => {}
    }
    if stale < freshness.stale_while_revalidate {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate
}

/// Whether a stale response may stand in for an origin error (RFC 5861
/// stale-if-error, from the response or the request), at `now`.
pub fn may_serve_on_error(
    freshness: &Freshness,
    request: &Directives,
    configured: Duration,
    now: SystemTime,
) -> bool {
    if freshness.must_revalidate || freshness.no_cache {
        return false;
    }
    let window = freshness
        .stale_if_error
        .max(Duration::from_secs(request.stale_if_error.unwrap_or(0)))
        .max(configured);
    freshness.staleness(now) <= window
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    fn timing(secs: u64) -> Timing {
        Timing {
            request_time: at(secs),
            response_time: at(secs),
        }
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let s = PolicySettings::default();
        let h = headers(&[
            ("cache-control", "max-age=100, s-maxage=10".into()),
            ("expires", date(at(1000))),
            ("date", date(at(0))),
        ]);
        assert_eq!(Freshness::of(&h, timing(0), &s).lifetime.as_secs(), 10);
        let h = headers(&[
            ("cache-control", "max-age=100".into()),
            ("expires", date(at(1000))),
            ("date", date(at(0))),
        ]);
        assert_eq!(Freshness::of(&h, timing(0), &s).lifetime.as_secs(), 100);
        let h = headers(&[("expires", date(at(1000))), ("date", date(at(0)))]);
        assert_eq!(Freshness::of(&h, timing(0), &s).lifetime.as_secs(), 1000);
    }

    #[test]
    fn an_invalid_expires_means_already_expired() {
        let h = headers(&[("expires", "0".into()), ("date", date(at(0)))]);
        let f = Freshness::of(&h, timing(0), &PolicySettings::default());
        assert!(!f.is_fresh(at(0)));
    }

    #[test]
    fn age_counts_the_age_header_the_delay_and_residence() {
        let h = headers(&[
            ("cache-control", "max-age=100".into()),
            ("date", date(at(0))),
            ("age", "30".into()),
        ]);
        let t = Timing {
            request_time: at(0),
            response_time: at(2),
        };
        let f = Freshness::of(&h, t, &PolicySettings::default());
        // corrected_age_value = 30 + 2; apparent_age = 2.
        assert_eq!(f.age(at(2)).as_secs(), 32);
        assert_eq!(f.age(at(12)).as_secs(), 42);
        assert_eq!(f.ttl(at(12)), 58);
        assert!(!f.is_fresh(at(70)));
    }

    #[test]
    fn an_age_that_cannot_be_read_makes_the_response_stale() {
        let s = PolicySettings::default();
        let fresh = |age: &[&str]| {
            let mut h = headers(&[
                ("cache-control", "max-age=3600".into()),
                ("date", date(at(0))),
            ]);
            for a in age {
                h.append("age", a.parse().unwrap());
            }
            Freshness::of(&h, timing(0), &s).is_fresh(at(0))
        };
        assert!(fresh(&[]));
        assert!(fresh(&["10"]));
        assert!(fresh(&["0,7200"]), "the first member counts");
        for bad in [
            &["abc"][..],
            &["-7200"],
            &["7200.0"],
            &["7200;foo=1"],
            &["7200,0"],
            &["0", "0"],
        ] {
            assert!(!fresh(bad), "{bad:?}");
        }
    }

    #[test]
    fn heuristic_freshness_is_a_bounded_fraction_of_last_modified_age() {
        let s = PolicySettings::default();
        let h = headers(&[("date", date(at(100_000))), ("last-modified", date(at(0)))]);
        assert_eq!(
            Freshness::of(&h, timing(100_000), &s).lifetime.as_secs(),
            10_000
        );
        let h = headers(&[
            ("date", date(at(10_000_000))),
            ("last-modified", date(at(0))),
        ]);
        assert_eq!(
            Freshness::of(&h, timing(10_000_000), &s).lifetime,
            s.heuristic_max
        );
    }

    #[test]
    fn request_max_age_min_fresh_and_max_stale_bound_reuse() {
        let h = headers(&[
            ("cache-control", "max-age=100".into()),
            ("date", date(at(0))),
        ]);
        let f = Freshness::of(&h, timing(0), &PolicySettings::default());
        let now = at(50);
        assert_eq!(reuse(&f, &Directives::default(), now), Reuse::Fresh);
        assert_eq!(
            reuse(&f, &Directives::parse("max-age=10"), now),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, &Directives::parse("min-fresh=60"), now),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, &Directives::parse("min-fresh=40"), now),
            Reuse::Fresh
        );
        let later = at(130);
        assert_eq!(reuse(&f, &Directives::default(), later), Reuse::Revalidate);
        assert_eq!(
            reuse(&f, &Directives::parse("max-stale=40"), later),
            Reuse::StaleAllowed
        );
        assert_eq!(
            reuse(&f, &Directives::parse("max-stale=10"), later),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, &Directives::parse("max-stale"), later),
            Reuse::StaleAllowed
        );
    }

    #[test]
    fn must_revalidate_forbids_stale_even_when_the_client_accepts_it() {
        let h = headers(&[
            ("cache-control", "max-age=1, must-revalidate".into()),
            ("date", date(at(0))),
        ]);
        let f = Freshness::of(&h, timing(0), &PolicySettings::default());
        assert_eq!(
            reuse(&f, &Directives::parse("max-stale"), at(10)),
            Reuse::Revalidate
        );
        assert!(!may_serve_on_error(
            &f,
            &Directives::default(),
            Duration::from_secs(999),
            at(10)
        ));
    }

    #[test]
    fn authorization_needs_an_explicit_permission() {
        let s = PolicySettings::default();
        let req = headers(&[("authorization", "Basic eDp5".into())]);
        let cc = Directives::default();
        let plain = headers(&[("cache-control", "max-age=60".into())]);
        assert_eq!(
            storable(&Method::GET, &req, &cc, StatusCode::OK, &plain, &s),
            Err(NotStored::Authorization)
        );
        let shared = headers(&[("cache-control", "s-maxage=60".into())]);
        assert_eq!(
            storable(&Method::GET, &req, &cc, StatusCode::OK, &shared, &s),
            Ok(())
        );
    }

    #[test]
    fn must_understand_stores_only_understood_statuses_and_overrides_no_store() {
        let s = PolicySettings::default();
        let (req, cc) = (HeaderMap::new(), Directives::default());
        let h = headers(&[(
            "cache-control",
            "max-age=60, must-understand, no-store".into(),
        )]);
        assert_eq!(
            storable(&Method::GET, &req, &cc, StatusCode::OK, &h, &s),
            Ok(())
        );
        let odd = StatusCode::from_u16(599).unwrap();
        assert_eq!(
            storable(&Method::GET, &req, &cc, odd, &h, &s),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn vary_star_and_set_cookie_are_not_stored() {
        let s = PolicySettings::default();
        let req = HeaderMap::new();
        let cc = Directives::default();
        let star = headers(&[("cache-control", "max-age=60".into()), ("vary", "*".into())]);
        assert_eq!(
            storable(&Method::GET, &req, &cc, StatusCode::OK, &star, &s),
            Err(NotStored::VaryStar)
        );
        let cookie = headers(&[
            ("cache-control", "max-age=60".into()),
            ("set-cookie", "a=b".into()),
        ]);
        assert_eq!(
            storable(&Method::GET, &req, &cc, StatusCode::OK, &cookie, &s),
            Err(NotStored::SetCookie)
        );
    }
}
