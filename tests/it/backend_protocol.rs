//! How Palisade reads what backends send: every HTTP/1.1 framing a legacy
//! backend may use, connection reuse, and backends that break the rules.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::util::*;

fn routes(backends: &[(&str, std::net::SocketAddr)]) -> String {
    let mut text = String::new();
    for (name, addr) in backends {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nservers = [\"{addr}\"]\n[[routes]]\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_close_delimited_and_interim_responses_arrive_intact() {
    let chunked = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    .await
    .0;
    let until_close =
        raw_backend(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until close")
            .await
            .0;
    let interim =
        raw_backend(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .0;
    let no_content = raw_backend(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n")
        .await
        .0;
    let proxy = Proxy::start(&routes(&[
        ("chunked", chunked),
        ("close", until_close),
        ("interim", interim),
        ("empty", no_content),
    ]))
    .await;
    assert_eq!(
        get(proxy.addr, "site.test", "/chunked", &[]).await.body,
        "hello world"
    );
    assert_eq!(
        get(proxy.addr, "site.test", "/close", &[]).await.body,
        "read until close"
    );
    let got = get(proxy.addr, "site.test", "/interim", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"));
    let got = get(proxy.addr, "site.test", "/empty", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (204, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_framing_lies_get_502() {
    let two_lengths =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .0;
    let bad_chunk = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .0;
    let proxy = Proxy::start(&routes(&[("lengths", two_lengths), ("chunk", bad_chunk)])).await;
    assert_eq!(
        get(proxy.addr, "site.test", "/lengths", &[]).await.status,
        502
    );
    let (answer, _) = raw(
        proxy.addr,
        b"GET /chunk HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        !answer.contains("hello"),
        "a body we could not frame is never passed on: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_keepalive_connections_are_reused() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&routes(&[("app", origin.addr)])).await;
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, "site.test", "/app", &[]).await.body, "ok");
    }
    let connections = origin.connections.load(Ordering::SeqCst);
    assert!(
        connections <= 3,
        "20 requests opened {connections} backend connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_survives_a_backend_that_closed_its_idle_keepalive_connection() {
    // Answers one request per connection but promises keep-alive, then
    // hangs up: the pooled connection is dead by the next request.
    let (flaky, connections) =
        raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
            .await;
    let proxy = Proxy::start(&routes(&[("app", flaky)])).await;
    for _ in 0..5 {
        let got = get(proxy.addr, "site.test", "/app", &[]).await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_beside_chunked_framing_never_reaches_the_client() {
    // A response-smuggling shape: the client must see the decoded body with
    // a length that matches it, not the backend's stale Content-Length.
    let both = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
    )
    .await
    .0;
    let upgrade = raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        .await
        .0;
    let proxy = Proxy::start(&routes(&[("both", both), ("upgrade", upgrade)])).await;
    let got = get(proxy.addr, "site.test", "/both", &[]).await;
    assert_eq!(got.body, "hello world");
    assert_ne!(
        got.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
    assert_eq!(
        get(proxy.addr, "site.test", "/upgrade", &[]).await.status,
        502
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stalling_mid_body_is_cut_off_at_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&[b'x'; 20_000]).await;
                // ...and then nothing, with the connection held open.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{addr}\"]\nresponse_timeout = \"300ms\"\n[[routes]]\nupstream = \"app\"\n"
    ))
    .await;
    let started = std::time::Instant::now();
    let (answer, closed) = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(80)]
    );
    assert!(closed, "the client connection is cut, not left hanging");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
