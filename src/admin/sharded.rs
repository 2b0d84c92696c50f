//! Counters and histograms that every serving thread updates on every
//! request, split into per-thread shards and summed only when scraped.
//!
//! A plain atomic counter shared by all threads moves its cache line between
//! cores on every increment, and prometheus-client's histogram takes a lock
//! per observation; on the request path both cost more than the work they
//! count. Shards are cache-line aligned; a thread always writes the same
//! shard, so writes stay core-local.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

const SHARDS: usize = 16;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

fn my_shard() -> usize {
    SHARD.with(|s| *s)
}

#[repr(align(128))]
#[derive(Default)]
struct CounterShard(AtomicU64);

/// A monotonic counter (Prometheus `counter`).
#[derive(Clone)]
pub struct ShardedCounter(Arc<[CounterShard; SHARDS]>);

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter(Arc::new(std::array::from_fn(|_| CounterShard::default())))
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl ShardedCounter {
    pub fn inc(&self) {
        self.0[my_shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the latency buckets: 0.5 ms doubling to ~16 s, then +Inf.
const BUCKETS: usize = 16;

fn bucket_bound_nanos(i: usize) -> u64 {
    500_000u64 << i
}

#[repr(align(128))]
#[derive(Default)]
struct HistogramShard {
    sum_nanos: AtomicU64,
    count: AtomicU64,
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
}

/// A latency histogram in seconds (Prometheus `histogram`).
#[derive(Clone)]
pub struct LatencyHistogram(Arc<[HistogramShard; SHARDS]>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Arc::new(std::array::from_fn(|_| HistogramShard::default())))
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.snapshot();
        f.debug_struct("LatencyHistogram")
            .field("sum", &sum)
            .field("count", &count)
            .finish()
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS)
            .find(|&i| nanos <= bucket_bound_nanos(i))
            .unwrap_or(BUCKETS);
        let shard = &self.0[my_shard()];
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and per-bucket counts with their bounds.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0u64;
        let mut count = 0u64;
        let mut buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS {
                    f64::INFINITY
                } else {
                    bucket_bound_nanos(i) as f64 / 1e9
                };
                (bound, 0)
            })
            .collect();
        for shard in self.0.iter() {
            sum = sum.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
            count += shard.count.load(Ordering::Relaxed);
            for (slot, b) in buckets.iter_mut().zip(shard.buckets.iter()) {
                slot.1 += b.load(Ordering::Relaxed);
            }
        }
        (sum as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                let c = counter.clone();
                s.spawn(move || (0..1000).for_each(|_| c.inc()));
            }
        });
        assert_eq!(counter.get(), 8000);
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 100.0031).abs() < 1e-6, "{sum}");
        assert_eq!(buckets[0].1, 1, "0.1 ms <= 0.5 ms");
        assert_eq!(buckets[3].1, 1, "3 ms <= 4 ms");
        assert_eq!(buckets[BUCKETS].1, 1, "100 s only in +Inf");
        assert_eq!(buckets[BUCKETS].0, f64::INFINITY);
    }
}
