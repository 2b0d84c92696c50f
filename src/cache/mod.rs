//! The RFC 9111 shared cache: what is stored (`policy.rs`), under which
//! key (`key.rs`), where (`store.rs`, moka bounded by bytes), how one
//! origin fetch serves a burst (`coalesce.rs`), how a stored response
//! answers (`serve.rs`), and the exchange that ties them to the origin
//! (`exchange.rs`). The proxy flow calls `exchange::handle` for GET and
//! HEAD on routes with caching on, and `Cache::invalidate` after unsafe
//! methods.
//!
//! One `Cache` lives across config reloads while its size stays the same,
//! so a reload does not empty it.

pub mod coalesce;
pub mod control;
pub mod exchange;
pub use exchange::CachedAnswer;
mod fill;
pub mod key;
pub mod memfile;
pub mod policy;
pub mod serve;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use coalesce::Flights;
use key::KeyParts;
use policy::PolicySettings;
use store::Store;

/// `[cache]`: the settings of the one store.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_size: u64,
    /// Responses larger than this are passed through, not stored.
    pub max_object_size: u64,
    /// How long a request waits for another's fetch of the same key
    /// before going to the origin itself.
    pub coalesce_timeout: Duration,
    /// Serve stale this long past freshness when the origin fails, even
    /// without `stale-if-error` (zero: only when the response allows).
    pub stale_if_error: Duration,
    /// What routes use unless they say otherwise.
    pub rules: CacheRules,
}

/// How one route caches (the `[cache]` defaults with the route's own
/// overrides applied).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRules {
    pub enabled: bool,
    pub key: KeyParts,
    pub policy: PolicySettings,
}

/// Where "now" comes from: the system clock, or a hand-stepped one in
/// tests.
pub trait WallClock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Clone)]
pub struct ManualWallClock(Arc<AtomicU64>);

impl ManualWallClock {
    pub fn at(unix_secs: u64) -> ManualWallClock {
        ManualWallClock(Arc::new(AtomicU64::new(unix_secs)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::Relaxed);
    }
}

impl WallClock for ManualWallClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::Relaxed))
    }
}

/// The cache's counters, registered once in the process's metrics.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub stale_served: Counter,
    pub coalesced_waiters: Counter,
    pub revalidations: Counter,
    pub stores: Counter,
    pub evictions: Counter,
    pub invalidations: Counter,
    pub purged: Counter,
    pub bytes_stored: Gauge,
    pub entries: Gauge,
}

pub struct Cache {
    pub config: CacheConfig,
    store: Store,
    flights: Arc<Flights>,
    pub metrics: CacheMetrics,
    clock: Arc<dyn WallClock>,
}

impl Cache {
    pub fn new(config: CacheConfig, metrics: CacheMetrics) -> Cache {
        Cache::with_clock(config, metrics, Arc::new(SystemWallClock))
    }

    pub fn with_clock(
        config: CacheConfig,
        metrics: CacheMetrics,
        clock: Arc<dyn WallClock>,
    ) -> Cache {
        Cache {
            store: Store::new(
                config.max_size,
                metrics.evictions.clone(),
                metrics.bytes_stored.clone(),
            ),
            flights: Arc::new(Flights::default()),
            config,
            metrics,
            clock,
        }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Stores `stored` under the URI `key`, in place of its variant.
    pub fn insert(&self, key: &str, mut stored: store::Stored) -> Arc<store::Stored> {
        if stored.file.is_none()
            && let Some((body, file)) = memfile::BodyFile::hold(&stored.body)
        {
            stored.body = body;
            stored.file = Some(file);
        }
        let stored = Arc::new(stored);
        self.store.insert(key, Arc::clone(&stored));
        self.metrics.stores.inc();
        self.metrics
            .entries
            .set(i64::try_from(self.store.entries()).unwrap_or(i64::MAX));
        stored
    }

    /// Drops everything stored for the URI `key` (all variants).
    pub fn invalidate(&self, key: &str) -> bool {
        let removed = self.store.remove(key);
        if removed {
            self.metrics.invalidations.inc();
            self.account();
        }
        removed
    }

    /// Admin purge: the exact URI `key`, or every URI under `prefix`.
    pub fn purge(&self, key: &str, prefix: bool) -> usize {
        let n = if prefix {
            self.store.remove_prefix(key)
        } else {
            usize::from(self.store.remove(key))
        };
        self.metrics.purged.inc_by(n as u64);
        self.account();
        n
    }

    /// Brings the entry gauge up to date (the byte gauge follows every
    /// insert and removal by itself).
    fn account(&self) {
        self.store.settle();
        self.metrics
            .entries
            .set(i64::try_from(self.store.entries()).unwrap_or(i64::MAX));
    }
}
