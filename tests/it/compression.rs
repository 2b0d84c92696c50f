//! Compression on the way out, through the proxy: negotiation, the header
//! changes a coded body needs, what is never compressed, streaming, and
//! the cache keeping one encoding per coding.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{Origin, Proxy, Reply};

struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn fetch(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "site");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Raw {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes().to_vec(),
    }
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => {
            zstd::stream::read::Decoder::new(data)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn text(len: usize) -> String {
    (0..len)
        .map(|i| ["alpha ", "beta ", "gamma\n", "delta "][i % 4])
        .collect::<String>()
        .chars()
        .take(len)
        .collect()
}

async fn proxy_for(origin: &Origin, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n\
         [compression]\n{extra}\n",
        origin.addr
    ))
    .await
}

fn encoding(r: &Raw) -> &str {
    r.headers
        .get("content-encoding")
        .map_or("identity", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn every_coding_round_trips_byte_for_byte_at_every_size() {
    for len in [1024, 4095, 4096, 16 * 1024 + 1, 64 * 1024, 1024 * 1024] {
        let body = text(len);
        let sent = body.clone();
        let origin =
            Origin::start(move |_| Reply::ok(sent.clone()).header("content-type", "text/plain"))
                .await;
        let proxy = proxy_for(&origin, "").await;
        for coding in ["gzip", "br", "zstd"] {
            let got = fetch(proxy.addr, "GET", "/t", &[("accept-encoding", coding)]).await;
            assert_eq!(encoding(&got), coding, "{len} bytes");
            assert!(
                got.headers
                    .get("content-length")
                    .is_none_or(|v| v.to_str().unwrap() == got.body.len().to_string())
            );
            assert_eq!(
                decode(coding, &got.body),
                body.as_bytes(),
                "{coding} at {len}"
            );
            assert!(got.body.len() < len, "{coding} at {len} did not shrink");
        }
    }
}

#[tokio::test]
async fn the_client_q_values_and_server_order_choose_the_coding() {
    let origin = Origin::start(|_| Reply::ok(text(4096)).header("content-type", "text/html")).await;
    let proxy = proxy_for(&origin, "algorithms = [\"gzip\", \"br\"]").await;
    for (accept, expected) in [
        ("gzip, br", "gzip"),
        ("br, gzip;q=0.5", "br"),
        ("br;q=0, gzip", "gzip"),
        ("zstd", "identity"),
        ("identity", "identity"),
        ("*", "gzip"),
        ("*;q=0", "identity"),
    ] {
        let got = fetch(proxy.addr, "GET", "/", &[("accept-encoding", accept)]).await;
        assert_eq!(encoding(&got), expected, "Accept-Encoding: {accept}");
    }
    let none = fetch(proxy.addr, "GET", "/", &[]).await;
    assert_eq!(encoding(&none), "identity");
    assert_eq!(none.body, text(4096).as_bytes());
}

#[tokio::test]
async fn a_body_the_origin_already_encoded_is_not_encoded_again() {
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, text(8192).as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    answer.extend_from_slice(&gz);
    let (addr, _) = crate::util::raw_backend(Box::leak(answer.into_boxed_slice())).await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{addr}\"]\n[[routes]]\nupstream = \"app\"\n\
         [compression]\n"
    ))
    .await;
    let got = fetch(proxy.addr, "GET", "/", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(encoding(&got), "gzip");
    assert_eq!(got.body, gz);
}

#[tokio::test]
async fn vary_is_merged_and_strong_etags_become_weak() {
    let origin = Origin::start(|_| {
        Reply::ok(text(4096))
            .header("content-type", "application/json")
            .header("vary", "Cookie")
            .header("etag", "\"v1\"")
    })
    .await;
    let proxy = proxy_for(&origin, "").await;
    let got = fetch(proxy.addr, "GET", "/", &[("accept-encoding", "gzip")]).await;
    let vary: Vec<_> = got
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
    assert_eq!(got.headers["etag"], "W/\"v1\"");
    let plain = fetch(proxy.addr, "GET", "/", &[]).await;
    assert_eq!(plain.headers["etag"], "\"v1\"");
    assert!(
        plain
            .headers
            .get_all("vary")
            .iter()
            .any(|v| v == "Accept-Encoding")
    );
}

#[tokio::test]
async fn what_must_not_be_compressed_is_sent_as_it_is() {
    let origin = Origin::start(|seen| match seen.path.as_str() {
        "/png" => Reply::ok(text(4096)).header("content-type", "image/png"),
        "/small" => Reply::ok("tiny").header("content-type", "text/plain"),
        "/no-transform" => Reply::ok(text(4096))
            .header("content-type", "text/plain")
            .header("cache-control", "no-transform"),
        "/partial" => Reply::ok(text(4096))
            .status(206)
            .header("content-type", "text/plain")
            .header("content-range", "bytes 0-4095/9000"),
        _ => Reply::ok(text(4096)).header("content-type", "text/plain"),
    })
    .await;
    let proxy = proxy_for(&origin, "").await;
    let gzip = [("accept-encoding", "gzip")];
    for path in ["/png", "/small", "/no-transform", "/partial"] {
        let got = fetch(proxy.addr, "GET", path, &gzip).await;
        assert_eq!(encoding(&got), "identity", "{path}");
    }
    let head = fetch(proxy.addr, "HEAD", "/text", &gzip).await;
    assert_eq!(encoding(&head), "identity");
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_streamed_response_is_flushed_chunk_by_chunk() {
    // An origin that sends one event, then waits before the rest.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let first = format!("data: {}\n\n", "x".repeat(2000));
        let _ = s
            .write_all(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes())
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
    });
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{addr}\"]\n[[routes]]\nupstream = \"app\"\n\
         [compression]\n"
    ))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/events")
        .header("host", "site")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_millis(1500), body.frame())
        .await
        .expect("the first event came before the origin finished")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let mut partial = Vec::new();
    let _ = flate2::read::GzDecoder::new(&first[..]).read_to_end(&mut partial);
    assert!(partial.starts_with(b"data: xxx"), "{partial:?}");
}

async fn bytes_stored(proxy: &Proxy) -> u64 {
    let metrics = crate::util::get(proxy.admin, "admin", "/metrics", &[])
        .await
        .body;
    metrics
        .lines()
        .find(|l| l.starts_with("palisade_cache_bytes_stored "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_cache_keeps_one_encoding_per_coding_and_compresses_it_once() {
    let origin = Origin::start(|_| {
        Reply::ok(text(64 * 1024))
            .header("content-type", "text/html")
            .header("cache-control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n\
         [cache]\n[compression]\n",
        origin.addr
    ))
    .await;
    let identity = fetch(proxy.addr, "GET", "/page", &[]).await;
    assert_eq!(identity.body, text(64 * 1024).as_bytes());
    let before = bytes_stored(&proxy).await;
    let mut bodies = Vec::new();
    for accept in ["gzip", "br", "zstd", "gzip", "br", "identity"] {
        let got = fetch(proxy.addr, "GET", "/page", &[("accept-encoding", accept)]).await;
        let coding = encoding(&got).to_string();
        let plain = if coding == "identity" {
            got.body.clone()
        } else {
            decode(&coding, &got.body)
        };
        assert_eq!(plain, text(64 * 1024).as_bytes(), "{accept}");
        bodies.push((coding, got.body));
    }
    assert_eq!(origin.hits(), 1);
    assert_eq!(bodies[5].0, "identity");
    // Each coding's bytes joined the store, once.
    let encoded: u64 = bodies[..3].iter().map(|(_, b)| b.len() as u64).sum();
    let grown = bytes_stored(&proxy).await - before;
    assert!(
        grown >= encoded,
        "store grew {grown} bytes for {encoded} encoded"
    );
    assert_eq!(bodies[3].1, bodies[0].1);
    assert_eq!(bodies[4].1, bodies[1].1);
}

#[tokio::test]
async fn compression_config_errors_name_file_and_line() {
    let text = "[[upstreams]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\n\
                [[routes]]\nupstream = \"app\"\n\
                [compression]\nalgorithms = [\"gzip\", \"lz4\"]\ngzip_level = 12\ntypes = [\"text\"]\n";
    let err = palisade::config::Config::from_str_at(std::path::Path::new("z.toml"), text)
        .unwrap_err()
        .to_string();
    for line in ["z.toml:7:", "z.toml:8:", "z.toml:9:"] {
        assert!(err.contains(line), "{line} missing: {err}");
    }
}

async fn post(proxy: &Proxy, coding: &str, body: Vec<u8>) -> crate::util::Got {
    let req = Request::post("/submit")
        .header("host", "site")
        .header("content-encoding", coding)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    crate::util::send(proxy.addr, req).await
}

#[tokio::test]
async fn a_compressed_request_bomb_gets_413_for_every_coding() {
    use palisade::compress::{Coding, encoder::encode_all};
    let origin = Origin::named("app").await;
    let proxy = proxy_for(&origin, "max_decoded_body = \"1MiB\"").await;
    let zeros = vec![0u8; 64 * 1024 * 1024];
    for (name, coding) in [
        ("gzip", Coding::Gzip),
        ("br", Coding::Brotli),
        ("zstd", Coding::Zstd),
    ] {
        let bomb = encode_all(coding, 1, &zeros).unwrap();
        let got = post(&proxy, name, bomb.to_vec()).await;
        assert_eq!(got.status, 413, "{name}");
    }
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_compressed_request_body_reaches_the_origin_unchanged() {
    use palisade::compress::{Coding, encoder::encode_all};
    let origin = Origin::named("app").await;
    let proxy = proxy_for(&origin, "").await;
    let form = b"user=alice&comment=hello".repeat(50);
    let encoded = encode_all(Coding::Gzip, 6, &form).unwrap();
    let got = post(&proxy, "gzip", encoded.to_vec()).await;
    assert_eq!(got.status, 200);
    let seen = &origin.requests()[0];
    assert_eq!(seen.body, encoded);
    assert_eq!(seen.headers["content-encoding"], "gzip");
}

#[tokio::test]
async fn a_request_body_in_an_unknown_or_false_coding_is_refused() {
    let origin = Origin::named("app").await;
    let proxy = proxy_for(&origin, "").await;
    assert_eq!(post(&proxy, "compress", b"abc".to_vec()).await.status, 415);
    assert_eq!(
        post(&proxy, "gzip", b"not gzip at all".to_vec())
            .await
            .status,
        400
    );
    assert_eq!(origin.hits(), 0);
    let off = proxy_for(&origin, "decode_requests = false").await;
    assert_eq!(post(&off, "compress", b"abc".to_vec()).await.status, 200);
}
