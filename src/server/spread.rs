//! Keeps the serving threads evenly loaded. The kernel spreads new
//! connections over the threads' SO_REUSEPORT sockets by a hash of the
//! addresses, which leaves one thread with, say, 40 of 64 keep-alive
//! connections and the other with 24 for as long as they stay open. A
//! thread that accepts a connection while it holds more than its share
//! hands it to the least loaded thread instead: one channel send per
//! connection, nothing per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// A connection moving to another serving thread.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub permit: super::admission::Admission,
    /// The listener's settings (plain or TLS).
    pub shared: Arc<super::conn::ConnShared>,
}

#[repr(align(128))]
struct OpenCount(AtomicUsize);

pub struct Spread {
    open: Vec<OpenCount>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

/// Counts a connection against its thread while it is open.
pub struct Open {
    spread: Arc<Spread>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.spread.open[self.worker]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// The spread over `workers` threads, and each thread's inbox.
    pub fn new(workers: usize) -> (Spread, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..workers)
            .map(|_| OpenCount(AtomicUsize::new(0)))
            .collect();
        (Spread { open, inboxes }, receivers)
    }

    /// The thread that should serve a connection `worker` just accepted:
    /// `worker` itself unless it holds more than one connection above the
    /// least loaded thread.
    pub fn choose(&self, worker: usize) -> usize {
        let mine = self.open[worker].0.load(Ordering::Relaxed);
        let (least, count) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.0.load(Ordering::Relaxed)))
            .min_by_key(|&(_, c)| c)
            .unwrap_or((worker, mine));
        if count + 1 < mine { least } else { worker }
    }

    /// Sends a connection to another thread; gives it back if that thread
    /// is gone.
    pub fn hand_off(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        match self.inboxes.get(to) {
            Some(inbox) => inbox.send(handoff).map_err(|e| e.0),
            None => Err(handoff),
        }
    }

    pub fn open(self: &Arc<Self>, worker: usize) -> Open {
        self.open[worker].0.fetch_add(1, Ordering::Relaxed);
        Open {
            spread: Arc::clone(self),
            worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_connection_unless_it_is_ahead_by_more_than_one() {
        let (spread, _rx) = Spread::new(3);
        let spread = Arc::new(spread);
        let held: Vec<_> = (0..3).map(|_| spread.open(0)).collect();
        assert_eq!(spread.choose(0), 1, "3 against 0: move");
        let _one = spread.open(1);
        let _two = spread.open(2);
        let _three = spread.open(1);
        // 3, 2, 1: worker 0 is two above the least loaded.
        assert_eq!(spread.choose(0), 2);
        let _four = spread.open(2);
        // 3, 2, 2: one above is fine.
        assert_eq!(spread.choose(0), 0);
        drop(held);
        assert_eq!(spread.choose(1), 0, "closed connections count no more");
    }
}
