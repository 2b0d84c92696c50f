//! Upstream groups: a keep-alive connection pool per group, server choice
//! (`balance.rs`), active and passive health (`health.rs`), and forwarding
//! with timeouts and safe retries. Header hygiene is in `headers.rs`.
//!
//! Retry rule: a request moves to another server only when nothing reached
//! the failed one (connect error) or its method is idempotent; a 5xx answer
//! is passed on (or replaced by our page), never retried.

mod balance;
pub mod h1;
pub mod headers;
mod health;
mod pool;
mod stream;

pub use pool::pin_thread_slot;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::admin::metrics::Metrics;
use crate::config::UpstreamConfig;
use crate::server::respond::ProxyError;
use balance::Balancer;
use h1::{H1Error, UpstreamBody, UpstreamConn};
use pool::ConnPool;

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

/// Counts a request against a server while it is open. Only least_conn
/// reads the count, so only least_conn pays for keeping it: the counter is
/// shared by every serving thread.
pub(crate) struct InFlight(Option<Arc<AtomicUsize>>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>, counted: bool) -> InFlight {
        if !counted {
            return InFlight(None);
        }
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(Arc::clone(counter)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(counter) = &self.0 {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A successful exchange with a backend.
pub struct Forwarded {
    pub head: h1::ResponseHead,
    pub body: UpstreamBody,
    pub server: SocketAddr,
}

/// A backend connection that switched protocols, handed from the pipeline
/// to the client's connection as a response extension (which must be
/// `Clone`; the connection is taken once).
#[derive(Clone)]
pub struct Tunnel(Arc<std::sync::Mutex<Option<(stream::BackendStream, bytes::BytesMut)>>>);

impl Tunnel {
    pub fn new(stream: stream::BackendStream, leftover: bytes::BytesMut) -> Tunnel {
        Tunnel(Arc::new(std::sync::Mutex::new(Some((stream, leftover)))))
    }

    /// The backend connection and the bytes it sent past its 101.
    pub fn take(&self) -> Option<(stream::BackendStream, bytes::BytesMut)> {
        self.0.lock().ok().and_then(|mut t| t.take())
    }
}

/// What a backend made of an upgrade request.
pub enum UpgradeAnswer {
    /// 101: the connection now speaks the new protocol; `leftover` holds
    /// its first bytes if they came with the head.
    Switched {
        head: h1::ResponseHead,
        stream: stream::BackendStream,
        leftover: bytes::BytesMut,
        server: SocketAddr,
    },
    /// Any other answer: an ordinary response.
    Declined(Forwarded),
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
                        s.tls.then_some(config.tls.as_ref()).flatten(),
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
        if let Some(tls) = &pool.config.tls
            && tls.skip_verify
        {
            tracing::warn!(
                upstream = %pool.config.name,
                "tls_insecure_skip_verify: backend certificates are NOT verified; anyone on the path can impersonate the backend"
            );
        }
        if let Some(check) = pool.config.health_check.clone() {
            health::spawn_checker(&pool, check);
        }
        pool
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Healthy and not ejected. The clock is read only while an ejection
    /// is on record; one that ran out is cleared.
    fn available(&self, index: usize) -> bool {
        let s = &self.servers[index];
        if !s.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = s.ejected_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if until > self.now_ms() {
            return false;
        }
        let _ = s
            .ejected_until_ms
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        true
    }

    /// Picks a server not yet tried. When every server is down or ejected
    /// the group is tried anyway: a false "down" must not take a site off
    /// the air, and a true one costs a fast connect error.
    fn pick(&self, client_ip: IpAddr, tried: u128) -> Option<usize> {
        let untried = |i: usize| tried & (1u128 << i) == 0;
        let in_flight = |i: usize| self.servers[i].in_flight.load(Ordering::Relaxed);
        self.balancer
            .pick(client_ip, |i| untried(i) && self.available(i), in_flight)
            .or_else(|| self.balancer.pick(client_ip, untried, in_flight))
    }

    /// Sends the request to a server of the group, retrying on another one
    /// where that is safe.
    /// Nothing waits past `deadline` (the whole request's).
    pub async fn forward(
        &self,
        out: &Outgoing,
        deadline: tokio::time::Instant,
    ) -> Result<Forwarded, ProxyError> {
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
            let in_flight = InFlight::enter(
                &server.in_flight,
                self.config.balance == crate::config::Balance::LeastConn,
            );
            match self.exchange(server, out, deadline).await {
                Ok((conn, parts, framing)) => {
                    if parts.status.is_server_error() {
                        self.passive_failure(index);
                    } else {
                        self.passive_success(index);
                    }
                    return Ok(self.forwarded(server, conn, parts, framing, in_flight));
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
                            tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %e, "upstream request failed");
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

    /// Sends an upgrade request (WebSocket) to one server, on a connection
    /// of its own that is never pooled: if the backend answers 101 the
    /// connection becomes the tunnel. Not retried: the client may already
    /// count on this attempt.
    pub async fn upgrade(
        &self,
        out: &Outgoing,
        deadline: tokio::time::Instant,
    ) -> Result<UpgradeAnswer, ProxyError> {
        let index = self
            .pick(out.client_ip, 0)
            .ok_or(ProxyError::UpstreamUnavailable)?;
        let server = &self.servers[index];
        let in_flight = InFlight::enter(
            &server.in_flight,
            self.config.balance == crate::config::Balance::LeastConn,
        );
        let deadline = (tokio::time::Instant::now() + self.config.response_timeout).min(deadline);
        let attempt = async {
            let mut conn = server.conns.connect().await.map_err(|e| {
                tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %e, "upstream connect failed");
            })?;
            conn.send(&out.method, out.path_and_query.as_str(), &out.headers, &[])
                .await
                .map_err(|_| ())?;
            let (head, framing) = conn.read_upgrade_head(&out.method).await.map_err(|e| {
                tracing::warn!(upstream = %self.config.name, server = %server.addr, error = %e, "upstream upgrade failed");
            })?;
            Ok::<_, ()>((conn, head, framing))
        };
        let (conn, head, framing) = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => {
                self.passive_failure(index);
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(Err(())) => {
                self.passive_failure(index);
                return Err(ProxyError::UpstreamUnavailable);
            }
            Ok(Ok(answer)) => answer,
        };
        self.passive_success(index);
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let (stream, leftover) = conn.into_tunnel();
            return Ok(UpgradeAnswer::Switched {
                head,
                stream,
                leftover,
                server: server.addr,
            });
        }
        Ok(UpgradeAnswer::Declined(
            self.forwarded(server, conn, head, framing, in_flight),
        ))
    }

    /// A response head from `server` and its body still on `conn`.
    fn forwarded(
        &self,
        server: &ServerState,
        conn: UpstreamConn,
        head: h1::ResponseHead,
        framing: h1::Framing,
        in_flight: InFlight,
    ) -> Forwarded {
        let body = UpstreamBody::new(
            conn,
            framing,
            Arc::clone(server.conns.home_slot()),
            in_flight,
            self.config.response_timeout,
        );
        Forwarded {
            head,
            body,
            server: server.addr,
        }
    }

    /// One request on one server, up to the response head: on an idle
    /// pooled connection if there is one, else a new one. When a reused
    /// connection fails before any byte of an answer (the backend closed it
    /// as we sent), an idempotent request goes out once more on a fresh
    /// connection to the same server.
    async fn exchange(
        &self,
        server: &ServerState,
        out: &Outgoing,
        request_deadline: tokio::time::Instant,
    ) -> Result<(UpstreamConn, h1::ResponseHead, h1::Framing), Failure> {
        let deadline =
            (tokio::time::Instant::now() + self.config.response_timeout).min(request_deadline);
        let mut pooled = server.conns.take_idle();
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => tokio::time::timeout_at(deadline, server.conns.connect())
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::NothingSent)?,
            };
            let attempt = async {
                conn.send(
                    &out.method,
                    out.path_and_query.as_str(),
                    &out.headers,
                    &out.body,
                )
                .await?;
                conn.read_head(&out.method).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok((parts, framing))) => return Ok((conn, parts, framing)),
                Ok(Err(e)) if reused && out.method.is_idempotent() && stale(&e) => continue,
                Ok(Err(e)) => return Err(Failure::AfterSend(e)),
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
    AfterSend(H1Error),
    Timeout,
}

/// The failure of a reused keep-alive connection that the backend closed
/// while it was idle: no answer at all came back.
fn stale(e: &H1Error) -> bool {
    match e {
        H1Error::ClosedBeforeHead => true,
        H1Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}
