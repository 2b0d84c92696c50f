//! The fleet store: buckets kept in Redis, so every Palisade instance that
//! points at one Redis shares each limit. One Lua script makes the whole
//! decision on the server (read, decide, write with expiry), so instances
//! never race each other, and it reads Redis's own clock, so the
//! instances' clocks need not agree.
//!
//! Redis being away must never hold a request: a decision waits at most
//! the configured timeout, and while the link is down decisions fail at
//! once (the caller applies the limit's fallback) as a background task
//! reconnects with backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::time::Instant;

use super::bucket::{Decision, Rate};
use crate::config::RedisConfig;

/// The bucket as one number, the time (µs on Redis's clock) at which it is
/// full again, exactly as `bucket::take` keeps it in memory. Microseconds,
/// because Lua numbers are doubles: exact up to 2^53, which nanoseconds
/// since 1970 are not. The key expires when the bucket is full again, so
/// Redis holds only buckets in use.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local full_at = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local start = math.max(full_at, now)
local after = start + interval
local debt = after - now
if debt <= tolerance then
  redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.floor(debt / 1000) + 1)
  return {1, math.floor((tolerance - debt) / interval), 0, debt}
end
return {0, 0, debt - tolerance, start - now}
"#;

/// Why a decision could not be made in Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no connection to redis (reconnecting)")]
    Down,
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

#[derive(Clone)]
enum Link {
    /// Never connected yet: decisions wait (within their timeout) for the
    /// first connection.
    Connecting,
    /// `generation` tells a stale failure report from a current one.
    Up {
        conn: MultiplexedConnection,
        generation: u64,
    },
    /// Lost or never reached; a background task is reconnecting.
    Down,
}

pub struct RedisStore {
    config: RedisConfig,
    client: redis::Client,
    script: redis::Script,
    link: watch::Sender<Link>,
    reconnecting: AtomicBool,
    generations: AtomicU64,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisStore {
    /// A store for `config`; connects on first use.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: redis::Client::open(config.url.as_str())?,
            config: config.clone(),
            script: redis::Script::new(GCRA),
            link: watch::Sender::new(Link::Connecting),
            reconnecting: AtomicBool::new(false),
            generations: AtomicU64::new(0),
        })
    }

    /// The settings it was made with (a reload keeps the store, and its
    /// connection, when they are unchanged).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// One request for `key` (the limit's name and the request's key)
    /// against `rate`, decided in Redis within the configured timeout.
    pub async fn take(self: &Arc<Self>, key: &[u8], rate: &Rate) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.config.timeout;
        let (mut conn, generation) = self.connection(deadline).await?;
        let mut full_key = Vec::with_capacity(self.config.prefix.len() + key.len());
        full_key.extend_from_slice(self.config.prefix.as_bytes());
        full_key.extend_from_slice(key);
        let interval_us = (rate.interval / 1_000).max(1);
        let tolerance_us = interval_us.saturating_mul(u64::from(rate.burst));
        let mut call = self.script.key(full_key);
        call.arg(interval_us).arg(tolerance_us);
        let reply = tokio::time::timeout_at(deadline, call.invoke_async(&mut conn)).await;
        let (allowed, remaining, retry_after_us, reset_us): (i64, i64, i64, i64) = match reply {
            Err(_) => return Err(StoreError::Timeout),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.lost(generation, &e);
                }
                return Err(e.into());
            }
            Ok(Ok(reply)) => reply,
        };
        let nanos = |us: i64| u64::try_from(us).unwrap_or(0).saturating_mul(1_000);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: nanos(retry_after_us),
            reset: nanos(reset_us),
        })
    }

    /// The live connection, waiting until `deadline` only while the very
    /// first connection is being made.
    async fn connection(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<(MultiplexedConnection, u64), StoreError> {
        let mut link = self.link.subscribe();
        loop {
            let state = link.borrow_and_update().clone();
            match state {
                Link::Up { conn, generation } => return Ok((conn, generation)),
                Link::Down => {
                    self.reconnect();
                    return Err(StoreError::Down);
                }
                Link::Connecting => self.reconnect(),
            }
            match tokio::time::timeout_at(deadline, link.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(StoreError::Down),
                Err(_) => return Err(StoreError::Timeout),
            }
        }
    }

    /// Marks connection `generation` as lost (unless a newer one replaced
    /// it already) and starts reconnecting.
    fn lost(self: &Arc<Self>, generation: u64, error: &redis::RedisError) {
        let marked = self.link.send_if_modified(|link| match link {
            Link::Up { generation: g, .. } if *g == generation => {
                *link = Link::Down;
                true
            }
            _ => false,
        });
        if marked {
            tracing::warn!(error = %error, "lost the rate-limit redis connection; reconnecting");
        }
        self.reconnect();
    }

    /// Starts the reconnect task unless one runs. It holds the store only
    /// weakly, so a store dropped by a reload stops trying.
    fn reconnect(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reconnecting.store(false, Ordering::Release);
            return;
        };
        let store = Arc::downgrade(self);
        runtime.spawn(reconnect_loop(store));
    }
}

async fn reconnect_loop(store: Weak<RedisStore>) {
    let mut backoff = FIRST_BACKOFF;
    let mut logged = false;
    loop {
        let Some(this) = store.upgrade() else { return };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        match this
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                let generation = this.generations.fetch_add(1, Ordering::Relaxed) + 1;
                this.link.send_replace(Link::Up { conn, generation });
                this.reconnecting.store(false, Ordering::Release);
                tracing::info!("rate-limit redis connected");
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot reach the rate-limit redis; retrying");
                    logged = true;
                }
                this.link.send_if_modified(|link| {
                    let changed = !matches!(link, Link::Down);
                    *link = Link::Down;
                    changed
                });
            }
        }
        drop(this);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
