//! Active health checks: every `interval`, each server of a group gets a GET
//! for the check path on a connection of its own; `fall` consecutive failures
//! mark it down and `rise` consecutive passes bring it back. The checker
//! holds only a weak reference, so it stops by itself when a reload replaces
//! the group.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use tokio::task::JoinSet;

use super::pool::ConnPool;
use super::{ServerState, UpstreamPool};
use crate::config::HealthCheckConfig;

pub fn spawn_checker(pool: &Arc<UpstreamPool>, check: HealthCheckConfig) {
    tokio::spawn(run(Arc::downgrade(pool), check));
}

async fn run(pool: Weak<UpstreamPool>, check: HealthCheckConfig) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let mut probes = JoinSet::new();
        for (index, server) in strong.servers.iter().enumerate() {
            let conns = Arc::clone(&server.conns);
            let headers = probe_headers(server, &check);
            let path = check.path.clone();
            let (timeout, expected) = (check.timeout, check.expected_status);
            probes.spawn(async move {
                let ok = match headers {
                    Some(headers) => tokio::time::timeout(timeout, probe(&conns, headers, &path))
                        .await
                        .is_ok_and(|status| status == Some(expected)),
                    None => false,
                };
                (index, ok)
            });
        }
        drop(strong);
        while let Some(result) = probes.join_next().await {
            let Ok((index, ok)) = result else { continue };
            if let Some(strong) = pool.upgrade() {
                record(&strong, index, ok, &check);
            }
        }
    }
}

/// The status the server answered, or `None` when it could not be asked.
async fn probe(conns: &ConnPool, headers: HeaderMap, path: &str) -> Option<u16> {
    let mut conn = conns.connect().await.ok()?;
    conn.send(&Method::GET, path, &headers, &[]).await.ok()?;
    let (parts, _) = conn.read_head(&Method::GET).await.ok()?;
    Some(parts.status.as_u16())
}

fn probe_headers(server: &ServerState, check: &HealthCheckConfig) -> Option<HeaderMap> {
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| server.addr.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_str(&host).ok()?);
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("palisade-health-check"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(headers)
}

fn record(pool: &UpstreamPool, index: usize, ok: bool, check: &HealthCheckConfig) {
    let server = &pool.servers[index];
    if ok {
        server.check_fails.store(0, Ordering::Relaxed);
        let passes = server.check_passes.fetch_add(1, Ordering::Relaxed) + 1;
        if passes >= check.rise && !server.healthy.swap(true, Ordering::Relaxed) {
            server.healthy_gauge.set(1);
            // A server that passes its checks again is trusted again at once.
            server.ejected_until_ms.store(0, Ordering::Relaxed);
            tracing::info!(upstream = %pool.config.name, server = %server.addr, "server is healthy again");
        }
    } else {
        server.check_passes.store(0, Ordering::Relaxed);
        let fails = server.check_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= check.fall && server.healthy.swap(false, Ordering::Relaxed) {
            server.healthy_gauge.set(0);
            tracing::warn!(upstream = %pool.config.name, server = %server.addr, "server failed {fails} health checks: taken out");
        }
    }
}
