//! Whether a new connection may be served: the global `max_connections`
//! and the per-client `max_connections_per_client` (by TCP peer address;
//! trusted proxies, which carry many clients, are exempt). The returned
//! `Admission` holds both places until the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const SHARDS: usize = 16;

pub struct Admit {
    permits: Arc<Semaphore>,
    per_client: Arc<PerClient>,
}

struct PerClient {
    /// 0: no per-client limit.
    max: usize,
    exempt: Vec<IpNet>,
    open: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
}

/// A connection's places; dropping it frees them.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

struct ClientSlot {
    ip: IpAddr,
    per_client: Arc<PerClient>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    ClientFull,
}

impl Admit {
    pub fn new(max_connections: usize, per_client: usize, exempt: Vec<IpNet>) -> Admit {
        Admit {
            permits: Arc::new(Semaphore::new(max_connections)),
            per_client: Arc::new(PerClient {
                max: per_client,
                exempt,
                open: Default::default(),
            }),
        }
    }

    pub fn admit(&self, peer: IpAddr) -> Result<Admission, Refusal> {
        let global = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let client = self.per_client.take(peer.to_canonical())?;
        Ok(Admission {
            _global: global,
            _client: client,
        })
    }
}

impl PerClient {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let index = match ip {
            IpAddr::V4(v4) => usize::from(v4.octets()[3]),
            IpAddr::V6(v6) => usize::from(v6.octets()[15]),
        };
        &self.open[index % SHARDS]
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Option<ClientSlot>, Refusal> {
        if self.max == 0 || self.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        // Counts are plain numbers: a poisoned lock is still consistent.
        let mut open = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return Err(Refusal::ClientFull);
        }
        *count += 1;
        Ok(Some(ClientSlot {
            ip,
            per_client: Arc::clone(self),
        }))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_client
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_gets_it_back() {
        let admit = Admit::new(10, 2, vec!["10.0.0.1/32".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = admit.admit(a).unwrap();
        let _second = admit.admit(a).unwrap();
        assert_eq!(admit.admit(a).err(), Some(Refusal::ClientFull));
        assert!(
            admit.admit("192.0.2.2".parse().unwrap()).is_ok(),
            "others are not affected"
        );
        drop(first);
        assert!(
            admit.admit(a).is_ok(),
            "a closed connection frees its place"
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..9).map(|_| admit.admit(proxy).unwrap()).collect();
        assert_eq!(
            admit.admit(proxy).err(),
            Some(Refusal::Full),
            "the global limit still holds"
        );
        drop(held);
    }
}
