//! The first two gates. The IP filter's CIDR map: building it from
//! 1,000,000 blocks (IPv4 and IPv6, nested and disjoint, allow and deny)
//! and looking addresses up. The rate limiter's in-memory decision, for one
//! busy key and across 1,000,000 keys.
//!   cargo bench --bench ipfilter

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::IpNet;
use palisade::ipgeo::cidr::{CidrMap, Listed};

fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// A million blocks: nine in ten IPv4 (/8 to /32), one in ten IPv6.
fn million_blocks() -> Vec<(IpNet, Listed)> {
    let mut next = xorshift(0x5eed_cafe_f00d_beef);
    (0..1_000_000)
        .map(|i| {
            let listed = if next().is_multiple_of(3) {
                Listed::Allow
            } else {
                Listed::Deny
            };
            let net = if i % 10 == 0 {
                let addr = Ipv6Addr::from(u128::from(next()) << 64 | u128::from(next()));
                IpNet::new(IpAddr::V6(addr), 16 + (next() % 113) as u8)
            } else {
                let addr = Ipv4Addr::from(next() as u32);
                IpNet::new(IpAddr::V4(addr), 8 + (next() % 25) as u8)
            };
            (
                net.map_or_else(
                    |_| IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    |n| n.trunc(),
                ),
                listed,
            )
        })
        .collect()
}

fn cidr(c: &mut Criterion) {
    let blocks = million_blocks();
    let text: String = blocks
        .iter()
        .map(|(net, _)| format!("{net}  # entry\n"))
        .collect();
    c.bench_function("parse a 1,000,000-line list file and build its map", |b| {
        b.iter(|| {
            let nets = palisade::ipgeo::lists::parse_list(black_box(&text)).unwrap_or_default();
            black_box(CidrMap::new(nets.into_iter().map(|n| (n, Listed::Deny))))
        })
    });
    c.bench_function("build map from 1,000,000 CIDRs", |b| {
        b.iter(|| black_box(CidrMap::new(blocks.iter().copied())))
    });
    let map = CidrMap::new(blocks.iter().copied());
    let mut next = xorshift(42);
    let probes: Vec<IpAddr> = (0..4096)
        .map(|i| {
            if i % 10 == 0 {
                IpAddr::V6(Ipv6Addr::from(
                    u128::from(next()) << 64 | u128::from(next()),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(next() as u32))
            }
        })
        .collect();
    let mut group = c.benchmark_group("lookup among 1,000,000 CIDRs");
    group.throughput(Throughput::Elements(probes.len() as u64));
    group.bench_function("4096 random addresses", |b| {
        b.iter(|| {
            probes
                .iter()
                .filter(|ip| map.lookup(**ip) == Some(Listed::Deny))
                .count()
        })
    });
    group.finish();
}

fn ratelimit(c: &mut Criterion) {
    use palisade::ratelimit::bucket::Rate;
    use palisade::ratelimit::store::MemoryStore;
    let rate =
        Rate::new(100, std::time::Duration::from_secs(1), 200).unwrap_or_else(|| unreachable!());
    let store = MemoryStore::new(1_000_000);
    let mut now = 0u64;
    c.bench_function("ratelimit decision, one busy key", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(store.take(b"key:203.0.113.9", &rate, now))
        })
    });
    // Keys as the stage builds them (limit id, then the client's address),
    // made on the fly: a request's key is in cache, and a table of a
    // million keys would add a cache miss of its own to every decision.
    let mut i = 0u32;
    c.bench_function("ratelimit decision, 1,000,000 keys", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            now += 1_000;
            let mut key = [0u8; 12];
            key[..8].copy_from_slice(&0x5eed_u64.to_le_bytes());
            key[8..].copy_from_slice(&i.to_be_bytes());
            black_box(store.take(&key, &rate, now))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = cidr, ratelimit
}
criterion_main!(benches);
