//! Allow and deny CIDR lists as one lookup structure: the address space cut
//! into disjoint segments, each carrying the decision of the most specific
//! CIDR that covers it, searched by binary search.
//!
//! CIDR blocks either nest or do not touch, so the segments come out of one
//! sorted sweep with a stack of open blocks; a million blocks build in a
//! fraction of a second and a lookup is O(log n) with no allocation.
//!
//! Overlap rule: the most specific block (longest prefix) decides. When the
//! same block is both allowed and denied, deny wins.

use std::net::IpAddr;

use ipnet::IpNet;

/// What a list says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Allow,
    Deny,
}

/// The compiled lists. IPv4 addresses (and IPv4-mapped IPv6 ones) are
/// looked up among the IPv4 blocks.
#[derive(Debug, Default, Clone)]
pub struct CidrMap {
    v4: Segments<u32>,
    v6: Segments<u128>,
}

/// Segment starts in ascending order, each with the decision that holds
/// from it up to the next start (`None`: no block covers it).
#[derive(Debug, Clone)]
struct Segments<T> {
    starts: Vec<T>,
    listed: Vec<Option<Listed>>,
}

impl<T> Default for Segments<T> {
    fn default() -> Self {
        Segments {
            starts: Vec::new(),
            listed: Vec::new(),
        }
    }
}

impl CidrMap {
    /// Builds the map from blocks and their decisions, in any order.
    pub fn new(blocks: impl IntoIterator<Item = (IpNet, Listed)>) -> CidrMap {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, listed) in blocks {
            match net.trunc() {
                IpNet::V4(n) => v4.push(Block {
                    first: u32::from(n.network()),
                    last: u32::from(n.broadcast()),
                    prefix: n.prefix_len(),
                    listed,
                }),
                IpNet::V6(n) => v6.push(Block {
                    first: u128::from(n.network()),
                    last: u128::from(n.broadcast()),
                    prefix: n.prefix_len(),
                    listed,
                }),
            }
        }
        CidrMap {
            v4: sweep(v4),
            v6: sweep(v6),
        }
    }

    /// The decision of the most specific block covering `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<Listed> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.find(u32::from(ip)),
            IpAddr::V6(ip) => self.v6.find(u128::from(ip)),
        }
    }
}

struct Block<T> {
    first: T,
    last: T,
    prefix: u8,
    listed: Listed,
}

/// Integer address types: what the sweep needs of them.
trait Address: Copy + Ord {
    const MAX: Self;
    /// The next address; only asked below `MAX`.
    fn next(self) -> Self;
}

impl Address for u32 {
    const MAX: u32 = u32::MAX;
    fn next(self) -> u32 {
        self.saturating_add(1)
    }
}

impl Address for u128 {
    const MAX: u128 = u128::MAX;
    fn next(self) -> u128 {
        self.saturating_add(1)
    }
}

impl<T: Address> Segments<T> {
    fn find(&self, ip: T) -> Option<Listed> {
        let after = self.starts.partition_point(|start| *start <= ip);
        after.checked_sub(1).and_then(|i| self.listed[i])
    }

    fn push(&mut self, start: T, listed: Option<Listed>) {
        if self.starts.last() == Some(&start) {
            // A block opening where another closed: the later one holds.
            if let Some(last) = self.listed.last_mut() {
                *last = listed;
            }
        } else if self.listed.last() != Some(&listed) || self.starts.is_empty() {
            self.starts.push(start);
            self.listed.push(listed);
        }
    }
}

/// Disjoint segments from nested-or-disjoint blocks: sorted by start, wider
/// first (deny first on a tie, so it ends on top of the stack), then swept
/// with a stack of the blocks still open.
fn sweep<T: Address>(mut blocks: Vec<Block<T>>) -> Segments<T> {
    blocks.sort_unstable_by(|a, b| {
        (a.first, a.prefix, a.listed == Listed::Allow).cmp(&(
            b.first,
            b.prefix,
            b.listed == Listed::Allow,
        ))
    });
    let mut out = Segments::default();
    let mut open: Vec<Block<T>> = Vec::new();
    for block in blocks {
        close_before(&mut open, &mut out, block.first);
        if open
            .last()
            .is_some_and(|top| top.first == block.first && top.last == block.last)
        {
            // The same block again: the first kept (deny sorts first).
            continue;
        }
        out.push(block.first, Some(block.listed));
        open.push(block);
    }
    // Blocks reaching the top of the space stay open; the rest close.
    close_before(&mut open, &mut out, T::MAX);
    out
}

/// Closes every open block that ends before `at`, recording where the
/// decision falls back to the enclosing block (or to none).
fn close_before<T: Address>(open: &mut Vec<Block<T>>, out: &mut Segments<T>, at: T) {
    while let Some(top) = open.last() {
        if top.last >= at {
            break;
        }
        // `top.last < at`, so the next address exists.
        let after = top.last.next();
        open.pop();
        out.push(after, open.last().map(|b| b.listed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_block_decides() {
        let map = CidrMap::new([
            (net("10.0.0.0/8"), Listed::Deny),
            (net("10.1.0.0/16"), Listed::Allow),
            (net("10.1.2.0/24"), Listed::Deny),
            (net("192.0.2.7/32"), Listed::Deny),
        ]);
        assert_eq!(map.lookup(ip("9.255.255.255")), None);
        assert_eq!(map.lookup(ip("10.0.0.0")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("10.1.0.1")), Some(Listed::Allow));
        assert_eq!(map.lookup(ip("10.1.2.200")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("10.1.3.0")), Some(Listed::Allow));
        assert_eq!(map.lookup(ip("10.2.0.0")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("11.0.0.0")), None);
        assert_eq!(map.lookup(ip("192.0.2.7")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("192.0.2.8")), None);
        assert_eq!(map.lookup(ip("::ffff:10.1.2.3")), Some(Listed::Deny));
    }

    #[test]
    fn deny_wins_a_tie_and_edges_of_the_space_hold() {
        let map = CidrMap::new([
            (net("0.0.0.0/0"), Listed::Allow),
            (net("255.255.255.255/32"), Listed::Deny),
            (net("203.0.113.0/24"), Listed::Allow),
            (net("203.0.113.0/24"), Listed::Deny),
            (net("2001:db8::/32"), Listed::Deny),
            (net("::/0"), Listed::Allow),
        ]);
        assert_eq!(map.lookup(ip("0.0.0.0")), Some(Listed::Allow));
        assert_eq!(map.lookup(ip("255.255.255.254")), Some(Listed::Allow));
        assert_eq!(map.lookup(ip("255.255.255.255")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("203.0.113.9")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("2001:db8::1")), Some(Listed::Deny));
        assert_eq!(map.lookup(ip("2001:db9::1")), Some(Listed::Allow));
    }

    /// Against a brute-force reference: for random nested and disjoint
    /// blocks, the answer is the longest covering prefix (deny on a tie).
    #[test]
    fn lookups_agree_with_a_linear_scan() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut blocks = Vec::new();
        for _ in 0..300 {
            let prefix = 8 + (next() % 25) as u8;
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (next() as u32 & 0x00ff_ffff));
            let listed = if next() % 2 == 0 {
                Listed::Allow
            } else {
                Listed::Deny
            };
            blocks.push((
                IpNet::new(IpAddr::V4(addr), prefix).unwrap().trunc(),
                listed,
            ));
        }
        let map = CidrMap::new(blocks.clone());
        for _ in 0..20_000 {
            let probe = IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 | (next() as u32 & 0x00ff_ffff),
            ));
            let expected = blocks
                .iter()
                .filter(|(n, _)| n.contains(&probe))
                .max_by_key(|(n, l)| (n.prefix_len(), *l == Listed::Deny))
                .map(|(_, l)| *l);
            assert_eq!(map.lookup(probe), expected, "{probe}");
        }
    }
}
