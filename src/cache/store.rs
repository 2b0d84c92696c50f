//! The store: stored responses in a moka cache bounded by bytes, a weigher
//! counting each entry's body, fields and bookkeeping. Under one primary
//! key (the URI) live the variants a `Vary` or the configured extra key
//! parts tell apart, newest first; a request picks the first whose
//! secondary key it matches (RFC 9111 §4.1).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use moka::notification::RemovalCause;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::key::field_value;
use super::policy::Freshness;

/// Bytes counted for an entry beyond its body and fields: the struct, the
/// map's bookkeeping, moka's node.
const ENTRY_OVERHEAD: usize = 320;
/// Variants kept per URI; the oldest goes first. Bounds the damage a
/// request field with endless values (a `Vary: User-Agent`) can do.
const MAX_VARIANTS: usize = 16;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub freshness: Freshness,
    /// The fields the response varies on, with the values the request
    /// that fetched it had.
    pub vary: Vec<(String, Option<String>)>,
    /// The configured extra key parts' values.
    pub extra: Vec<Option<String>>,
    /// The body in each content coding, made on first demand (by the
    /// compression step) and kept as long as the response is.
    pub encoded: [std::sync::OnceLock<Bytes>; 3],
    /// The memory file `body` is read from, for a large body (see
    /// `memfile`): plain HTTP/1 sends it from there with `sendfile`.
    pub file: Option<Arc<super::memfile::BodyFile>>,
}

impl Stored {
    /// Bytes this response takes in the store.
    pub fn weight(&self) -> usize {
        // The room kept for what answers add (see `exchange`) is counted
        // like a field without bytes.
        let spare = self.headers.capacity().saturating_sub(self.headers.len());
        let fields: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 48)
            .sum::<usize>()
            + spare * 48;
        let keys: usize = self
            .vary
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len) + 48)
            .sum::<usize>()
            + self
                .extra
                .iter()
                .map(|v| v.as_ref().map_or(0, String::len) + 24)
                .sum::<usize>();
        let encoded: usize = self
            .encoded
            .iter()
            .filter_map(|e| e.get())
            .map(Bytes::len)
            .sum();
        self.body.len() + encoded + fields + keys + ENTRY_OVERHEAD
    }

    /// Whether a request with `headers` and extra key values `extra` may
    /// be answered by this variant.
    pub fn matches(&self, headers: &HeaderMap, extra: &[Option<String>]) -> bool {
        self.extra == extra
            && self
                .vary
                .iter()
                .all(|(name, value)| field_value(headers, name) == *value)
    }
}

/// The variants stored under one URI.
#[derive(Debug, Default)]
pub struct Variants {
    pub list: Vec<Arc<Stored>>,
}

pub struct Store {
    /// Keys are URIs clients chose, so the hasher is seeded per process;
    /// foldhash rather than moka's SipHash, which cost about 150
    /// instructions of every hit.
    cache: moka::sync::Cache<Arc<str>, Arc<Variants>, foldhash::quality::RandomState>,
    bytes: Gauge,
}

/// What a lookup found under the URI.
pub enum Found {
    Hit(Arc<Stored>),
    /// Something is stored for the URI, but no variant matches.
    VaryMiss,
    Miss,
}

fn weigh(key: &str, variants: &Variants) -> u32 {
    let bytes = key.len()
        + variants
            .list
            .iter()
            .map(|stored| stored.weight())
            .sum::<usize>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Store {
    /// `bytes` follows what is stored: raised on insert, lowered when
    /// moka lets an entry go for any reason (it tells every removal).
    pub fn new(max_bytes: u64, evictions: Counter, bytes: Gauge) -> Store {
        let removed = bytes.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Arc<str>, variants: &Arc<Variants>| weigh(key, variants))
            .eviction_listener(move |key, value, cause| {
                removed.dec_by(i64::from(weigh(&key, &value)));
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build_with_hasher(foldhash::quality::RandomState::default());
        Store { cache, bytes }
    }

    pub fn find(&self, key: &str, headers: &HeaderMap, extra: &[Option<String>]) -> Found {
        let Some(variants) = self.cache.get(key) else {
            return Found::Miss;
        };
        match variants.list.iter().find(|s| s.matches(headers, extra)) {
            Some(stored) => Found::Hit(Arc::clone(stored)),
            None => Found::VaryMiss,
        }
    }

    /// Stores `stored` under `key`, in place of the variant with the same
    /// secondary key.
    pub fn insert(&self, key: &str, stored: Arc<Stored>) {
        let mut list = vec![Arc::clone(&stored)];
        if let Some(old) = self.cache.get(key) {
            list.extend(
                old.list
                    .iter()
                    .filter(|s| !(s.vary == stored.vary && s.extra == stored.extra))
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        self.put(key, Variants { list });
    }

    fn put(&self, key: &str, variants: Variants) {
        self.bytes.inc_by(i64::from(weigh(key, &variants)));
        self.cache.insert(Arc::from(key), Arc::new(variants));
    }

    /// Replaces one stored variant with its refreshed self (after a 304),
    /// if it is still there.
    pub fn replace(&self, key: &str, old: &Arc<Stored>, new: Arc<Stored>) {
        let Some(current) = self.cache.get(key) else {
            return;
        };
        if !current.list.iter().any(|s| Arc::ptr_eq(s, old)) {
            return;
        }
        let list = current
            .list
            .iter()
            .map(|s| {
                if Arc::ptr_eq(s, old) {
                    Arc::clone(&new)
                } else {
                    Arc::clone(s)
                }
            })
            .collect();
        self.put(key, Variants { list });
    }

    /// Has moka weigh `key`'s entry again after a stored response grew by
    /// `added` bytes (a new encoding). Re-inserting the same value makes
    /// the removal listener take off the grown weight once, so the gauge
    /// gets that weight plus the growth back.
    pub fn reweigh(&self, key: &str, added: usize) {
        let Some(current) = self.cache.get(key) else {
            return;
        };
        let grown = i64::from(weigh(key, &current));
        self.bytes.inc_by(grown + added as i64);
        self.cache.insert(Arc::from(key), current);
    }

    /// Drops every variant under `key`; true if there was one.
    pub fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Drops every URI that starts with `prefix`; returns how many.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let doomed: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.as_ref().clone())
            .collect();
        doomed.iter().filter(|k| self.remove(k)).count()
    }

    /// Bytes stored, as moka's housekeeping last settled them.
    pub fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs moka's pending housekeeping now (evictions, size accounting).
    pub fn settle(&self) {
        self.cache.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::{PolicySettings, Timing};
    use std::time::SystemTime;

    fn stored(body_len: usize, vary: Vec<(String, Option<String>)>) -> Arc<Stored> {
        let now = SystemTime::now();
        let timing = Timing {
            request_time: now,
            response_time: now,
        };
        let headers = HeaderMap::new();
        Arc::new(Stored {
            status: StatusCode::OK,
            freshness: Freshness::of(&headers, timing, &PolicySettings::default()),
            headers,
            body: Bytes::from(vec![b'x'; body_len]),
            vary,
            extra: Vec::new(),
            encoded: Default::default(),
            file: None,
        })
    }

    #[test]
    fn the_byte_budget_holds_within_five_percent() {
        let budget = 1024 * 1024;
        let evictions = Counter::default();
        let store = Store::new(budget, evictions.clone(), Gauge::default());
        for i in 0..400 {
            store.insert(&format!("http://h/{i}"), stored(8 * 1024, Vec::new()));
            if i % 50 == 0 {
                store.settle();
            }
        }
        store.settle();
        let bytes = store.bytes();
        assert!(
            bytes as f64 <= budget as f64 * 1.05,
            "{bytes} bytes stored over a {budget} budget"
        );
        // Most of the budget is used, and the rest went by eviction.
        assert!(bytes as f64 >= budget as f64 * 0.8, "{bytes}");
        assert!(evictions.get() > 200, "{}", evictions.get());
    }

    #[test]
    fn a_vary_variant_is_chosen_by_the_request_fields() {
        let store = Store::new(1 << 20, Counter::default(), Gauge::default());
        let gzip = stored(1, vec![("accept-encoding".into(), Some("gzip".into()))]);
        let plain = stored(2, vec![("accept-encoding".into(), None)]);
        store.insert("k", Arc::clone(&gzip));
        store.insert("k", Arc::clone(&plain));
        let mut h = HeaderMap::new();
        assert!(matches!(store.find("k", &h, &[]), Found::Hit(s) if Arc::ptr_eq(&s, &plain)));
        h.insert("accept-encoding", "gzip".parse().unwrap());
        assert!(matches!(store.find("k", &h, &[]), Found::Hit(s) if Arc::ptr_eq(&s, &gzip)));
        h.insert("accept-encoding", "br".parse().unwrap());
        assert!(matches!(store.find("k", &h, &[]), Found::VaryMiss));
    }

    #[test]
    fn prefix_removal_takes_only_what_it_names() {
        let store = Store::new(1 << 20, Counter::default(), Gauge::default());
        for key in ["http://h/a/1", "http://h/a/2", "http://h/ab", "http://h/b"] {
            store.insert(key, stored(1, Vec::new()));
        }
        assert_eq!(store.remove_prefix("http://h/a/"), 2);
        assert!(matches!(
            store.find("http://h/ab", &HeaderMap::new(), &[]),
            Found::Hit(_)
        ));
        assert!(matches!(
            store.find("http://h/a/1", &HeaderMap::new(), &[]),
            Found::Miss
        ));
    }
}
