use std::time::Duration;

use crate::util::*;

fn group(balance: &str, servers: &[String]) -> String {
    format!(
        "[[upstreams]]\nname = \"app\"\nbalance = \"{balance}\"\nservers = [{}]\n[[routes]]\nupstream = \"app\"\n",
        servers.join(", ")
    )
}

async fn bodies(proxy: &Proxy, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(proxy.addr, "site.test", "/", headers).await.body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let servers = [a.addr, b.addr, c.addr].map(|s| format!("\"{s}\""));
    let proxy = Proxy::start(&group("round_robin", &servers)).await;
    let counts = tally(&bodies(&proxy, 30, &[]).await);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_the_weights() {
    let (a, b) = (Origin::named("heavy").await, Origin::named("light").await);
    let servers = [
        format!("{{ address = \"{}\", weight = 3 }}", a.addr),
        format!("{{ address = \"{}\", weight = 1 }}", b.addr),
    ];
    let proxy = Proxy::start(&group("weighted", &servers)).await;
    let counts = tally(&bodies(&proxy, 40, &[]).await);
    assert_eq!(counts.get("heavy"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_the_busy_server() {
    let slow_or_fast = |name: &'static str| {
        move |seen: &Seen| {
            let reply = Reply::ok(name);
            if seen.path == "/slow" {
                reply.delay(Duration::from_millis(800))
            } else {
                reply
            }
        }
    };
    let a = Origin::start(slow_or_fast("a")).await;
    let b = Origin::start(slow_or_fast("b")).await;
    let servers = [a.addr, b.addr].map(|s| format!("\"{s}\""));
    let proxy = Proxy::start(&group("least_conn", &servers)).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { get(addr, "site.test", "/slow", &[]).await.body });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = bodies(&proxy, 6, &[]).await;
    let busy = slow.await.unwrap();
    assert!(
        fast.iter().all(|b| *b != busy),
        "server {busy} was busy but got {fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_each_client_on_one_server() {
    let (a, b, c) = (
        Origin::named("a").await,
        Origin::named("b").await,
        Origin::named("c").await,
    );
    let servers = [a.addr, b.addr, c.addr].map(|s| format!("\"{s}\""));
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}",
        group("ip_hash", &servers)
    ))
    .await;
    let mut used = std::collections::HashSet::new();
    for i in 0..24 {
        let client = format!("198.51.100.{i}");
        let first = bodies(&proxy, 3, &[("x-forwarded-for", &client)]).await;
        assert!(
            first.iter().all(|b| *b == first[0]),
            "{client} moved: {first:?}"
        );
        used.insert(first[0].clone());
    }
    assert_eq!(
        used.len(),
        3,
        "24 clients spread over all three servers: {used:?}"
    );
}
