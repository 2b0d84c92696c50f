//! Active health checks: every `interval`, each server of a group gets a GET
//! for the check path on a connection of its own; `fall` consecutive failures
//! mark it down and `rise` consecutive passes bring it back. The checker
//! holds only a weak reference, so it stops by itself when a reload replaces
//! the group.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
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
            let request = probe_request(server, &check);
            let (timeout, expected) = (check.timeout, check.expected_status);
            probes.spawn(async move {
                let ok = match request {
                    Some(req) => tokio::time::timeout(timeout, probe(&conns, req))
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
async fn probe(conns: &ConnPool, request: Request<Full<Bytes>>) -> Option<u16> {
    let mut sender = conns.connect().await.ok()?;
    let response = sender.send_request(request).await.ok()?;
    Some(response.status().as_u16())
}

fn probe_request(server: &ServerState, check: &HealthCheckConfig) -> Option<Request<Full<Bytes>>> {
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| server.addr.to_string());
    Request::get(check.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "palisade-health-check")
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::new()))
        .ok()
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
