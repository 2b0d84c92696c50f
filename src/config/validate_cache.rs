//! Validation of `[cache]` and of each route's `cache` table, which
//! overrides the `[cache]` defaults for that route.

use std::time::Duration;

use http::HeaderName;

use super::diag::Collector;
use super::raw::{RawCache, RawRouteCache, S};
use super::units::parse_size;
use super::validate::duration;
use crate::cache::key::KeyParts;
use crate::cache::policy::PolicySettings;
use crate::cache::{CacheConfig, CacheRules};

const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;
const DEFAULT_MAX_OBJECT: u64 = 8 * 1024 * 1024;
/// Entries are weighed in u32 by the store.
const MAX_OBJECT_LIMIT: u64 = 1024 * 1024 * 1024;

pub fn cache(raw: Option<&S<RawCache>>, diag: &mut Collector<'_>) -> Option<CacheConfig> {
    let raw = raw?.get_ref();
    let max_size = size(&raw.max_size, DEFAULT_MAX_SIZE, diag);
    let mut max_object_size = size(&raw.max_object_size, DEFAULT_MAX_OBJECT, diag);
    if let Some(v) = &raw.max_object_size
        && (max_object_size > MAX_OBJECT_LIMIT || max_object_size > max_size)
    {
        diag.error(
            v.span(),
            "cache.max_object_size must be at most 1GiB and at most max_size",
        );
        max_object_size = DEFAULT_MAX_OBJECT.min(max_size);
    }
    let mut rules = CacheRules {
        enabled: raw.enabled.as_ref().is_none_or(|e| *e.get_ref()),
        key: KeyParts::default(),
        policy: PolicySettings::default(),
    };
    overrides!(raw).apply(&mut rules, diag);
    Some(CacheConfig {
        max_size,
        max_object_size: max_object_size.min(max_size),
        coalesce_timeout: duration(&raw.coalesce_timeout, Duration::from_secs(10), diag),
        stale_if_error: duration(&raw.stale_if_error, Duration::ZERO, diag),
        rules,
    })
}

/// A route's cache rules: `None` when the route does not cache.
pub fn route_cache(
    raw: Option<&S<RawRouteCache>>,
    global: Option<&CacheConfig>,
    diag: &mut Collector<'_>,
) -> Option<CacheRules> {
    let Some(global) = global else {
        if let Some(raw) = raw {
            diag.error(
                raw.span(),
                "route has a `cache` table but the file has no [cache] section",
            );
        }
        return None;
    };
    let mut rules = global.rules.clone();
    if let Some(raw) = raw {
        let raw = raw.get_ref();
        if let Some(enabled) = &raw.enabled {
            rules.enabled = *enabled.get_ref();
        }
        overrides!(raw).apply(&mut rules, diag);
    }
    rules.enabled.then_some(rules)
}

/// The fields `[cache]` and a route's table share. (Two raw structs, not
/// one flattened into both: serde cannot flatten under
/// `deny_unknown_fields`.)
macro_rules! overrides {
    ($raw:expr) => {
        Overrides {
            key_headers: &$raw.key_headers,
            key_cookies: &$raw.key_cookies,
            ignore_query_params: &$raw.ignore_query_params,
            store_set_cookie: &$raw.store_set_cookie,
            heuristic_fraction: &$raw.heuristic_fraction,
            heuristic_max: &$raw.heuristic_max,
            default_ttl: &$raw.default_ttl,
        }
    };
}
use overrides;

struct Overrides<'a> {
    key_headers: &'a Option<Vec<S<String>>>,
    key_cookies: &'a Option<Vec<S<String>>>,
    ignore_query_params: &'a Option<Vec<S<String>>>,
    store_set_cookie: &'a Option<S<bool>>,
    heuristic_fraction: &'a Option<S<f64>>,
    heuristic_max: &'a Option<S<String>>,
    default_ttl: &'a Option<S<String>>,
}

impl Overrides<'_> {
    fn apply(&self, rules: &mut CacheRules, diag: &mut Collector<'_>) {
        if let Some(list) = self.key_headers {
            rules.key.headers = list
                .iter()
                .filter_map(|h| match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                    Ok(name) => Some(name.as_str().to_string()),
                    Err(_) => {
                        diag.error(h.span(), format!("{:?} is not a header name", h.get_ref()));
                        None
                    }
                })
                .collect();
        }
        if let Some(list) = self.key_cookies {
            rules.key.cookies = names(list, "cookie", diag);
        }
        if let Some(list) = self.ignore_query_params {
            rules.key.ignore_query_params = names(list, "query parameter", diag);
        }
        if let Some(v) = self.store_set_cookie {
            rules.policy.store_set_cookie = *v.get_ref();
        }
        if let Some(v) = self.heuristic_fraction {
            let f = *v.get_ref();
            if (0.0..=1.0).contains(&f) {
                rules.policy.heuristic_fraction = f;
            } else {
                diag.error(v.span(), "heuristic_fraction must be between 0 and 1");
            }
        }
        rules.policy.heuristic_max = duration(self.heuristic_max, rules.policy.heuristic_max, diag);
        if self.default_ttl.is_some() {
            rules.policy.default_ttl = Some(duration(self.default_ttl, Duration::ZERO, diag));
        }
    }
}

fn names(list: &[S<String>], what: &str, diag: &mut Collector<'_>) -> Vec<String> {
    list.iter()
        .filter_map(|n| {
            let text = n.get_ref();
            if text.is_empty() || text.bytes().any(|b| b <= b' ' || b"=;&\x7f".contains(&b)) {
                diag.error(n.span(), format!("{text:?} is not a {what} name"));
                None
            } else {
                Some(text.clone())
            }
        })
        .collect()
}

fn size(raw: &Option<S<String>>, default: u64, diag: &mut Collector<'_>) -> u64 {
    match raw {
        None => default,
        Some(v) => match parse_size(v.get_ref()) {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                diag.error(v.span(), "size must be above zero");
                default
            }
            Err(msg) => {
                diag.error(v.span(), msg);
                default
            }
        },
    }
}
