//! Keep-alive HTTP/1.1 connections to one backend server.
//!
//! Idle connections are kept per worker thread, and a request looks at its
//! own thread's first, so a connection tends to stay with one worker. A
//! connection goes back to the pool only after its response body was read to
//! the end (see `h1::UpstreamBody`); one whose body was abandoned is closed,
//! since the bytes still in flight would belong to no request.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::h1::UpstreamConn;

/// Why no connection could be had. Nothing was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct ConnPool {
    addr: SocketAddr,
    connect_timeout: Duration,
    max_idle_per_thread: usize,
    idle_timeout: Duration,
    /// Idle connections with the time they were put back.
    idle: Vec<Mutex<Vec<(UpstreamConn, Instant)>>>,
}

impl ConnPool {
    pub fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> ConnPool {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        ConnPool {
            addr,
            connect_timeout,
            max_idle_per_thread: max_idle.div_ceil(threads),
            idle_timeout,
            idle: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn slot(&self) -> &Mutex<Vec<(UpstreamConn, Instant)>> {
        &self.idle[thread_slot() % self.idle.len()]
    }

    /// An idle connection that is ready for a request, if any: this
    /// thread's first, then another thread's, moved to this thread's reactor
    /// (an idle backend connection is cheaper to move than to open).
    pub fn take_idle(&self) -> Option<UpstreamConn> {
        let me = thread_slot();
        let own = me % self.idle.len();
        let conn = (0..self.idle.len())
            .find_map(|k| self.take_from(&self.idle[(own + k) % self.idle.len()]))?;
        if conn.home == me {
            Some(conn)
        } else {
            conn.rehome(me).ok()
        }
    }

    fn take_from(&self, slot: &Mutex<Vec<(UpstreamConn, Instant)>>) -> Option<UpstreamConn> {
        let Ok(mut idle) = slot.lock() else {
            return None;
        };
        while let Some((conn, since)) = idle.pop() {
            // Past the idle timeout the backend may close it at any moment;
            // one that became readable while idle was closed or is confused.
            if since.elapsed() < self.idle_timeout && conn.looks_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<UpstreamConn, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = stream.set_nodelay(true);
        Ok(UpstreamConn::new(stream, thread_slot()))
    }

    /// Returns a connection whose last response was read to the end.
    pub fn put_back(&self, conn: UpstreamConn) {
        if let Ok(mut idle) = self.slot().lock()
            && idle.len() < self.max_idle_per_thread
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
