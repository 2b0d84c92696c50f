//! Micro-benchmarks of per-request work on the proxy's hot path: parsing a
//! backend's response head and the header hygiene done on every request and
//! response. The side-by-side load test (`benches/load.sh`) is the judge of
//! throughput; these tell whether a change to one piece made it cheaper.
//!   cargo bench --bench hot_path

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use palisade::pipeline::router::Router;
use palisade::upstream::h1::parse_head;
use palisade::upstream::headers::{ClientSide, clean_response, prepare_request};

/// What nginx sends in front of a static file.
const NGINX_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 12:00:00 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Fri, 27 Nov 2026 11:00:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"6566b0d0-400\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn response_head(c: &mut Criterion) {
    c.bench_function("parse nginx response head", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(NGINX_HEAD);
            black_box(parse_head(&mut buf, &Method::GET).ok());
        })
    });
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("bench.test"));
    h.insert("user-agent", HeaderValue::from_static("wrk"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

fn header_hygiene(c: &mut Criterion) {
    let peer_value = HeaderValue::from_static("127.0.0.1");
    let host = HeaderValue::from_static("bench.test");
    let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    let template = request_headers();
    c.bench_function("prepare request headers", |b| {
        b.iter(|| {
            let mut headers = template.clone();
            let side = ClientSide {
                peer_ip: "127.0.0.1".parse().expect("literal"),
                peer_ip_value: &peer_value,
                peer_trusted: false,
                scheme: "http",
                host: Some(&host),
                version: http::Version::HTTP_11,
            };
            prepare_request(&mut headers, &side, &id);
            black_box(headers);
        })
    });
    let hide: Vec<HeaderName> = [
        "server",
        "x-powered-by",
        "x-aspnet-version",
        "x-aspnetmvc-version",
    ]
    .iter()
    .map(|n| HeaderName::from_static(n))
    .collect();
    let mut buf = BytesMut::from(NGINX_HEAD);
    let (parts, _) = parse_head(&mut buf, &Method::GET)
        .ok()
        .flatten()
        .expect("the sample head parses");
    c.bench_function("clean response headers", |b| {
        b.iter(|| {
            let mut fields = parts.fields.clone();
            clean_response(&mut fields, &hide);
            black_box(fields);
        })
    });
}

fn routing(c: &mut Criterion) {
    let toml = "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
                [[routes]]\nupstream = \"a\"\n\
                [[routes]]\nhost = \"*.example.com\"\nupstream = \"a\"\n\
                [[routes]]\nhost = \"api.example.com\"\npath_prefix = \"/v2/\"\nupstream = \"a\"\n";
    let config = palisade::config::Config::from_str_at(std::path::Path::new("bench.toml"), toml)
        .expect("bench config is valid");
    let router = Router::new(&config.routes);
    c.bench_function("route lookup", |b| {
        b.iter(|| black_box(router.find(black_box("api.example.com"), black_box("/v2/users/42"))))
    });
}

criterion_group!(benches, response_head, header_hygiene, routing);
criterion_main!(benches);
