//! Serving threads. Each of `server.workers` threads runs its own
//! current-thread tokio runtime with its own listening socket per address
//! (SO_REUSEPORT: the kernel spreads new connections over them), so a
//! connection, its requests and its backend connections live on one thread,
//! the way nginx's worker processes do. Measured on the side-by-side bench,
//! this took 15–20% of CPU per request off the same code running on one
//! shared multi-thread runtime (no work stealing, no cross-thread wake-ups).
//!
//! Admin, health checks, reloads and signals run on the process's main
//! runtime; everything the threads share (config snapshot, metrics, limits)
//! is thread-safe.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};

use super::conn::ConnShared;
use super::spread::Spread;
use super::{StartError, Worker, accept_loop, inbox_loop};
use crate::admin::metrics::Metrics;

const BACKLOG: u32 = 4096;

/// The listening sockets: `[worker][address]`, and the bound addresses
/// (port 0 resolved).
pub struct Bound {
    pub per_worker: Vec<Vec<std::net::TcpListener>>,
    pub addrs: Vec<SocketAddr>,
}

/// Binds `workers` sockets to each address. The first socket of an address
/// resolves port 0; the others join it.
pub fn bind(addrs: &[SocketAddr], workers: usize) -> Result<Bound, StartError> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(addrs.len());
    for requested in addrs {
        let mut addr = *requested;
        for (i, sockets) in per_worker.iter_mut().enumerate() {
            let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
            if i == 0 {
                addr = listener.local_addr().map_err(StartError::Setup)?;
                bound.push(addr);
            }
            sockets.push(listener);
        }
    }
    Ok(Bound {
        per_worker,
        addrs: bound,
    })
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?.into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What each serving thread needs.
pub struct Launch {
    /// Each listen address's settings, in `bind` order.
    pub per_listener: Vec<Arc<ConnShared>>,
    pub admit: Arc<super::admission::Admit>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: mpsc::Sender<()>,
    /// Set when the server is dropped: the threads end, closing whatever
    /// connections are left.
    pub stop: watch::Receiver<bool>,
}

/// Puts the calling thread under SCHED_BATCH: woken by network events, it
/// waits for the running task's time slice instead of preempting it, and
/// then finds more events ready at once. Measured on the 2-core bench: a
/// third of the voluntary context switches per request (0.5 → 0.17) and
/// 2–9% more requests per second. Nothing to lose if the kernel refuses.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only; pid 0 is this thread.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

/// Starts one thread per entry of `per_worker`.
pub fn spawn(
    per_worker: Vec<Vec<std::net::TcpListener>>,
    launch: &Launch,
) -> Result<(), StartError> {
    let (spread, inboxes) = Spread::new(per_worker.len());
    let spread = Arc::new(spread);
    for ((index, listeners), inbox) in per_worker.into_iter().enumerate().zip(inboxes) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Before sleeping in epoll_wait, let the peers (clients,
            // backends) that our last writes woke run first: more of their
            // answers are then ready when we look, and the thread sleeps and
            // wakes less often. Measured on 2 cores: half the voluntary
            // context switches per request.
            .on_thread_park(std::thread::yield_now)
            .build()
            .map_err(StartError::Setup)?;
        let worker = Worker {
            index,
            spread: Arc::clone(&spread),
            admit: Arc::clone(&launch.admit),
            metrics: Arc::clone(&launch.metrics),
            shutdown: launch.shutdown.clone(),
            drain: launch.drain.clone(),
        };
        let shared = launch.per_listener.clone();
        let mut stop = launch.stop.clone();
        std::thread::Builder::new()
            .name(format!("palisade-io-{index}"))
            .spawn(move || {
                crate::upstream::pin_thread_slot(index);
                batch_scheduling();
                runtime.block_on(async move {
                    for (std_listener, shared) in listeners.into_iter().zip(shared) {
                        match TcpListener::from_std(std_listener) {
                            Ok(listener) => {
                                tokio::spawn(accept_loop(listener, shared, worker.clone()));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot use a listening socket"),
                        }
                    }
                    tokio::spawn(inbox_loop(inbox, worker));
                    let _ = stop.wait_for(|stopped| *stopped).await;
                });
            })
            .map_err(StartError::Setup)?;
    }
    Ok(())
}
