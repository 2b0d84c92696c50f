//! Upstream groups: a keep-alive connection pool per group, server choice
//! (`balance.rs`), active and passive health (`health.rs`), and forwarding
//! with timeouts and safe retries. Header hygiene is in `headers.rs`.
//!
//! Retry rule: a request moves to another server only when nothing reached
//! the failed one (connect error) or its method is idempotent; a 5xx answer
//! is passed on (or replaced by our page), never retried.

mod balance;
pub mod headers;
mod health;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::admin::metrics::Metrics;
use crate::config::UpstreamConfig;
use crate::server::respond::ProxyError;
use balance::Balancer;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One backend server and what we know of its health.
pub struct ServerState {
    pub addr: SocketAddr,
    authority: Authority,
    /// Active health check verdict (true until checks say otherwise).
    healthy: AtomicBool,
    check_passes: AtomicU32,
    check_fails: AtomicU32,
    /// Consecutive passive failures (connect errors, timeouts, 5xx).
    passive_fails: AtomicU32,
    /// Milliseconds since the pool's epoch until which the server is ejected.
    ejected_until_ms: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    healthy_gauge: Gauge,
    failures: Counter,
    ejections: Counter,
}

/// Counts a request against a server while it is open (least_conn).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A successful exchange with a backend.
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub server: SocketAddr,
    pub in_flight: InFlight,
}

/// The parts of a request that are sent upstream (again, on a retry).
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a PathAndQuery,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub client_ip: IpAddr,
}

pub struct UpstreamPool {
    pub config: UpstreamConfig,
    servers: Vec<ServerState>,
    balancer: Balancer,
    /// One connection pool per worker thread: a request reuses connections
    /// whose tasks live on its own thread, so no wake-up crosses threads.
    clients: Vec<HttpClient>,
    epoch: Instant,
}

/// A small per-thread index into `UpstreamPool::clients`.
fn thread_slot() -> usize {
    use std::cell::Cell;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        slot.get()
    })
}

impl UpstreamPool {
    /// Builds the pool and, when configured, starts its health checker.
    /// Must run inside a tokio runtime.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Arc<UpstreamPool> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let clients = (0..threads)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(config.idle_timeout)
                    .pool_max_idle_per_host(config.max_idle_per_server)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector.clone())
            })
            .collect();
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let labels = metrics.server_labels(&config.name, s.addr);
                let healthy_gauge = metrics.upstream_healthy(&labels);
                healthy_gauge.set(1);
                ServerState {
                    addr: s.addr,
                    authority: authority_of(s.addr),
                    healthy: AtomicBool::new(true),
                    check_passes: AtomicU32::new(0),
                    check_fails: AtomicU32::new(0),
                    passive_fails: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    healthy_gauge,
                    failures: metrics.upstream_failures(&labels),
                    ejections: metrics.upstream_ejections(&labels),
                }
            })
            .collect();
        let weights: Vec<(SocketAddr, u32)> =
            config.servers.iter().map(|s| (s.addr, s.weight)).collect();
        let pool = Arc::new(UpstreamPool {
            balancer: Balancer::new(config.balance, &weights),
            config,
            servers,
            clients,
            epoch: Instant::now(),
        });
        if let Some(check) = pool.config.health_check.clone() {
            health::spawn_checker(&pool, check);
        }
        pool
    }

    pub fn servers(&self) -> &[ServerState] {
        &self.servers
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn available(&self, index: usize, now_ms: u64) -> bool {
        let s = &self.servers[index];
        s.healthy.load(Ordering::Relaxed) && s.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Picks a server not yet tried. When every server is down or ejected
    /// the group is tried anyway: a false "down" must not take a site off
    /// the air, and a true one costs a fast connect error.
    fn pick(&self, client_ip: IpAddr, tried: u128) -> Option<usize> {
        let now = self.now_ms();
        let untried = |i: usize| tried & (1u128 << i) == 0;
        let in_flight = |i: usize| self.servers[i].in_flight.load(Ordering::Relaxed);
        self.balancer
            .pick(
                client_ip,
                |i| untried(i) && self.available(i, now),
                in_flight,
            )
            .or_else(|| self.balancer.pick(client_ip, untried, in_flight))
    }

    /// Sends the request to a server of the group, retrying on another one
    /// where that is safe.
    pub async fn forward(&self, out: Outgoing<'_>) -> Result<Forwarded, ProxyError> {
        let idempotent = out.method.is_idempotent();
        let attempts = (self.config.retries as usize + 1).min(self.servers.len());
        let mut tried: u128 = 0;
        let mut last_error = ProxyError::UpstreamUnavailable;
        for _ in 0..attempts {
            let Some(index) = self.pick(out.client_ip, tried) else {
                break;
            };
            tried |= 1u128 << index;
            let server = &self.servers[index];
            let in_flight = InFlight::enter(&server.in_flight);
            let request = self.build_request(server, &out)?;
            let client = &self.clients[thread_slot() % self.clients.len()];
            let sent = tokio::time::timeout(self.config.response_timeout, client.request(request));
            match sent.await {
                Ok(Ok(response)) => {
                    if response.status().is_server_error() {
                        self.passive_failure(index);
                    } else {
                        self.passive_success(index);
                    }
                    return Ok(Forwarded {
                        response,
                        server: server.addr,
                        in_flight,
                    });
                }
                Ok(Err(e)) => {
                    let nothing_sent = e.is_connect();
                    tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %error_chain(&e), "upstream request failed");
                    self.passive_failure(index);
                    last_error = ProxyError::UpstreamUnavailable;
                    if !(nothing_sent || idempotent) {
                        break;
                    }
                }
                Err(_) => {
                    tracing::warn!(upstream = %self.config.name, server = %server.addr, "upstream response timed out");
                    self.passive_failure(index);
                    last_error = ProxyError::UpstreamTimeout;
                    if !idempotent {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    fn build_request(
        &self,
        server: &ServerState,
        out: &Outgoing<'_>,
    ) -> Result<Request<Full<Bytes>>, ProxyError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(server.authority.clone())
            .path_and_query(out.path_and_query.clone())
            .build()
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        let mut request = Request::new(Full::new(out.body.clone()));
        *request.method_mut() = out.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = out.headers.clone();
        Ok(request)
    }

    fn passive_failure(&self, index: usize) {
        let server = &self.servers[index];
        server.failures.inc();
        if self.config.max_fails == 0 {
            return;
        }
        let fails = server.passive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.config.max_fails {
            server.passive_fails.store(0, Ordering::Relaxed);
            let until = self.now_ms() + self.config.fail_timeout.as_millis() as u64;
            server.ejected_until_ms.store(until, Ordering::Relaxed);
            server.ejections.inc();
            tracing::warn!(upstream = %self.config.name, server = %server.addr, after_failures = fails, "server ejected for {:?}", self.config.fail_timeout);
        }
    }

    fn passive_success(&self, index: usize) {
        let fails = &self.servers[index].passive_fails;
        // Read first: a store on every request would bounce the cache line.
        if fails.load(Ordering::Relaxed) != 0 {
            fails.store(0, Ordering::Relaxed);
        }
    }
}

fn authority_of(addr: SocketAddr) -> Authority {
    // A SocketAddr always prints as a valid authority.
    addr.to_string()
        .parse()
        .unwrap_or_else(|_| Authority::from_static("127.0.0.1"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
