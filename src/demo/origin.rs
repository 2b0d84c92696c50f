//! The demo's sample origin: a small "legacy app" of the kind Palisade is put
//! in front of. It is deliberately naive (it echoes input unescaped, leaks a
//! stack trace, announces its software versions) so the demo can show what
//! the proxy hides and blocks. It listens on loopback only.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const INDEX: &str = r#"<!DOCTYPE html>
<html><head><title>Acme Legacy Portal</title><link rel="stylesheet" href="/static/app.css"></head>
<body><h1>Acme Legacy Portal</h1>
<form action="/search" method="get"><input name="q" placeholder="search products"><button>Search</button></form>
<form action="/login" method="post"><input name="user" placeholder="user"><input name="password" type="password"><button>Log in</button></form>
<p><a href="/api/products">JSON API</a> · <a href="/crash">a page that crashes</a></p>
<script src="/static/app.js"></script></body></html>
"#;

const CSS: &str = "body{font-family:serif;margin:2em}h1{color:#036}\n";
const JS: &str = "console.log('acme legacy portal');\n";

/// Binds 127.0.0.1:0 and serves the sample app; returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(|req| async { Ok::<_, Infallible>(route(req).await) });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn route(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut response = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") => page(StatusCode::OK, "text/html; charset=utf-8", INDEX.to_string()),
        (Method::GET, "/healthz") => page(StatusCode::OK, "text/plain", "ok\n".into()),
        (Method::GET, "/search") => {
            let q = form_value(&query, "q").unwrap_or_default();
            // Echoed without escaping, as the legacy app does.
            page(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!("<html><body><h1>Results for {q}</h1><p>No products found.</p></body></html>\n"),
            )
        }
        (Method::POST, "/login") => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let form = String::from_utf8_lossy(&body).into_owned();
            let user = form_value(&form, "user").unwrap_or_default();
            let password = form_value(&form, "password").unwrap_or_default();
            if user == "admin" && password == "hunter2" {
                page(StatusCode::OK, "text/html", format!("<p>Welcome back, {user}.</p>\n"))
            } else {
                page(StatusCode::UNAUTHORIZED, "text/html", "<p>Wrong user or password.</p>\n".into())
            }
        }
        (Method::GET, "/api/products") => page(
            StatusCode::OK,
            "application/json",
            r#"{"products":[{"id":1,"name":"Anvil","price":99.5},{"id":2,"name":"Rocket skates","price":250}]}"#.to_string() + "\n",
        ),
        (Method::GET, "/api/catalog") => page(StatusCode::OK, "application/json", catalog()),
        (Method::GET, "/static/app.css") => cacheable(page(StatusCode::OK, "text/css", CSS.into())),
        (Method::GET, "/static/app.js") => {
            cacheable(page(StatusCode::OK, "application/javascript", JS.into()))
        }
        (Method::GET, "/crash") => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "Fatal error: Uncaught PDOException: SQLSTATE[28000] Access denied for user 'acme'@'10.0.3.7' (using password: YES)\n\
             #0 /var/www/acme/lib/db.php(42): PDO->__construct('mysql:host=10.0...', 'acme', 's3cr3t-db-pass')\n\
             #1 /var/www/acme/index.php(7): Db::connect()\n#2 {main}\n  thrown in /var/www/acme/lib/db.php on line 42\n"
                .into(),
        ),
        _ => page(StatusCode::NOT_FOUND, "text/plain", "no such page\n".into()),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::SERVER,
        http::HeaderValue::from_static("Apache/2.2.3 (CentOS)"),
    );
    headers.insert("x-powered-by", http::HeaderValue::from_static("PHP/5.3.3"));
    response
}

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// A JSON catalog large enough to be worth compressing (about 13 KiB).
fn catalog() -> String {
    let items: Vec<String> = (1..=200)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"Acme part {i}","price":{}.{:02},"in_stock":{}}}"#,
                10 + i * 3,
                i % 100,
                i % 3 != 0
            )
        })
        .collect();
    format!("{{\"products\":[{}]}}\n", items.join(","))
}

fn cacheable(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// The decoded value of `name` in an `a=1&b=2` string.
fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
