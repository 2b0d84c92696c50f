//! Keep-alive HTTP/1.1 connections to one backend server.
//!
//! Idle connections are kept per worker thread, and a request looks at its
//! own thread's first, so a connection tends to stay with one worker. A
//! connection goes back to the pool only after its response body was read to
//! the end (see `h1::UpstreamBody`); one whose body was abandoned is closed,
//! since the bytes still in flight would belong to no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h1::UpstreamConn;
use super::stream::BackendStream;
use crate::config::UpstreamTls;

/// Why no connection could be had. Nothing was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// How to start TLS on a new connection to an `https://` server.
struct TlsTarget {
    connector: TlsConnector,
    name: ServerName<'static>,
}

pub struct ConnPool {
    addr: SocketAddr,
    tls: Option<TlsTarget>,
    connect_timeout: Duration,
    /// One idle list per thread slot.
    slots: Vec<Arc<IdleSlot>>,
}

/// One thread's idle connections to a server. Each slot is its own
/// allocation, aligned to keep it off its neighbours' cache lines: the
/// serving threads lock and count on their own slot on every request.
#[repr(align(128))]
pub struct IdleSlot {
    /// Idle connections with the time they were put back.
    idle: Mutex<Vec<(UpstreamConn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl ConnPool {
    pub fn new(
        addr: SocketAddr,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> ConnPool {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let max_idle = max_idle.div_ceil(threads);
        let tls = tls.map(|tls| TlsTarget {
            connector: TlsConnector::from(Arc::clone(&tls.client)),
            name: tls
                .server_name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into())),
        });
        ConnPool {
            addr,
            tls,
            connect_timeout,
            slots: (0..threads)
                .map(|_| {
                    Arc::new(IdleSlot {
                        idle: Mutex::new(Vec::new()),
                        max_idle,
                        idle_timeout,
                    })
                })
                .collect(),
        }
    }

    /// The calling thread's idle list, where its finished connections go.
    pub fn home_slot(&self) -> &Arc<IdleSlot> {
        &self.slots[thread_slot() % self.slots.len()]
    }

    /// An idle connection that is ready for a request, if any: this
    /// thread's first, then another thread's, moved to this thread's reactor
    /// (an idle backend connection is cheaper to move than to open).
    pub fn take_idle(&self) -> Option<UpstreamConn> {
        let me = thread_slot();
        let own = me % self.slots.len();
        let conn =
            (0..self.slots.len()).find_map(|k| self.slots[(own + k) % self.slots.len()].take())?;
        if conn.home == me {
            Some(conn)
        } else {
            conn.rehome(me).ok()
        }
    }

    /// A new connection, with its TLS handshake done for `https://`
    /// servers; both within the connect timeout. A certificate that fails
    /// verification fails the connection: nothing is sent.
    pub async fn connect(&self) -> Result<UpstreamConn, ConnectError> {
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &self.tls else {
                return Ok::<_, ConnectError>(BackendStream::Plain(tcp));
            };
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(BackendStream::Tls(Box::new(stream)))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        Ok(UpstreamConn::new(stream, thread_slot()))
    }
}

impl IdleSlot {
    fn take(&self) -> Option<UpstreamConn> {
        let Ok(mut idle) = self.idle.lock() else {
            return None;
        };
        while let Some((mut conn, since)) = idle.pop() {
            // Past the idle timeout the backend may close it at any moment;
            // one that became readable while idle was closed or is confused.
            if since.elapsed() < self.idle_timeout && conn.looks_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last response was read to the end.
    pub fn put_back(&self, conn: UpstreamConn) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((conn, Instant::now()));
        }
    }
}

thread_local! {
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Gives a serving thread its own slot, so no two serving threads share an
/// idle list.
pub fn pin_thread_slot(index: usize) {
    SLOT.with(|slot| slot.set(index));
}

/// A small per-thread index, stable for the thread's life.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1 << 16);
    SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        slot.get()
    })
}
