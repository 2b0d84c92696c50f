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
mod pool;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::admin::metrics::Metrics;
use crate::config::UpstreamConfig;
use crate::server::respond::ProxyError;
use balance::Balancer;
use pool::{ConnPool, Sender};

/// One backend server and what we know of its health.
pub struct ServerState {
    pub addr: SocketAddr,
    conns: Arc<ConnPool>,
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
struct InFlight(Arc<AtomicUsize>);

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

/// The backend connection a response is being read from. Released when the
/// response ends: back to the pool if its body was read to the end.
pub struct Lease {
    conns: Arc<ConnPool>,
    sender: Sender,
    _in_flight: InFlight,
}

impl Lease {
    pub fn release(self, body_read_to_end: bool) {
        if body_read_to_end {
            self.conns.put_back(self.sender);
        }
    }
}

/// A successful exchange with a backend.
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub server: SocketAddr,
    pub lease: Lease,
}

/// The request as it goes upstream: origin-form target, cleaned headers,
/// the whole body (so a retry can send it again).
pub struct Outgoing {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client_ip: IpAddr,
}

impl Outgoing {
    fn to_request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path_and_query.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }

    fn into_request(self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = Uri::from(self.path_and_query);
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

pub struct UpstreamPool {
    pub config: UpstreamConfig,
    servers: Vec<ServerState>,
    balancer: Balancer,
    epoch: Instant,
}

impl UpstreamPool {
    /// Builds the pool and, when configured, starts its health checker.
    /// Must run inside a tokio runtime.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Arc<UpstreamPool> {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let labels = metrics.server_labels(&config.name, s.addr);
                let healthy_gauge = metrics.upstream_healthy(&labels);
                healthy_gauge.set(1);
                ServerState {
                    addr: s.addr,
                    conns: Arc::new(ConnPool::new(
                        s.addr,
                        config.connect_timeout,
                        config.max_idle_per_server,
                        config.idle_timeout,
                    )),
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
    pub async fn forward(&self, out: Outgoing) -> Result<Forwarded, ProxyError> {
        let idempotent = out.method.is_idempotent();
        let client_ip = out.client_ip;
        let attempts = (self.config.retries as usize + 1).min(self.servers.len());
        let mut tried: u128 = 0;
        let mut last_error = ProxyError::UpstreamUnavailable;
        let mut out = Some(out);
        for attempt in 0..attempts {
            let Some(index) = self.pick(client_ip, tried) else {
                break;
            };
            tried |= 1u128 << index;
            let server = &self.servers[index];
            let in_flight = InFlight::enter(&server.in_flight);
            // The last attempt takes the request; earlier ones send a copy.
            let request = match out.take() {
                Some(o) if attempt + 1 < attempts => {
                    let request = o.to_request();
                    out = Some(o);
                    request
                }
                Some(o) => o.into_request(),
                None => break,
            };
            match self.exchange(server, request).await {
                Ok((response, sender)) => {
                    if response.status().is_server_error() {
                        self.passive_failure(index);
                    } else {
                        self.passive_success(index);
                    }
                    return Ok(Forwarded {
                        response,
                        server: server.addr,
                        lease: Lease {
                            conns: Arc::clone(&server.conns),
                            sender,
                            _in_flight: in_flight,
                        },
                    });
                }
                Err(failure) => {
                    self.passive_failure(index);
                    let may_retry = match failure {
                        Failure::NothingSent(e) => {
                            tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %e, "upstream connect failed");
                            last_error = ProxyError::UpstreamUnavailable;
                            true
                        }
                        Failure::AfterSend(e) => {
                            tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %error_chain(&e), "upstream request failed");
                            last_error = ProxyError::UpstreamUnavailable;
                            idempotent
                        }
                        Failure::Timeout => {
                            tracing::warn!(upstream = %self.config.name, server = %server.addr, "upstream response timed out");
                            last_error = ProxyError::UpstreamTimeout;
                            idempotent
                        }
                    };
                    if !may_retry {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    /// One request on one server: an idle pooled connection if there is a
    /// ready one, else a new one. A pooled connection the backend closed
    /// before our request went out hands the request back, and it goes out
    /// once more on a fresh connection.
    async fn exchange(
        &self,
        server: &ServerState,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Sender), Failure> {
        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let mut request = request;
        let mut pooled = server.conns.take_idle();
        loop {
            let fresh = pooled.is_none();
            let mut sender = match pooled.take() {
                Some(s) => s,
                None => tokio::time::timeout_at(deadline, server.conns.connect())
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::NothingSent)?,
            };
            match tokio::time::timeout_at(deadline, sender.try_send_request(request)).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(response)) => return Ok((response, sender)),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(Failure::AfterSend(e.into_error())),
                },
            }
        }
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

enum Failure {
    /// No connection could be made: the request never left.
    NothingSent(pool::ConnectError),
    /// The request was (or may have been) sent.
    AfterSend(hyper::Error),
    Timeout,
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
