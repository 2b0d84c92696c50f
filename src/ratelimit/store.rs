//! Buckets by key, in memory: shards of small maps behind their own locks,
//! so threads rarely meet. Keys are hashed with a per-process random seed
//! (they come from clients). A bucket that is full again is the same as no
//! bucket, so memory is bounded by dropping those first when a shard is at
//! its share of `max_keys`; if none is, a sixteenth of the shard goes (the
//! map's order, random under the seeded hash), so a flood of new keys costs
//! one sweep per many inserts, not one per insert.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use foldhash::fast::RandomState;

use super::bucket::{Decision, Rate, take};

const SHARDS: usize = 64;

pub struct MemoryStore {
    shards: Box<[Mutex<HashMap<u64, u64, NoHash>>]>,
    per_shard: usize,
    max_keys: usize,
    seed: RandomState,
}

/// The keys are hashes already.
#[derive(Default, Clone, Copy)]
struct NoHash;

#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for NoHash {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

impl MemoryStore {
    /// A store holding at most about `max_keys` buckets.
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            max_keys,
            seed: RandomState::default(),
        }
    }

    /// One request for `key` (with the limit's id mixed in by the caller)
    /// at `now` nanoseconds.
    pub fn take(&self, key: &[u8], rate: &Rate, now: u64) -> Decision {
        let hash = self.seed.hash_one(key);
        let shard = &self.shards[(hash as usize) % SHARDS];
        // A poisoned lock only means another thread panicked mid-update of
        // plain numbers: the map is still usable.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let full_at = map.get(&hash).copied().unwrap_or(0);
        let (decision, next) = take(rate, full_at, now);
        if next != full_at {
            if map.len() >= self.per_shard && !map.contains_key(&hash) {
                make_room(&mut map, now);
            }
            map.insert(hash, next);
        }
        decision
    }

    /// The bound it was made with.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the buckets that are full again; if there are none, a sixteenth
/// of the shard.
fn make_room(map: &mut HashMap<u64, u64, NoHash>, now: u64) {
    let before = map.len();
    map.retain(|_, full_at| *full_at > now);
    if map.len() == before {
        let mut to_drop = (before / 16).max(1);
        map.retain(|_, _| {
            if to_drop == 0 {
                return true;
            }
            to_drop -= 1;
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::bucket::{Clock, ManualClock};
    use super::*;

    #[test]
    fn keys_are_limited_apart_and_memory_stays_bounded() {
        let rate = Rate::new(1, Duration::from_secs(1), 2).unwrap();
        let store = MemoryStore::new(1_000);
        let clock = ManualClock::default();
        let take = |key: &[u8]| store.take(key, &rate, clock.now_nanos());
        assert!(take(b"a").allowed);
        assert!(take(b"a").allowed);
        assert!(!take(b"a").allowed);
        assert!(take(b"b").allowed, "another key, another bucket");
        for i in 0..100_000u32 {
            take(&i.to_le_bytes());
        }
        assert!(store.len() <= 1_000 + SHARDS, "{} buckets", store.len());
        // Full buckets are dropped first once time has passed.
        clock.advance(Duration::from_secs(10));
        take(b"late");
        assert!(take(b"a").allowed);
    }
}
