//! HTTP/1.x as clients speak it to the proxy: request framing (and the
//! smuggling shapes it must refuse), interim answers, pipelining, HTTP/1.0,
//! and what happens to a connection whose body was never read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

fn one_route(origin: std::net::SocketAddr) -> String {
    format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nhost = \"site.test\"\nupstream = \"app\"\n"
    )
}

/// An origin that answers with the method, path and body it received.
async fn echo_origin() -> Origin {
    Origin::start(|seen| {
        Reply::ok(format!(
            "{} {} {}",
            seen.method,
            seen.path,
            String::from_utf8_lossy(&seen.body)
        ))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_shapes_are_refused_and_never_reach_the_backend() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    let shapes: [(&[u8], &str); 11] = [
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "501",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "501",
        ),
        (
            b"POST / HTTP/1.0\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1, 2\r\n\r\nab",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2, 2\r\n\r\nab",
            "400",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            "400",
        ),
        // A chunk extension whose quote never closes: a backend reading it
        // another way would frame the body differently.
        (
            b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nx\r\n0\r\n\r\n",
            "400",
        ),
        (
            b"GET / HTTP/1.1\nHost: site.test\n\n",
            "400",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n",
            "400",
        ),
    ];
    for (bytes, status) in shapes {
        let (answer, closed) = raw(proxy.addr, bytes, Duration::from_secs(3)).await;
        let shown = String::from_utf8_lossy(bytes);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{shown:?} got {answer}"
        );
        assert!(closed, "{shown:?} left the connection open");
    }
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_reaches_the_backend_with_a_length() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    let (answer, _) = raw(
        proxy.addr,
        b"POST /form HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("POST /form hello world"), "{answer}");
    let seen = &origin.requests()[0];
    assert_eq!(seen.headers["content-length"], "11");
    assert!(!seen.headers.contains_key("transfer-encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_an_interim_answer_before_the_body_is_sent() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"PUT /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("an interim answer, not a wait")
        .unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("PUT /upload hello"), "{answer}");
    assert!(
        !origin.requests()[0].headers.contains_key("expect"),
        "the backend must not wait for a 100 we already gave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    let (answer, closed) = raw(
        proxy.addr,
        b"GET /one HTTP/1.1\r\nHost: site.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(closed, "Connection: close on the last request closes");
    let one = answer.find("GET /one ").expect("first answer");
    let two = answer.find("POST /two abc").expect("second answer");
    let three = answer.find("GET /three ").expect("third answer");
    assert!(one < two && two < three, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_gets_a_length_and_a_close_unless_it_asks_for_keepalive() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    let (answer, closed) = raw(
        proxy.addr,
        b"GET /old HTTP/1.0\r\nHost: site.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-length: 9"),
        "{answer}"
    );
    assert!(closed);

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /old HTTP/1.0\r\nHost: site.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(answer.contains("connection: keep-alive"), "{answer}");
        assert!(answer.ends_with("get /old "), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_request_body_gets_its_answer_and_then_a_closed_connection() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&one_route(origin.addr)).await;
    // No route for this host: the 404 is decided before the body is read,
    // and 256 KiB of it are still arriving when the answer goes out.
    let mut request =
        b"POST / HTTP/1.1\r\nHost: other.test\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 256 * 1024));
    let (answer, closed) = raw(proxy.addr, &request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.contains("</html>"),
        "the whole page arrived: {answer}"
    );
    assert!(closed, "the unread body makes the connection unusable");
    assert_eq!(origin.hits(), 0);
}
