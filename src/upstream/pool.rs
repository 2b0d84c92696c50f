//! Keep-alive HTTP/1.1 connections to one backend server.
//!
//! Idle connections are kept per worker thread: a request takes one whose
//! connection task runs on its own thread, so the exchange never wakes
//! another thread. A connection goes back to the pool only after its response
//! body was read to the end; one whose body was abandoned is dropped, since
//! the bytes still in flight would belong to no request.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Sender = SendRequest<Full<Bytes>>;

/// Why no connection could be had. Nothing was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

pub struct ConnPool {
    addr: SocketAddr,
    connect_timeout: Duration,
    max_idle_per_thread: usize,
    idle_timeout: Duration,
    /// Idle connections with the time they were put back.
    idle: Vec<Mutex<Vec<(Sender, Instant)>>>,
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

    fn slot(&self) -> &Mutex<Vec<(Sender, Instant)>> {
        &self.idle[thread_slot() % self.idle.len()]
    }

    /// An idle connection that is ready for a request, if any: this
    /// thread's first, then another thread's (tasks move between workers, so
    /// connections come back to whichever thread finished the response).
    pub fn take_idle(&self) -> Option<Sender> {
        let own = thread_slot() % self.idle.len();
        (0..self.idle.len()).find_map(|k| self.take_from(&self.idle[(own + k) % self.idle.len()]))
    }

    fn take_from(&self, slot: &Mutex<Vec<(Sender, Instant)>>) -> Option<Sender> {
        let Ok(mut idle) = slot.lock() else {
            return None;
        };
        let mut busy = Vec::new();
        let mut found = None;
        while let Some((sender, since)) = idle.pop() {
            // Past the idle timeout the backend may close it at any moment.
            if sender.is_closed() || since.elapsed() >= self.idle_timeout {
                continue;
            }
            if sender.is_ready() {
                found = Some(sender);
                break;
            }
            // Its last response just ended and its task has not caught up:
            // keep it for the next request.
            busy.push((sender, since));
        }
        idle.extend(busy);
        found
    }

    /// A new connection; its task is spawned on the current thread's runtime
    /// worker.
    pub async fn connect(&self) -> Result<Sender, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .max_headers(200)
            .handshake(TokioIo::new(stream))
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Returns a connection whose last response was read to the end.
    pub fn put_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.slot().lock()
            && idle.len() < self.max_idle_per_thread
        {
            idle.push((sender, Instant::now()));
        }
    }
}

/// A small per-thread index, stable for the thread's life.
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
