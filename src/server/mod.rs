//! Listeners, the connection limit, reload and graceful drain.
//!
//! `Server::start` binds every listener (port 0 allowed: tests read the
//! bound addresses back), publishes the first config snapshot and spawns the
//! accept loops. `shutdown` stops accepting and asks every connection to
//! finish its in-flight requests; `drained` waits for them up to a deadline.

pub mod access_log;
mod admission;
mod conn;
pub mod h1;
pub mod respond;
mod spread;
pub mod tls;
pub mod transport;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::admin;
use crate::admin::metrics::Metrics;
use crate::config::{Config, ConfigErrors};
use crate::pipeline::{ConnInfo, Runtime, SharedRuntime};
use conn::ConnShared;
use respond::ProxyError;
use spread::{Handoff, Spread};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Setup(std::io::Error),
}

/// A running proxy.
pub struct Server {
    /// Plain-HTTP listeners, bound (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    /// HTTPS listeners, bound.
    pub tls_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub runtime: SharedRuntime,
    pub metrics: Arc<Metrics>,
    config_path: PathBuf,
    tls: tls::TlsListeners,
    drain_timeout: Duration,
    shutdown: watch::Sender<bool>,
    drain_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// Ends the serving threads when the server is dropped.
    stop: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.stop.send_replace(true);
    }
}

impl Server {
    /// Binds the listeners and starts serving: the serving threads (see
    /// `workers.rs`) plus the admin listener on the calling runtime.
    pub async fn start(config: Config) -> Result<Arc<Server>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let limits = config.server.limits.clone();
        let config_path = config.source.clone();
        let worker_count = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let plain_count = config.server.listen.len();
        let all_addrs: Vec<SocketAddr> = config
            .server
            .listen
            .iter()
            .chain(&config.server.tls_listen)
            .copied()
            .collect();
        let bound = workers::bind(&all_addrs, worker_count)?;
        let tls = tls::TlsListeners::new(&config)?;
        tls::check_expiry(&config, &metrics);
        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let runtime: SharedRuntime = Arc::new(ArcSwap::from_pointee(
            Runtime::build(config, Arc::clone(&metrics), None).map_err(StartError::Setup)?,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let (stop, stop_rx) = watch::channel(false);
        let mut listen_addrs = bound.addrs;
        let tls_addrs = listen_addrs.split_off(plain_count);
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let server = Arc::new(Server {
            listen_addrs: listen_addrs.clone(),
            tls_addrs: tls_addrs.clone(),
            admin_addr,
            runtime: Arc::clone(&runtime),
            metrics: Arc::clone(&metrics),
            config_path,
            tls,
            drain_timeout: limits.drain_timeout,
            shutdown,
            drain_rx: tokio::sync::Mutex::new(drain_rx),
            stop,
        });
        let listener_shared = |tls: Option<tokio_rustls::TlsAcceptor>| {
            Arc::new(ConnShared {
                runtime: Arc::clone(&runtime),
                h1: h1::H1Limits::from_limits(&limits),
                h2: conn::h2_builder(&limits),
                keepalive_timeout: limits.keepalive_timeout,
                scheme: if tls.is_some() { "https" } else { "http" },
                https_port: tls_addrs.first().map(SocketAddr::port),
                tls,
                metrics: Arc::clone(&metrics),
            })
        };
        let mut per_listener: Vec<Arc<ConnShared>> =
            (0..plain_count).map(|_| listener_shared(None)).collect();
        let configured_tls = runtime.load().config.server.tls_listen.clone();
        for configured in &configured_tls {
            per_listener.push(listener_shared(server.tls.acceptor(configured)));
        }
        let launch = workers::Launch {
            per_listener,
            admit: Arc::new(admission::Admit::new(
                limits.max_connections,
                limits.max_connections_per_client,
                runtime.load().config.server.trusted_proxies.clone(),
            )),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown_rx.clone(),
            drain: drain_tx,
            stop: stop_rx,
        };
        workers::spawn(bound.per_worker, &launch)?;
        drop(launch);
        if let Some(listener) = admin_listener {
            tokio::spawn(admin::serve(listener, Arc::downgrade(&server), shutdown_rx));
        }
        Ok(server)
    }

    /// Re-reads the config file and swaps in a new snapshot. On any error the
    /// running snapshot stays. Listener addresses and limits are fixed at
    /// start; a change to them is logged and takes effect on restart.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        self.metrics.reload_result(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(config = %self.config_path.display(), "config reloaded"),
            Err(e) => tracing::error!("reload failed, still serving the previous config:\n{e}"),
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let config = Config::load(&self.config_path)?;
        let current = self.runtime.load();
        if config.server.listen != current.config.server.listen
            || config.server.tls_listen != current.config.server.tls_listen
            || config.server.limits != current.config.server.limits
        {
            tracing::warn!("listen addresses and limits change only on restart");
        }
        let runtime = Runtime::build(config, Arc::clone(&self.metrics), Some(&current))
            .map_err(ReloadError::Setup)?;
        self.tls.update(&runtime.config);
        tls::check_expiry(&runtime.config, &self.metrics);
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }

    /// Warns again about certificates close to expiry; the app calls this
    /// periodically, since a server may run far longer than 14 days
    /// between reloads.
    pub fn check_certificates(&self) {
        tls::check_expiry(&self.runtime.load().config, &self.metrics);
    }

    /// Stops accepting and asks every connection to close once its
    /// in-flight requests are answered.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every connection has closed or the drain timeout passed;
    /// true when all closed in time.
    pub async fn drained(&self) -> bool {
        let mut rx = self.drain_rx.lock().await;
        tokio::time::timeout(self.drain_timeout, async {
            while rx.recv().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

/// What one serving thread's tasks share.
#[derive(Clone)]
pub(crate) struct Worker {
    pub index: usize,
    pub spread: Arc<Spread>,
    pub admit: Arc<admission::Admit>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: mpsc::Sender<()>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<ConnShared>, worker: Worker) {
    let mut shutdown = worker.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let permit = match worker.admit.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                // A client over its share is told so (429); a full server
                // is a 503. Either is logged like any refused request.
                let error = match refusal {
                    admission::Refusal::Full => {
                        worker.metrics.refused_connections.inc();
                        ProxyError::ServerFull
                    }
                    admission::Refusal::ClientFull => {
                        worker.metrics.refused_client_connections.inc();
                        ProxyError::TooManyConnections
                    }
                };
                let info = ConnInfo::new(peer, shared.scheme, shared.https_port);
                crate::pipeline::log_rejected_head(
                    &shared.runtime,
                    &info,
                    &error,
                    crate::pipeline::request_id::generate(),
                );
                tokio::spawn(conn::refuse(stream, error.status()));
                continue;
            }
        };
        let target = worker.spread.choose(worker.index);
        if target == worker.index {
            spawn_serve(stream, peer, permit, &shared, &worker);
            continue;
        }
        match stream.into_std() {
            Ok(std_stream) => {
                let handoff = Handoff {
                    stream: std_stream,
                    peer,
                    permit,
                    shared: Arc::clone(&shared),
                };
                if let Err(back) = worker.spread.hand_off(target, handoff) {
                    serve_moved(back, &worker);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
        }
    }
}

/// Serves the connections other threads hand to this one, until the
/// server drains (connections still queued then are closed).
async fn inbox_loop(mut inbox: mpsc::UnboundedReceiver<Handoff>, worker: Worker) {
    let mut shutdown = worker.shutdown.clone();
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            handoff = inbox.recv() => match handoff {
                Some(handoff) => serve_moved(handoff, &worker),
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

fn serve_moved(handoff: Handoff, worker: &Worker) {
    match TcpStream::from_std(handoff.stream) {
        Ok(stream) => spawn_serve(
            stream,
            handoff.peer,
            handoff.permit,
            &handoff.shared,
            worker,
        ),
        Err(e) => tracing::warn!(error = %e, "cannot take over a connection"),
    }
}

fn spawn_serve(
    stream: TcpStream,
    peer: SocketAddr,
    permit: admission::Admission,
    shared: &Arc<ConnShared>,
    worker: &Worker,
) {
    let info = ConnInfo::new(peer, shared.scheme, shared.https_port);
    let open = worker.spread.open(worker.index);
    let shared = Arc::clone(shared);
    let metrics = Arc::clone(&worker.metrics);
    let shutdown = worker.shutdown.clone();
    let drain = worker.drain.clone();
    tokio::spawn(async move {
        metrics.open_connections.inc();
        conn::serve(stream, info, shared, shutdown, permit, drain).await;
        metrics.open_connections.dec();
        drop(open);
    });
}
