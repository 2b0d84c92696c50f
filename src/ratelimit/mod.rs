//! Rate limiting: token buckets per key (client address, address and
//! route, a header or cookie value), kept in a bounded in-memory store, and
//! the stage that answers 429 with `Retry-After` and the IETF `RateLimit`
//! headers. Time comes from a [`bucket::Clock`], so tests need no sleeps.

pub mod ban;
pub mod bucket;
pub mod redis;
pub mod stage;
pub mod store;
