use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::util::*;

fn upstream(extra: &str, servers: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"app\"\nservers = [{}]\n{extra}\n[[routes]]\nupstream = \"app\"\n",
        list.join(", ")
    )
}

async fn post(addr: std::net::SocketAddr, body: &'static str) -> Got {
    let req = Request::post("/form")
        .header("host", "site.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    send(addr, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_ejects_a_failing_server_and_brings_it_back() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let proxy = Proxy::start(&upstream(
        "[upstreams.health_check]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 2",
        &[a.addr, b.addr],
    ))
    .await;
    b.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..10 {
        assert_eq!(get(proxy.addr, "site.test", "/", &[]).await.body, "a");
    }
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    let down = format!(
        "palisade_upstream_server_healthy{{upstream=\"app\",server=\"{}\"}} 0",
        b.addr
    );
    assert!(
        metrics.contains(&down),
        "metrics show {} down:\n{metrics}",
        b.addr
    );

    b.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen_b = false;
    for _ in 0..10 {
        seen_b |= get(proxy.addr, "site.test", "/", &[]).await.body == "b";
    }
    assert!(seen_b, "recovered server gets traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_stops_sending_to_a_dead_server() {
    let live = Origin::named("live").await;
    let dead = dead_port().await;
    let proxy = Proxy::start(&upstream(
        "max_fails = 1\nfail_timeout = \"30s\"",
        &[dead, live.addr],
    ))
    .await;
    for _ in 0..6 {
        let got = get(proxy.addr, "site.test", "/", &[]).await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "live"));
    }
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    let failures =
        format!("palisade_upstream_failures_total{{upstream=\"app\",server=\"{dead}\"}} 1");
    assert!(
        metrics.contains(&failures),
        "one failure, then ejected:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_after_it_reached_a_backend_but_get_is() {
    // The first server reads the request and hangs up without answering.
    let (bad, bad_connections) = raw_backend(b"").await;
    let good = Origin::named("good").await;
    let proxy = Proxy::start(&upstream("max_fails = 0\nretries = 1", &[bad, good.addr])).await;

    // Round robin: request 1 -> bad, 2 -> good, 3 -> bad.
    let first = post(proxy.addr, "a=1").await;
    assert_eq!(
        first.status, 502,
        "a POST that reached a backend is never replayed"
    );
    assert!(good.requests().iter().all(|s| s.method != "POST"));
    assert_eq!(get(proxy.addr, "site.test", "/", &[]).await.body, "good");
    let third = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(
        (third.status.as_u16(), third.body.as_str()),
        (200, "good"),
        "GET is retried"
    );
    assert_eq!(bad_connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_retried_when_the_connection_was_refused() {
    let dead = dead_port().await;
    let good = Origin::named("good").await;
    let proxy = Proxy::start(&upstream("max_fails = 0", &[dead, good.addr])).await;
    let got = post(proxy.addr, "a=1").await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "good"));
    assert_eq!(good.requests()[0].body.as_ref(), b"a=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_origin_gets_504_at_the_response_timeout() {
    let slow = Origin::start(|_| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let proxy = Proxy::start(&upstream("response_timeout = \"300ms\"", &[slow.addr])).await;
    let started = Instant::now();
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(got.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(!got.body.contains("late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_gets_our_502_page() {
    let proxy = Proxy::start(&upstream("", &[dead_port().await, dead_port().await])).await;
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(got.status, 502);
    assert!(got.body.contains("502 Bad Gateway"));
    assert!(
        !got.body.contains("127.0.0.1"),
        "the page never names a backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_backends_get_502_and_the_proxy_keeps_serving() {
    let garbage = raw_backend(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02").await.0;
    let early_close = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort")
        .await
        .0;
    let huge_headers: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let oversized = raw_backend(huge_headers).await.0;
    let good = Origin::named("good").await;
    let proxy = Proxy::start(&format!(
        r#"
[[upstreams]]
name = "garbage"
servers = ["{garbage}"]
[[upstreams]]
name = "early"
servers = ["{early_close}"]
[[upstreams]]
name = "oversized"
servers = ["{oversized}"]
[[upstreams]]
name = "good"
servers = ["{}"]
[[routes]]
path_prefix = "/garbage"
upstream = "garbage"
[[routes]]
path_prefix = "/early"
upstream = "early"
[[routes]]
path_prefix = "/oversized"
upstream = "oversized"
[[routes]]
upstream = "good"
"#,
        good.addr
    ))
    .await;
    assert_eq!(
        get(proxy.addr, "site.test", "/garbage", &[]).await.status,
        502
    );
    assert_eq!(
        get(proxy.addr, "site.test", "/early", &[]).await.status,
        502
    );
    assert_eq!(
        get(proxy.addr, "site.test", "/oversized", &[]).await.status,
        502
    );
    assert_eq!(get(proxy.addr, "site.test", "/", &[]).await.body, "good");
}
