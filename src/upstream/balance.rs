//! Choosing a server of a group: round robin, smooth weighted round robin,
//! least connections (weighted) and consistent hashing on the client IP.
//!
//! Every policy takes an `eligible` predicate (healthy, not ejected, not yet
//! tried by this request) and walks on from its first choice until it finds
//! an eligible server, so a down server only moves its own share of traffic.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Balance;

/// Points on the hash ring for the heaviest server; lighter ones get fewer.
const RING_POINTS_MAX_WEIGHT: u64 = 160;

pub struct Balancer {
    policy: Balance,
    weights: Vec<u32>,
    next: AtomicUsize,
    /// Smooth weighted round-robin order (weighted policy only).
    schedule: Vec<u16>,
    /// Sorted (point, server) pairs (ip_hash policy only).
    ring: Vec<(u64, u16)>,
}

impl Balancer {
    pub fn new(policy: Balance, servers: &[(SocketAddr, u32)]) -> Balancer {
        let weights: Vec<u32> = servers.iter().map(|(_, w)| (*w).max(1)).collect();
        let schedule = if policy == Balance::Weighted {
            smooth_weighted_schedule(&weights)
        } else {
            Vec::new()
        };
        let ring = if policy == Balance::IpHash {
            hash_ring(servers)
        } else {
            Vec::new()
        };
        Balancer {
            policy,
            weights,
            next: AtomicUsize::new(0),
            schedule,
            ring,
        }
    }

    /// The chosen server's index, or `None` when no server is eligible.
    pub fn pick(
        &self,
        client_ip: IpAddr,
        eligible: impl Fn(usize) -> bool,
        in_flight: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            // Nothing to balance, and no shared counter to touch.
            return eligible(0).then_some(0);
        }
        match self.policy {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| start.wrapping_add(k) % n)
                    .find(|&i| eligible(i))
            }
            Balance::Weighted => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len)
                    .map(|k| self.schedule[start.wrapping_add(k) % len] as usize)
                    .find(|&i| eligible(i))
            }
            Balance::LeastConn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, usize)> = None;
                for i in (0..n).map(|k| start.wrapping_add(k) % n) {
                    if !eligible(i) {
                        continue;
                    }
                    let load = in_flight(i);
                    let better = match best {
                        None => true,
                        // load_i / w_i < load_b / w_b, without division.
                        Some((b, load_b)) => {
                            (load as u64) * u64::from(self.weights[b])
                                < (load_b as u64) * u64::from(self.weights[i])
                        }
                    };
                    if better {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
            Balance::IpHash => {
                let point = hash_of(&client_ip);
                let len = self.ring.len();
                let start = self.ring.partition_point(|(p, _)| *p < point);
                (0..len)
                    .map(|k| self.ring[(start + k) % len].1 as usize)
                    .find(|&i| eligible(i))
            }
        }
    }
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    // DefaultHasher::new() has fixed keys: the same client maps to the same
    // server on every instance of a fleet and across restarts.
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// nginx's smooth weighted round robin, unrolled into one period: weights
/// 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u16);
    }
    schedule
}

/// Points are keyed by server address, not position, so adding or removing
/// a server moves only the clients that hashed to it.
fn hash_ring(servers: &[(SocketAddr, u32)]) -> Vec<(u64, u16)> {
    let max_weight = servers
        .iter()
        .map(|(_, w)| u64::from(*w))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ring = Vec::new();
    for (index, (addr, weight)) in servers.iter().enumerate() {
        let points = (RING_POINTS_MAX_WEIGHT * u64::from(*weight))
            .div_ceil(max_weight)
            .max(1);
        for replica in 0..points {
            ring.push((hash_of(&(addr, replica)), index as u16));
        }
    }
    ring.sort_unstable();
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)), *w))
            .collect()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_cycles_and_skips_ineligible() {
        let b = Balancer::new(Balance::RoundRobin, &servers(&[1, 1, 1]));
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(IP, |_| true, |_| 0).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick(IP, |i| i != 1, |_| 0).unwrap())
            .collect();
        assert!(!picks.contains(&1));
        assert_eq!(b.pick(IP, |_| false, |_| 0), None);
    }

    #[test]
    fn smooth_weighted_interleaves() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_prefers_idle_server_by_weight() {
        let b = Balancer::new(Balance::LeastConn, &servers(&[1, 3]));
        let loads = [2usize, 4];
        // 2/1 > 4/3: the heavier server is less loaded relative to its weight.
        assert_eq!(b.pick(IP, |_| true, |i| loads[i]), Some(1));
    }

    #[test]
    fn ip_hash_is_stable_and_moves_little_when_a_server_goes() {
        let b = Balancer::new(Balance::IpHash, &servers(&[1, 1, 1, 1]));
        let ips: Vec<IpAddr> = (0..400u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let before: Vec<_> = ips
            .iter()
            .map(|ip| b.pick(*ip, |_| true, |_| 0).unwrap())
            .collect();
        let again: Vec<_> = ips
            .iter()
            .map(|ip| b.pick(*ip, |_| true, |_| 0).unwrap())
            .collect();
        assert_eq!(before, again);
        let after: Vec<_> = ips
            .iter()
            .map(|ip| b.pick(*ip, |i| i != 2, |_| 0).unwrap())
            .collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "a client of a healthy server must not move");
            }
        }
        for s in 0..4 {
            assert!(
                before.iter().filter(|&&x| x == s).count() > 40,
                "server {s} gets a share"
            );
        }
    }
}
