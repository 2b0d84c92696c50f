use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

fn config(origin: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n[server.limits]\n{limits}\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_dribbling_client_is_cut_off_while_a_normal_client_is_served() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "header_read_timeout = \"500ms\"")).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dribbler = tokio::spawn(async move {
        // One header byte every 100 ms: each read resets no timer.
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = [0u8; 1024];
        // The server has closed (or answered 408 and closed).
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        );
        (closed, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(proxy.addr, "site.test", "/", &[]).await.body, "ok");
    let (closed, after) = dribbler.await.unwrap();
    assert!(closed, "the slow client was cut off");
    assert!(after < Duration::from_secs(4), "cut off after {after:?}");
    assert_eq!(
        origin.hits(),
        1,
        "the dribbled request never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_over_the_limit_gets_413() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "max_request_body = \"1KiB\"")).await;
    let big = Request::post("/")
        .header("host", "site.test")
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .unwrap();
    assert_eq!(send(proxy.addr, big).await.status, 413);

    // Chunked, no Content-Length: counted while read.
    let chunk = "a".repeat(800);
    let raw_request = format!(
        "POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (answer, _) = raw(proxy.addr, raw_request.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let small = Request::post("/")
        .header("host", "site.test")
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    assert_eq!(send(proxy.addr, small).await.status, 200);
    assert_eq!(origin.hits(), 1, "only the small body reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_and_those_in_are_served() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "max_connections = 2")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        held.push(sender);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_refused_with(proxy.addr, "503").await;
    for sender in &mut held {
        let req = Request::get("/")
            .header("host", "site.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    let metrics = get_after_drop(held, &proxy).await;
    assert!(
        metrics.contains("palisade_refused_connections_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        "{}[log]\naccess = \"{}\"\n",
        config(origin.addr, "max_connections_per_client = 2"),
        log.display()
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over its share, a client is told so: 429, not the server's 503.
    assert_refused_with(proxy.addr, "429").await;
    let lines = log_lines(&log, 1).await;
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("\"error\":\"too_many_connections\"")
                && l.contains("\"status\":429")),
        "{lines:?}"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(proxy.addr, "site.test", "/", &[]).await.status,
        200,
        "a closed connection gives its place back"
    );
    let metrics = get_after_drop(held, &proxy).await;
    assert!(
        metrics.contains("palisade_refused_client_connections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_requests_rejected_total{reason=\"too_many_connections\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_refused_connections_total 0"),
        "{metrics}"
    );
}

/// A new connection gets `status` and is closed.
async fn assert_refused_with(addr: std::net::SocketAddr, status: &str) {
    let (refused, closed) = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        refused.starts_with(&format!("HTTP/1.1 {status}")),
        "{refused}"
    );
    assert!(closed, "the refused connection is closed");
}

async fn get_after_drop<T>(held: Vec<T>, proxy: &Proxy) -> String {
    drop(held);
    get(proxy.admin, "admin", "/metrics", &[]).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400_and_a_closed_connection() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "")).await;
    let hostile: [&[u8]; 13] = [
        b"GET / HTTP/1.1\r\nHost: site.test\r\nbad header line\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: site.test\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
        b"GET / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        // obs-fold (RFC 9112 §5.2): a continuation line a backend might join.
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
        // Whitespace between a field name and its colon (RFC 9112 §5.1).
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        // Control characters and a bare CR in the request line or a field.
        b"GET /\x01 HTTP/1.1\r\nHost: site.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-A: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-A: a\rX-B: b\r\n\r\n",
        b"GET /\r HTTP/1.1\r\nHost: site.test\r\n\r\n",
        // HTTP/0.9 (no version) and versions we do not speak.
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: site.test\r\n\r\n",
        b"GET / HTTP/3.0\r\nHost: site.test\r\n\r\n",
    ];
    for bytes in hostile {
        let (answer, closed) = raw(proxy.addr, bytes, Duration::from_secs(3)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{:?} got {answer}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            closed,
            "{:?} left the connection open",
            String::from_utf8_lossy(bytes)
        );
    }
    let (answer, _) = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "missing Host: {answer}");
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        get(proxy.addr, "site.test", "/", &[]).await.body,
        "ok",
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connection_is_closed_after_the_timeout() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "keepalive_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0))), "closed by the server: {n:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_with_prior_knowledge_is_served() {
    let origin = Origin::start(|_| {
        Reply::ok("over h2")
            .header("x-origin", "kept")
            .header("server", "Apache")
    })
    .await;
    let proxy = Proxy::start(&config(origin.addr, "")).await;
    let mut sender = h2_client(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let resp = sender
        .send_request(empty_get("http://site.test/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-origin"], "kept");
    assert!(!resp.headers().contains_key("server"), "hidden over h2 too");
    assert_eq!(resp.headers().get_all("x-request-id").iter().count(), 1);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), b"over h2");
    let seen = &origin.requests()[0];
    assert_eq!(
        seen.headers["host"], "site.test",
        ":authority becomes Host upstream"
    );
    assert_eq!(seen.headers["via"], "2 palisade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_request_headers_are_refused_and_closed() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "max_header_bytes = \"16KiB\"\nmax_headers = 20",
    ))
    .await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (answer, closed) = raw(proxy.addr, huge.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert!(closed);
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: site.test\r\n{many}\r\n");
    let (answer, closed) = raw(proxy.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert!(closed);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_request_target_gets_414_and_never_reaches_the_backend() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, "max_uri_bytes = \"1KiB\"")).await;
    let long = format!(
        "GET /search?q={} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        "a".repeat(2000)
    );
    let (answer, _) = raw(proxy.addr, long.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let fits = format!(
        "GET /search?q={} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        "a".repeat(900)
    );
    let (answer, _) = raw(proxy.addr, fits.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_a_large_answer_is_cut_off() {
    let big = "x".repeat(32 << 20);
    let origin = Origin::start(move |_| Reply::ok(big.clone())).await;
    let proxy = Proxy::start(&config(origin.addr, "keepalive_timeout = \"300ms\"")).await;
    let mut stalled = TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    // Never read: the proxy's socket fills and its writes stop moving.
    let open = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("palisade_open_connections "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let started = Instant::now();
    let mut seen_open = false;
    loop {
        let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
        match open(&metrics) {
            Some(0) if seen_open => break,
            Some(n) if n > 0 => seen_open = true,
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stalled connection is still open: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
    assert_eq!(get(proxy.addr, "site.test", "/", &[]).await.status, 200);
}

/// Every limit answers with its own status, names itself in the access
/// log's `error` field and counts in `palisade_requests_rejected_total`,
/// including those refused before the request head was complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_gives_its_status_a_log_field_and_a_metric() {
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        "{}[log]\naccess = \"{}\"\n",
        config(
            origin.addr,
            "max_uri_bytes = \"1KiB\"\nmax_header_bytes = \"16KiB\"\nmax_request_body = \"1KiB\""
        ),
        log.display()
    ))
    .await;
    let cases = [
        (
            format!(
                "GET /?q={} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
                "a".repeat(2000)
            ),
            "414",
            "uri_too_long",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n",
                "a".repeat(32 * 1024)
            ),
            "431",
            "headers_too_large",
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2048\r\n\r\n{}",
                "a".repeat(2048)
            ),
            "413",
            "payload_too_large",
        ),
        (
            "GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n".to_string(),
            "400",
            "bad_request",
        ),
    ];
    for (request, status, _) in &cases {
        let (answer, _) = raw(proxy.addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer}"
        );
    }
    let lines = log_lines(&log, cases.len()).await;
    let errors: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["status"].to_string(),
                v["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    for (_, status, kind) in &cases {
        assert!(
            errors.contains(&(status.to_string(), kind.to_string())),
            "no {status} line with error {kind}: {errors:?}"
        );
        let series = format!("palisade_requests_rejected_total{{reason=\"{kind}\"}} 1");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert_eq!(origin.hits(), 0);
}

/// 1,000 hostile connections at once — a third dribbling their head, a
/// third sending a body a byte at a time, a third never reading a large
/// answer — and a normal client on its own connection still gets p99 under
/// 100 ms. Slow connections cost a parked task each, never a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_do_not_slow_a_normal_one() {
    let big = "x".repeat(1 << 20);
    let origin = Origin::start(move |seen| {
        if seen.path == "/big" {
            Reply::ok(big.clone())
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "header_read_timeout = \"30s\"\nkeepalive_timeout = \"30s\"",
    ))
    .await;
    let mut dribblers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let start: &[u8] = match i % 3 {
            0 => b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Slow: a",
            1 => b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100000\r\n\r\na",
            _ => b"GET /big HTTP/1.1\r\nHost: site.test\r\n\r\n",
        };
        s.write_all(start).await.unwrap();
        if i % 3 == 2 {
            readers.push(s);
        } else {
            dribblers.push(s);
        }
    }
    // The dribblers keep dribbling, one byte each every 200 ms; the
    // readers are held open and never read.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let dribbler = tokio::spawn(async move {
        loop {
            for s in &mut dribblers {
                let _ = s.write_all(b"a").await;
            }
            tokio::select! {
                _ = &mut stop_rx => return dribblers.len(),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let got = get(proxy.addr, "site.test", "/", &[]).await;
        took.push(started.elapsed());
        assert_eq!(got.body, "ok");
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100 - 1];
    eprintln!(
        "normal client beside 1,000 slow ones: p50 {:?}, p99 {p99:?}",
        took[took.len() / 2]
    );
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    let _ = stop_tx.send(());
    assert_eq!(dribbler.await.unwrap(), 667);
    assert_eq!(readers.len(), 333);
    let open = metrics
        .lines()
        .find(|l| l.starts_with("palisade_open_connections "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        open.is_some_and(|open| open >= 1000),
        "the slow connections were not all open while we measured: {open:?}"
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

/// A body dribbled a byte at a time falls behind `min_body_rate` once the
/// grace (`header_read_timeout`) is over and gets 408, long before
/// `request_timeout`; a body that keeps up is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_below_the_minimum_rate_gets_408() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "header_read_timeout = \"500ms\"\nmin_body_rate = \"100\"\nrequest_timeout = \"60s\"",
    ))
    .await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dribbler = tokio::spawn(async move {
        // 5 bytes a second against a floor of 100.
        for _ in 0..100 {
            if slow.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
            {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        String::new()
    });
    let answer = dribbler.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off only after {:?}",
        started.elapsed()
    );
    // A body that keeps up is unaffected.
    let body = "b".repeat(50_000);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (answer, _) = raw(proxy.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(origin.hits(), 1, "the slow body never reached the backend");
}
