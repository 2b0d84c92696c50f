//! WebSocket upgrades: tunnelled only on routes that allow them, and only
//! once the backend really answers 101; otherwise the connection stays
//! HTTP and the backend never sees `Upgrade`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

fn config(origin: std::net::SocketAddr, websocket: bool) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\nwebsocket = {websocket}\n"
    )
}

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads until the end of a head (CRLF CRLF); what follows it stays in the
/// returned tail.
async fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let tail = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), tail);
        }
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk))
            .await
            .expect("head in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A backend that accepts the upgrade, then answers every byte upper-cased.
async fn echo_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (head, _) = read_head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await
        .unwrap();
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let upper = chunk[..n].to_ascii_uppercase();
                    if s.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            }
        }
        head
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_is_tunnelled_once_the_backend_answers_101() {
    let (backend, seen) = echo_backend().await;
    let proxy = Proxy::start(&config(backend, true)).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(UPGRADE).await.unwrap();
    let (head, tail) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(tail.is_empty());
    for message in ["hello", "second frame"] {
        client.write_all(message.as_bytes()).await.unwrap();
        let mut got = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(3), client.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got, message.to_ascii_uppercase().as_bytes());
    }
    drop(client);
    let backend_head = seen.await.unwrap().to_ascii_lowercase();
    assert!(
        backend_head.contains("upgrade: websocket"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("connection: upgrade"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{backend_head}"
    );
    assert!(backend_head.contains("x-forwarded-for:"), "{backend_head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_on_a_route_without_websocket_stays_plain_http() {
    let origin = Origin::named("plain").await;
    let proxy = Proxy::start(&config(origin.addr, false)).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(UPGRADE).await.unwrap();
    let (head, _) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = &origin.requests()[0];
    assert!(!seen.headers.contains_key("upgrade"), "{:?}", seen.headers);
    assert!(
        seen.headers.get("connection").is_none_or(|c| !c
            .to_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("upgrade")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_declines_the_upgrade_leaves_the_connection_http() {
    let origin = Origin::start(|_| Reply::ok("no websocket here")).await;
    let proxy = Proxy::start(&config(origin.addr, true)).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(UPGRADE).await.unwrap();
    let (head, mut tail) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    // The same connection still speaks HTTP: a second request is answered.
    let body_len = "no websocket here".len();
    while tail.len() < body_len {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        tail.extend_from_slice(&chunk[..n]);
    }
    client
        .write_all(b"GET /again HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let (again, _) = read_head(&mut client).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert_eq!(origin.hits(), 2);
    assert!(origin.requests()[0].headers.contains_key("upgrade"));
}

/// A handshake carries no body (RFC 6455 §4.1): an "upgrade" with one is
/// plain HTTP, forwarded whole, so none of the client's bytes is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_request_with_a_body_is_forwarded_as_plain_http() {
    let origin = Origin::named("plain").await;
    let proxy = Proxy::start(&config(origin.addr, true)).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await
        .unwrap();
    let (head, _) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = &origin.requests()[0];
    assert_eq!(seen.body.as_ref(), b"abc");
    assert!(!seen.headers.contains_key("upgrade"), "{:?}", seen.headers);
}
