//! The immutable snapshot a request runs against: config, router, upstream
//! pools and stages, published through `ArcSwap`. A reload builds a complete
//! new snapshot and swaps it in; requests already running keep the one they
//! started with, and a config that fails to load never replaces the old one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::router::Router;
use super::{Stage, build_stages};
use crate::admin::metrics::Metrics;
use crate::config::{Config, HostMatch};
use crate::ipgeo::client_ip::TrustedProxies;
use crate::server::access_log::AccessLog;
use crate::upstream::UpstreamPool;

pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    pub upstreams: Vec<Arc<UpstreamPool>>,
    pub stages: Vec<Box<dyn Stage>>,
    /// Some stage reads response heads (`Stage::inspects_response`).
    pub inspects_responses: bool,
    pub trusted: TrustedProxies,
    pub metrics: Arc<Metrics>,
    /// The rate limiter's buckets, handed on to the next snapshot.
    buckets: Option<crate::ratelimit::stage::Stores>,
    /// Banned clients; handed on to the next snapshot.
    pub bans: Arc<crate::ratelimit::ban::BanList>,
    /// The response cache, when `[cache]` is configured. Handed on to the
    /// next snapshot while its store settings stay the same.
    pub cache: Option<Arc<crate::cache::Cache>>,
}

pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// The current snapshot, held through a handle private to the calling
/// thread. Requests clone and drop their snapshot; done on the shared `Arc`
/// that would move one cache line between the serving threads twice per
/// request, so each thread keeps its own `Arc` around the shared one and
/// requests count on that.
///
/// A thread picks up a new snapshot on its first request after a reload;
/// until then an idle thread keeps the previous one alive.
#[derive(Clone)]
// The second allocation is the point: its count is only this thread's.
#[allow(clippy::redundant_allocation)]
pub struct LocalRuntime(Arc<Arc<Runtime>>);

impl std::ops::Deref for LocalRuntime {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.0
    }
}

impl LocalRuntime {
    pub fn current(shared: &SharedRuntime) -> LocalRuntime {
        thread_local! {
            static CACHED: std::cell::RefCell<Option<(usize, LocalRuntime)>> =
                const { std::cell::RefCell::new(None) };
        }
        let published = shared.load();
        let source = Arc::as_ptr(shared) as usize;
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if let Some((from, local)) = cached.as_ref()
                && *from == source
                && Arc::ptr_eq(&*local.0, &*published)
            {
                return local.clone();
            }
            let local = LocalRuntime(Arc::new(Arc::clone(&published)));
            *cached = Some((source, local.clone()));
            local
        })
    }
}

impl Runtime {
    /// Builds a snapshot; starts health checkers and the access-log writer,
    /// so it must run inside a tokio runtime.
    /// `previous`: the snapshot this one replaces, whose rate-limit buckets
    /// carry over.
    pub fn build(
        config: Config,
        metrics: Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> std::io::Result<Runtime> {
        let route_labels: Vec<String> = config.routes.iter().map(route_label).collect();
        let access_log = AccessLog::start(
            &config.log.access,
            metrics.access_log_dropped.clone(),
            route_labels.clone(),
        )
        .map_err(|e| std::io::Error::new(e.kind(), format!("access log: {e}")))?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| UpstreamPool::new(u.clone(), &metrics))
            .collect();
        let bans = previous.map_or_else(Default::default, |p| Arc::clone(&p.bans));
        let cache =
            config
                .cache
                .as_ref()
                .map(|wanted| match previous.and_then(|p| p.cache.as_ref()) {
                    Some(kept) if same_store(&kept.config, wanted) => Arc::clone(kept),
                    _ => Arc::new(crate::cache::Cache::new(
                        wanted.clone(),
                        metrics.cache.clone(),
                    )),
                });
        let (stages, buckets) = build_stages(
            &config,
            &metrics,
            &route_labels,
            access_log,
            previous.and_then(|p| p.buckets.as_ref()),
            &bans,
        );
        Ok(Runtime {
            buckets,
            bans,
            cache,
            inspects_responses: stages.iter().any(|s| s.inspects_response()),
            router: Router::new(&config.routes),
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            upstreams,
            stages,
            metrics,
            config: Arc::new(config),
        })
    }

    /// The cache and the route's rules, when the route caches.
    pub fn cache_for(
        &self,
        route: usize,
    ) -> Option<(&Arc<crate::cache::Cache>, &crate::cache::CacheRules)> {
        let cache = self.cache.as_ref()?;
        let rules = self.config.routes.get(route)?.cache.as_ref()?;
        Some((cache, rules))
    }

    pub fn error_page(&self) -> Option<&str> {
        self.config.server.error_page.as_deref()
    }
}

/// A route's name in logs and metrics: its host pattern and path prefix.
fn route_label(route: &crate::config::RouteConfig) -> String {
    let host = match &route.host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Suffix(s) => format!("*{s}"),
    };
    format!("{host}{}", route.path_prefix)
}

/// Whether a kept store can serve a new `[cache]`: only the settings the
/// store was built with matter; rules are read per request.
fn same_store(kept: &crate::cache::CacheConfig, wanted: &crate::cache::CacheConfig) -> bool {
    kept.max_size == wanted.max_size
        && kept.max_object_size == wanted.max_object_size
        && kept.coalesce_timeout == wanted.coalesce_timeout
        && kept.stale_if_error == wanted.stale_if_error
}
