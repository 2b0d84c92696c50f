//! Fleet mode: limits with `store = "redis"` shared by several instances
//! through a real redis-server, and what each limit does when Redis stops
//! or stalls (its `on_redis_error`), then recovery when Redis is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::util::*;

fn config(origin: SocketAddr, redis_url: &str, timeout: &str, limits: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\n\
         [ratelimit.redis]\nurl = \"{redis_url}\"\ntimeout = \"{timeout}\"\n{limits}\n"
    )
}

/// Two limits under different paths: one falls back to this instance's
/// own bucket, one refuses.
const OPEN_AND_CLOSED: &str = "[[ratelimit.limits]]\nname = \"open\"\nrate = \"1000/h\"\n\
    path_prefix = \"/open\"\nstore = \"redis\"\non_redis_error = \"open\"\n\
    [[ratelimit.limits]]\nname = \"closed\"\nrate = \"1000/h\"\n\
    path_prefix = \"/closed\"\nstore = \"redis\"\non_redis_error = \"closed\"\n";

async fn from(proxy: &Proxy, path: &str, ip: &str) -> Got {
    // Bounded, so a hanging decision fails the test instead of stalling it.
    tokio::time::timeout(
        Duration::from_secs(5),
        get(proxy.addr, "site.test", path, &[("x-forwarded-for", ip)]),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {path} hung"))
}

/// What Redis holds under `key`: its value and milliseconds left to live.
async fn redis_key(url: &str, key: &str) -> (Option<String>, i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    (value, ttl)
}

async fn metrics(proxy: &Proxy) -> String {
    get(proxy.admin, "admin", "/metrics", &[]).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_through_redis() {
    let redis = RedisServer::start().await;
    let origin = Origin::named("ok").await;
    let limits = "[[ratelimit.limits]]\nname = \"fleet\"\nrate = \"3/h\"\nstore = \"redis\"\n";
    let text = config(origin.addr, &redis.url(), "2s", limits);
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;

    assert_eq!(from(&a, "/", "192.0.2.1").await.status, 200);
    assert_eq!(from(&b, "/", "192.0.2.1").await.status, 200);
    let third = from(&a, "/", "192.0.2.1").await;
    assert_eq!(third.status, 200);
    let state = third.headers["ratelimit"].to_str().unwrap();
    assert!(
        state.starts_with("\"fleet\";r=0;t="),
        "the third of three tokens, counted across both instances: {state}"
    );
    let refused = from(&b, "/", "192.0.2.1").await;
    assert_eq!(
        refused.status, 429,
        "b saw one request; the fleet saw three"
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(from(&a, "/", "192.0.2.1").await.status, 429);
    assert_eq!(
        from(&b, "/", "192.0.2.2").await.status,
        200,
        "another client, another bucket"
    );
    assert_eq!(origin.hits(), 4);

    // The bucket is one readable key that expires once it is full again
    // (three intervals of 20 minutes).
    let (value, ttl) = redis_key(&redis.url(), "palisade:rl:fleet:192.0.2.1").await;
    assert!(value.is_some(), "the shared bucket lives in redis");
    assert!(
        (3_500_000..=3_600_001).contains(&ttl),
        "expires when full again: {ttl} ms"
    );
    for m in [metrics(&a).await, metrics(&b).await] {
        assert!(
            m.contains(
                "palisade_ratelimit_redis_errors_total{limit=\"fleet\",fallback=\"open\"} 0"
            ),
            "no redis errors: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_fails_open_or_closed_per_limit_then_recovers() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, &url, "300ms", OPEN_AND_CLOSED)).await;
    assert_eq!(from(&proxy, "/open", "192.0.2.1").await.status, 200);
    assert_eq!(from(&proxy, "/closed", "192.0.2.1").await.status, 200);
    assert!(
        redis_key(&url, "palisade:rl:closed:192.0.2.1")
            .await
            .0
            .is_some()
    );

    let port = redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let open = from(&proxy, "/open", "192.0.2.1").await;
        assert_eq!(open.status, 200, "fails open: this instance's own bucket");
        let closed = from(&proxy, "/closed", "192.0.2.1").await;
        assert_eq!(closed.status, 503, "fails closed");
        assert_eq!(closed.headers["retry-after"], "1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "decided within the timeout, not hanging: {:?}",
            started.elapsed()
        );
    }
    let m = metrics(&proxy).await;
    for line in [
        "palisade_ratelimit_redis_errors_total{limit=\"open\",fallback=\"open\"} 3",
        "palisade_ratelimit_redis_errors_total{limit=\"closed\",fallback=\"closed\"} 3",
    ] {
        assert!(m.contains(line), "missing {line}:\n{m}");
    }
    assert_eq!(
        origin.hits(),
        5,
        "the closed limit's 503s never reach the origin"
    );

    // Back on the same port: the proxy reconnects by itself.
    let redis = RedisServer::on_port(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if from(&proxy, "/closed", "192.0.2.1").await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected to redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (value, _) = redis_key(&redis.url(), "palisade:rl:closed:192.0.2.1").await;
    assert!(value.is_some(), "decisions are made in redis again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_a_decision_at_most_its_timeout() {
    let redis = RedisServer::start().await;
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, &redis.url(), "200ms", OPEN_AND_CLOSED)).await;
    assert_eq!(from(&proxy, "/closed", "192.0.2.1").await.status, 200);

    redis.pause();
    let started = Instant::now();
    let closed = from(&proxy, "/closed", "192.0.2.1").await;
    let open = from(&proxy, "/open", "192.0.2.1").await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!(closed.status, 503);
    assert_eq!(open.status, 200);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "each decision waited its 200 ms timeout, no more: {took:?}"
    );
    assert_eq!(from(&proxy, "/closed", "192.0.2.1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_while_redis_is_down_serves_and_connects_later() {
    let port = RedisServer::start().await.stop();
    let origin = Origin::named("ok").await;
    let url = format!("redis://127.0.0.1:{port}");
    let proxy = Proxy::start(&config(origin.addr, &url, "100ms", OPEN_AND_CLOSED)).await;
    assert_eq!(from(&proxy, "/open", "192.0.2.1").await.status, 200);
    assert_eq!(from(&proxy, "/closed", "192.0.2.1").await.status, 503);

    let _redis = RedisServer::on_port(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while from(&proxy, "/closed", "192.0.2.1").await.status != 200 {
        assert!(Instant::now() < deadline, "never connected to redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn broken_redis_settings_are_reported_as_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
         [ratelimit.redis]\nurl = \"http://cache:6379\"\ntimeout = \"0s\"\n\
         [[ratelimit.limits]]\nrate = \"1/s\"\nstore = \"disk\"\n\
         [[ratelimit.limits]]\nrate = \"1/s\"\nstore = \"redis\"\non_redis_error = \"maybe\"\n\
         [[ratelimit.limits]]\nrate = \"1/s\"\non_redis_error = \"closed\"\n",
    )
    .unwrap();
    let p = path.display();
    check_fails_with(
        &path,
        &[
            format!("{p}:7:7: ratelimit.redis.url must look like redis://"),
            format!("{p}:8:11: ratelimit.redis.timeout must be more than 0"),
            format!("{p}:11:9: store \"disk\""),
            format!("{p}:15:18: on_redis_error \"maybe\""),
            format!("{p}:18:18: on_redis_error applies only with store = \"redis\""),
        ],
    );

    // Without a [ratelimit.redis] table there is nothing to share through.
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
         [[ratelimit.limits]]\nrate = \"1/s\"\nstore = \"redis\"\n",
    )
    .unwrap();
    check_fails_with(
        &path,
        &[format!(
            "{p}:8:9: store = \"redis\" needs a [ratelimit.redis] table"
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_api_key_is_kept_in_redis_as_its_digest() {
    let redis = RedisServer::start().await;
    let origin = Origin::named("ok").await;
    let limits = "[[ratelimit.limits]]\nname = \"api\"\nkey = \"header:X-Api-Key\"\nrate = \"1/h\"\n\
                  store = \"redis\"\n";
    let proxy = Proxy::start(&config(origin.addr, &redis.url(), "2s", limits)).await;
    let huge = "k".repeat(4000);
    let with_key = |key: String| {
        let addr = proxy.addr;
        async move {
            get(addr, "site.test", "/", &[("x-api-key", key.as_str())])
                .await
                .status
        }
    };
    assert_eq!(with_key(huge.clone()).await, 200);
    assert_eq!(
        with_key(huge.clone()).await,
        429,
        "the digest is the bucket"
    );
    assert_eq!(
        with_key(format!("{huge}x")).await,
        200,
        "another value, another bucket"
    );
    assert_eq!(with_key("short".into()).await, 200);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("palisade:rl:api:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(keys[2], "palisade:rl:api:short");
    for long in &keys[..2] {
        let digest = long.strip_prefix("palisade:rl:api:sha1:").unwrap_or("");
        assert!(
            digest.len() == 40 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "long values are stored as a 40-digit digest: {long}"
        );
    }
}

/// The ids of the other clients connected to the redis behind `conn`.
async fn other_clients(conn: &mut redis::aio::MultiplexedConnection) -> Vec<u64> {
    let own: u64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(conn)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let mut ids: Vec<u64> = list
        .lines()
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .filter(|id| *id != own)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_redis_connection_unless_the_server_changes() {
    let first = RedisServer::start().await;
    let second = RedisServer::start().await;
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let write = |url: &str| {
        let limits =
            "[[ratelimit.limits]]\nname = \"fleet\"\nrate = \"100/h\"\nstore = \"redis\"\n";
        let text = config(origin.addr, url, "2s", limits) + "[log]\naccess = \"off\"\n";
        std::fs::write(&path, text).unwrap()
    };
    write(&first.url());
    let proxy = Proxy::from_config(palisade::config::Config::load(&path).unwrap()).await;
    assert_eq!(from(&proxy, "/", "192.0.2.1").await.status, 200);
    let client = redis::Client::open(first.url()).unwrap();
    let mut watcher = client.get_multiplexed_async_connection().await.unwrap();
    let connected = other_clients(&mut watcher).await;
    assert_eq!(connected.len(), 1, "one connection from the proxy");

    assert_eq!(reload(proxy.admin).await.status, 200);
    assert_eq!(from(&proxy, "/", "192.0.2.1").await.status, 200);
    assert_eq!(
        other_clients(&mut watcher).await,
        connected,
        "the same connection after a reload that keeps [ratelimit.redis]"
    );

    write(&second.url());
    assert_eq!(reload(proxy.admin).await.status, 200);
    assert_eq!(from(&proxy, "/", "192.0.2.1").await.status, 200);
    let (value, _) = redis_key(&second.url(), "palisade:rl:fleet:192.0.2.1").await;
    assert!(value.is_some(), "decisions moved to the new server");
}
