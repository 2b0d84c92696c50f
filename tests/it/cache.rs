//! The RFC 9111 cache, through the proxy: one test per requirement, a
//! real origin on loopback counting what reaches it. Time-dependent cases
//! are driven by the origin's `Date`, `Age` and `Expires` fields (a
//! response can be born stale), never by sleeping out a lifetime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{Origin, Proxy, Reply, Seen, get, raw, send};

/// A proxy in front of `origin` with `[cache]` and `extra` added to it.
async fn cached(origin: &Origin, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\nresponse_timeout = \"2s\"\n\
         [[routes]]\nupstream = \"app\"\n\
         [cache]\nmax_size = \"16MiB\"\n{extra}\n",
        origin.addr
    ))
    .await
}

/// An origin whose answers count up (`v1`, `v2`, ...) with `fields`.
async fn counting(fields: &'static [(&'static str, &'static str)]) -> Origin {
    let n = AtomicUsize::new(0);
    Origin::start(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reply = Reply::ok(format!("v{i}"));
        for (k, v) in fields {
            reply = reply.header(k, *v);
        }
        reply
    })
    .await
}

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

fn status_of(got: &crate::util::Got) -> String {
    got.headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn get_twice(proxy: &Proxy, path: &str) -> (crate::util::Got, crate::util::Got) {
    let first = get(proxy.addr, "site", path, &[]).await;
    let second = get(proxy.addr, "site", path, &[]).await;
    (first, second)
}

#[tokio::test]
async fn a_fresh_response_is_answered_from_cache_with_age_and_cache_status() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    let (first, second) = get_twice(&proxy, "/a").await;
    assert_eq!(first.body, "v1");
    assert!(
        status_of(&first).contains("fwd=uri-miss; stored"),
        "{:?}",
        first.headers
    );
    assert_eq!(second.body, "v1");
    assert!(
        status_of(&second).starts_with("palisade; hit; ttl="),
        "{:?}",
        second.headers
    );
    assert!(second.headers.contains_key("age"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn no_store_responses_are_never_stored() {
    let origin = counting(&[("cache-control", "no-store, max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
    assert!(status_of(&second).contains("detail=no-store"));
}

#[tokio::test]
async fn private_responses_are_not_stored_by_a_shared_cache() {
    let origin = counting(&[("cache-control", "private, max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
}

#[tokio::test]
async fn private_with_field_names_stores_the_response_without_those_fields() {
    let origin = counting(&[
        ("cache-control", "private=\"x-user\", max-age=60"),
        ("x-user", "alice"),
    ])
    .await;
    let proxy = cached(&origin, "").await;
    let (first, second) = get_twice(&proxy, "/a").await;
    assert_eq!(first.headers["x-user"], "alice");
    assert_eq!(second.body, "v1");
    assert!(
        !second.headers.contains_key("x-user"),
        "{:?}",
        second.headers
    );
}

#[tokio::test]
async fn no_cache_responses_are_stored_but_revalidated_with_if_none_match() {
    let origin = Origin::start(|seen: &Seen| {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")
        {
            Reply::ok("").status(304).header("etag", "\"e1\"")
        } else {
            Reply::ok("body")
                .header("cache-control", "no-cache")
                .header("etag", "\"e1\"")
        }
    })
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, "body");
    assert!(
        status_of(&second).contains("fwd=stale; fwd-status=304"),
        "{:?}",
        second.headers
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"e1\"");
}

#[tokio::test]
async fn stale_responses_are_revalidated_with_if_modified_since_and_304_updates_headers() {
    let last_modified = http_date(-3600);
    let n = AtomicUsize::new(0);
    let origin = Origin::start(move |seen: &Seen| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        if seen.headers.contains_key("if-modified-since") {
            Reply::ok("")
                .status(304)
                .header("x-version", format!("{i}"))
                .header("cache-control", "max-age=60")
        } else {
            Reply::ok("body")
                .header("cache-control", "max-age=0")
                .header("last-modified", last_modified.clone())
                .header("x-version", "0")
        }
    })
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "body");
    assert_eq!(second.headers["x-version"], "1");
    let third = get(proxy.addr, "site", "/a", &[]).await;
    // The 304 made it fresh for 60 s and gave it the new field.
    assert!(status_of(&third).contains("hit"), "{:?}", third.headers);
    assert_eq!(third.headers["x-version"], "1");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn s_maxage_overrides_max_age_in_a_shared_cache() {
    let origin = counting(&[("cache-control", "max-age=0, s-maxage=60")]).await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v1");
}

#[tokio::test]
async fn expires_minus_date_is_the_freshness_lifetime() {
    let (date, expires) = (http_date(0), http_date(60));
    let origin = Origin::start(move |_| {
        Reply::ok("x")
            .header("date", date.clone())
            .header("expires", expires.clone())
    })
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert!(status_of(&second).contains("hit"));
    let expired = Origin::start(|_| Reply::ok("x").header("expires", "0")).await;
    let proxy = cached(&expired, "").await;
    get_twice(&proxy, "/a").await;
    assert_eq!(expired.hits(), 2);
}

#[tokio::test]
async fn the_origin_age_counts_against_freshness() {
    let origin = counting(&[("cache-control", "max-age=60"), ("age", "100")]).await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
    let young = counting(&[("cache-control", "max-age=60"), ("age", "10")]).await;
    let proxy = cached(&young, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    let age: u64 = second.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((10..15).contains(&age), "age {age}");
}

#[tokio::test]
async fn heuristic_freshness_applies_to_responses_with_last_modified() {
    let (date, modified) = (http_date(0), http_date(-10 * 86400));
    let origin = Origin::start(move |_| {
        Reply::ok("x")
            .header("date", date.clone())
            .header("last-modified", modified.clone())
    })
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert!(status_of(&second).contains("hit"), "{:?}", second.headers);
    assert_eq!(origin.hits(), 1);
    // Without Last-Modified or explicit freshness there is nothing to reuse.
    let bare = counting(&[]).await;
    let proxy = cached(&bare, "").await;
    get_twice(&proxy, "/a").await;
    assert_eq!(bare.hits(), 2);
}

#[tokio::test]
async fn request_no_cache_and_max_age_zero_go_to_the_origin() {
    // Born 5 s old, so `max-age=0` cannot accept it.
    let origin = counting(&[("cache-control", "max-age=60"), ("age", "5")]).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let forced = get(proxy.addr, "site", "/a", &[("cache-control", "no-cache")]).await;
    assert_eq!(forced.body, "v2");
    assert!(
        status_of(&forced).contains("fwd=request"),
        "{:?}",
        forced.headers
    );
    let zero = get(proxy.addr, "site", "/a", &[("cache-control", "max-age=0")]).await;
    assert_eq!(zero.body, "v3");
    let pragma = get(proxy.addr, "site", "/a", &[("pragma", "no-cache")]).await;
    assert_eq!(pragma.body, "v4");
}

#[tokio::test]
async fn request_max_stale_accepts_and_min_fresh_refuses() {
    let origin = counting(&[("cache-control", "max-age=60"), ("age", "70")]).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let stale_ok = get(
        proxy.addr,
        "site",
        "/a",
        &[("cache-control", "max-stale=60")],
    )
    .await;
    assert_eq!(stale_ok.body, "v1");
    assert!(status_of(&stale_ok).contains("detail=max-stale"));
    let fresh = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&fresh, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let refused = get(
        proxy.addr,
        "site",
        "/a",
        &[("cache-control", "min-fresh=120")],
    )
    .await;
    assert_eq!(refused.body, "v2");
}

#[tokio::test]
async fn only_if_cached_answers_504_when_nothing_usable_is_stored() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    let none = get(
        proxy.addr,
        "site",
        "/a",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(none.status, 504);
    assert_eq!(origin.hits(), 0);
    get(proxy.addr, "site", "/a", &[]).await;
    let some = get(
        proxy.addr,
        "site",
        "/a",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(some.body, "v1");
}

#[tokio::test]
async fn must_revalidate_stale_is_never_served_when_the_origin_is_down() {
    let origin = counting(&[
        ("cache-control", "max-age=1, must-revalidate"),
        ("age", "5"),
    ])
    .await;
    let down = crate::util::dead_port().await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\", \"{}\"]\n\
         [[routes]]\nupstream = \"app\"\n[cache]\nstale_if_error = \"1h\"\n",
        origin.addr, down
    ))
    .await;
    get(proxy.addr, "site", "/a", &[]).await;
    get(proxy.addr, "site", "/a", &[("cache-control", "max-stale")]).await;
    assert_eq!(
        origin.hits(),
        2,
        "max-stale must not serve a must-revalidate response"
    );
}

#[tokio::test]
async fn authorization_requests_are_stored_only_when_the_response_allows() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    let auth = [("authorization", "Bearer abc")];
    get(proxy.addr, "site", "/a", &auth).await;
    let second = get(proxy.addr, "site", "/a", &auth).await;
    assert_eq!(second.body, "v2");
    assert!(status_of(&second).contains("detail=authorization"));
    let public = counting(&[("cache-control", "public, max-age=60")]).await;
    let proxy = cached(&public, "").await;
    get(proxy.addr, "site", "/a", &auth).await;
    assert_eq!(get(proxy.addr, "site", "/a", &auth).await.body, "v1");
}

#[tokio::test]
async fn set_cookie_responses_are_not_stored_unless_configured() {
    let origin = counting(&[("cache-control", "max-age=60"), ("set-cookie", "s=1")]).await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
    let allowed = counting(&[("cache-control", "max-age=60"), ("set-cookie", "s=1")]).await;
    let proxy = cached(&allowed, "store_set_cookie = true").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v1");
}

#[tokio::test]
async fn cdn_cache_control_takes_precedence_over_cache_control() {
    let origin = counting(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v1");
    assert_eq!(second.headers["cdn-cache-control"], "max-age=60");
}

#[tokio::test]
async fn palisade_cache_control_is_obeyed_and_kept_from_clients() {
    let origin = counting(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "max-age=60"),
        ("palisade-cache-control", "no-store"),
    ])
    .await;
    let proxy = cached(&origin, "").await;
    let (first, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
    assert!(!first.headers.contains_key("palisade-cache-control"));
    let longer = counting(&[
        ("cache-control", "no-store"),
        ("palisade-cache-control", "max-age=60"),
    ])
    .await;
    let proxy = cached(&longer, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v1");
    assert!(!second.headers.contains_key("palisade-cache-control"));
}

#[tokio::test]
async fn vary_selects_the_stored_variant_and_vary_star_never_matches() {
    let origin = Origin::start(|seen: &Seen| {
        let lang = seen
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        Reply::ok(lang)
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
    })
    .await;
    let proxy = cached(&origin, "").await;
    let fr = [("accept-language", "fr")];
    let de = [("accept-language", "de")];
    assert_eq!(get(proxy.addr, "site", "/a", &fr).await.body, "fr");
    let other = get(proxy.addr, "site", "/a", &de).await;
    assert_eq!(other.body, "de");
    assert!(
        status_of(&other).contains("fwd=vary-miss"),
        "{:?}",
        other.headers
    );
    assert_eq!(get(proxy.addr, "site", "/a", &fr).await.body, "fr");
    assert_eq!(get(proxy.addr, "site", "/a", &de).await.body, "de");
    assert_eq!(origin.hits(), 2);
    let star = counting(&[("cache-control", "max-age=60"), ("vary", "*")]).await;
    let proxy = cached(&star, "").await;
    get_twice(&proxy, "/a").await;
    assert_eq!(star.hits(), 2);
}

#[tokio::test]
async fn configured_key_parts_split_and_ignored_query_params_merge_entries() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(
        &origin,
        "key_headers = [\"x-tenant\"]\nignore_query_params = [\"utm_source\"]",
    )
    .await;
    let blue = [("x-tenant", "blue")];
    let red = [("x-tenant", "red")];
    assert_eq!(
        get(proxy.addr, "site", "/a?id=1&utm_source=x", &blue)
            .await
            .body,
        "v1"
    );
    assert_eq!(get(proxy.addr, "site", "/a?id=1", &blue).await.body, "v1");
    assert_eq!(get(proxy.addr, "site", "/a?id=1", &red).await.body, "v2");
    assert_eq!(get(proxy.addr, "site", "/a?id=2", &blue).await.body, "v3");
}

#[tokio::test]
async fn a_clients_conditional_request_is_answered_304_from_cache() {
    let modified = http_date(-3600);
    let origin = counting(&[("cache-control", "max-age=60"), ("etag", "W/\"t1\"")]).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let inm = get(proxy.addr, "site", "/a", &[("if-none-match", "\"t1\"")]).await;
    assert_eq!(inm.status, 304);
    assert_eq!(inm.body, "");
    let other = get(proxy.addr, "site", "/a", &[("if-none-match", "\"zz\"")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(origin.hits(), 1);
    let dated = Origin::start(move |_| {
        Reply::ok("x")
            .header("cache-control", "max-age=60")
            .header("last-modified", modified.clone())
    })
    .await;
    let proxy = cached(&dated, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let ims = get(
        proxy.addr,
        "site",
        "/a",
        &[("if-modified-since", &http_date(0))],
    )
    .await;
    assert_eq!(ims.status, 304);
    assert_eq!(dated.hits(), 1);
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let req = Request::head("/a")
        .header("host", "site")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let head = send(proxy.addr, req).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert_eq!(head.headers["content-length"], "2");
    assert!(status_of(&head).contains("hit"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn range_requests_are_answered_206_from_a_stored_full_response() {
    let origin = Origin::start(|_| {
        Reply::ok("0123456789")
            .header("cache-control", "max-age=60")
            .header("etag", "\"r\"")
    })
    .await;
    let proxy = cached(&origin, "").await;
    // The first Range request fills the store with the whole response.
    let first = get(proxy.addr, "site", "/a", &[("range", "bytes=2-4")]).await;
    assert!(first.status == 206 || first.status == 200);
    assert!(origin.requests()[0].headers.get("range").is_none());
    let part = get(proxy.addr, "site", "/a", &[("range", "bytes=2-4")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, "234");
    assert_eq!(part.headers["content-range"], "bytes 2-4/10");
    let suffix = get(proxy.addr, "site", "/a", &[("range", "bytes=-3")]).await;
    assert_eq!(suffix.body, "789");
    let beyond = get(proxy.addr, "site", "/a", &[("range", "bytes=20-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.headers["content-range"], "bytes */10");
    let stale_validator = get(
        proxy.addr,
        "site",
        "/a",
        &[("range", "bytes=2-4"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(stale_validator.status, 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_behind() {
    let origin = counting(&[
        ("cache-control", "max-age=1, stale-while-revalidate=600"),
        ("age", "5"),
    ])
    .await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let stale = get(proxy.addr, "site", "/a", &[]).await;
    assert_eq!(stale.body, "v1");
    assert!(status_of(&stale).contains("detail=stale-while-revalidate"));
    // The refresh happens behind the answer; wait for it to reach the store.
    for _ in 0..100 {
        if origin.hits() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits(), 2);
    let mut refreshed = String::new();
    for _ in 0..100 {
        refreshed = get(proxy.addr, "site", "/a", &[]).await.body;
        if refreshed == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(refreshed, "v2");
}

#[tokio::test]
async fn stale_if_error_serves_stale_on_origin_5xx() {
    let n = AtomicUsize::new(0);
    let origin = Origin::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::ok("good")
                .header("cache-control", "max-age=1, stale-if-error=600")
                .header("age", "5")
        } else {
            Reply::ok("broken").status(503)
        }
    })
    .await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let saved = get(proxy.addr, "site", "/a", &[]).await;
    assert_eq!(saved.status, 200);
    assert_eq!(saved.body, "good");
    assert!(
        status_of(&saved).contains("fwd-status=503; detail=stale-if-error"),
        "{:?}",
        saved.headers
    );
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // The origin lives only for the first request, on a port we chose.
    let std_listener = std::net::TcpListener::bind(addr).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncache-control: max-age=1, stale-if-error=600\r\nage: 5\r\nconnection: close\r\n\r\ngood",
        )
        .await
        .unwrap();
    });
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{addr}\"]\nretries = 0\n\
         [[routes]]\nupstream = \"app\"\n[cache]\n"
    ))
    .await;
    assert_eq!(get(proxy.addr, "site", "/a", &[]).await.body, "good");
    server.await.unwrap();
    let saved = get(proxy.addr, "site", "/a", &[]).await;
    assert_eq!(saved.status, 200, "{saved:?}");
    assert_eq!(saved.body, "good");
    assert!(status_of(&saved).contains("detail=stale-if-error"));
}

#[tokio::test]
async fn a_burst_for_one_cold_key_reaches_the_origin_once() {
    let origin = Origin::start(|_| {
        Reply::ok("shared")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(200))
    })
    .await;
    let proxy = cached(&origin, "").await;
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..500)
        .map(|_| tokio::spawn(async move { get(addr, "site", "/cold", &[]).await }))
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body, "shared");
    }
    assert_eq!(origin.hits(), 1);
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("palisade_cache_coalesced_waiters_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn waiters_go_to_the_origin_themselves_when_the_response_is_uncacheable() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    let origin = Origin::start(move |_| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        Reply::ok(format!("private{i}"))
            .header("cache-control", "no-store")
            .delay(Duration::from_millis(150))
    })
    .await;
    let proxy = cached(&origin, "").await;
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(addr, "site", "/me", &[]).await }))
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        bodies.push(task.await.unwrap().body);
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        5,
        "each client got its own answer: {bodies:?}"
    );
    assert_eq!(origin.hits(), 5);
}

#[tokio::test]
async fn a_timed_out_leader_hands_the_fetch_over_to_a_waiter() {
    let n = AtomicUsize::new(0);
    let origin = Origin::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::ok("late").delay(Duration::from_secs(3))
        } else {
            Reply::ok("second").header("cache-control", "max-age=60")
        }
    })
    .await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\nresponse_timeout = \"300ms\"\nretries = 0\n\
         [[routes]]\nupstream = \"app\"\n[cache]\n",
        origin.addr
    ))
    .await;
    let addr = proxy.addr;
    let leader = tokio::spawn(async move { get(addr, "site", "/k", &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = tokio::spawn(async move { get(addr, "site", "/k", &[]).await });
    assert_eq!(leader.await.unwrap().status, 504);
    let waited = waiter.await.unwrap();
    assert_eq!(waited.status, 200);
    assert_eq!(waited.body, "second");
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_its_location() {
    let origin = Origin::start(|seen: &Seen| {
        if seen.method == "POST" {
            Reply::ok("done")
                .status(201)
                .header("location", "/items/2")
                .header("content-location", "http://elsewhere/items/3")
        } else {
            Reply::ok(format!(
                "{} at {}",
                seen.path,
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ))
            .header("cache-control", "max-age=60")
        }
    })
    .await;
    let proxy = cached(&origin, "").await;
    let one = get(proxy.addr, "site", "/items/1", &[]).await.body;
    let two = get(proxy.addr, "site", "/items/2", &[]).await.body;
    let other = get(proxy.addr, "site", "/other", &[]).await.body;
    let post = Request::post("/items/1")
        .header("host", "site")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(send(proxy.addr, post).await.status, 201);
    assert_ne!(get(proxy.addr, "site", "/items/1", &[]).await.body, one);
    assert_ne!(get(proxy.addr, "site", "/items/2", &[]).await.body, two);
    assert_eq!(get(proxy.addr, "site", "/other", &[]).await.body, other);
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("palisade_cache_invalidations_total 2"),
        "{metrics}"
    );
}

async fn purge(proxy: &Proxy, body: &'static str) -> crate::util::Got {
    let req = Request::post("/purge")
        .header("host", "admin")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    send(proxy.admin, req).await
}

#[tokio::test]
async fn admin_purge_removes_by_exact_url_and_by_prefix() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    for path in ["/a/1", "/a/2", "/b"] {
        get(proxy.addr, "site", path, &[]).await;
    }
    let exact = purge(&proxy, r#"{"url": "http://site/b"}"#).await;
    assert_eq!(exact.body, r#"{"purged":1}"#);
    let prefix = purge(&proxy, r#"{"prefix": "http://site/a/"}"#).await;
    assert_eq!(prefix.body, r#"{"purged":2}"#);
    assert_eq!(get(proxy.addr, "site", "/a/1", &[]).await.body, "v4");
    let bad = purge(&proxy, r#"{"url": "/relative"}"#).await;
    assert_eq!(bad.status, 400);
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("palisade_cache_purged_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cache_metrics_count_hits_misses_stores_and_bytes() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    get_twice(&proxy, "/a").await;
    get(proxy.addr, "site", "/a", &[]).await;
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    for line in [
        "palisade_cache_hits_total 2",
        "palisade_cache_misses_total 1",
        "palisade_cache_stores_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let bytes_line = metrics
        .lines()
        .find(|l| l.starts_with("palisade_cache_bytes_stored "))
        .unwrap();
    let bytes: u64 = bytes_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 0, "{bytes_line}");
}

#[tokio::test]
async fn untrusted_url_and_host_overrides_never_reach_the_origin() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    get(
        proxy.addr,
        "site",
        "/a",
        &[
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-host", "evil.example"),
            ("x-http-method-override", "DELETE"),
        ],
    )
    .await;
    let seen = &origin.requests()[0];
    assert!(seen.headers.get("x-original-url").is_none());
    assert!(seen.headers.get("x-rewrite-url").is_none());
    assert!(seen.headers.get("x-http-method-override").is_none());
    assert_eq!(seen.headers["x-forwarded-host"], "site");
}

#[tokio::test]
async fn a_body_on_a_get_answered_from_cache_does_not_desync_the_connection() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/a", &[]).await;
    // A smuggled request hides in the body of a GET the cache answers.
    let (out, _) = raw(
        proxy.addr,
        b"GET /a HTTP/1.1\r\nHost: site\r\nContent-Length: 33\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(origin.requests().iter().all(|s| s.path != "/smuggled"));
}

#[tokio::test]
async fn objects_over_max_object_size_are_passed_through_not_stored() {
    let big = "x".repeat(64 * 1024);
    let origin =
        Origin::start(move |_| Reply::ok(big.clone()).header("cache-control", "max-age=60")).await;
    let proxy = cached(&origin, "max_object_size = \"32KiB\"").await;
    let (first, second) = get_twice(&proxy, "/big").await;
    assert_eq!(first.body.len(), 64 * 1024);
    assert_eq!(second.body.len(), 64 * 1024);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn a_streamed_response_is_stored_while_it_is_sent() {
    let big = "y".repeat(200 * 1024);
    let origin =
        Origin::start(move |_| Reply::ok(big.clone()).header("cache-control", "max-age=60")).await;
    let proxy = cached(&origin, "").await;
    let (first, second) = get_twice(&proxy, "/big").await;
    assert_eq!(first.body.len(), 200 * 1024);
    assert_eq!(second.body.len(), 200 * 1024);
    assert!(status_of(&second).contains("hit"), "{:?}", second.headers);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_route_can_turn_caching_off() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/live\"\ncache = {{ enabled = false }}\n\
         [[routes]]\nupstream = \"app\"\n[cache]\n",
        origin.addr
    ))
    .await;
    get_twice(&proxy, "/live/x").await;
    assert_eq!(origin.hits(), 2);
    get_twice(&proxy, "/static").await;
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn cache_config_errors_name_file_and_line() {
    let text = "[[upstreams]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\n\
                [[routes]]\nupstream = \"app\"\ncache = { enabled = true }\n\
                [cache]\nmax_size = \"lots\"\nheuristic_fraction = 3.0\n";
    let err = palisade::config::Config::from_str_at(std::path::Path::new("c.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.toml:8:"), "{err}");
    assert!(err.contains("c.toml:9:"), "{err}");
}

#[tokio::test]
async fn default_ttl_stores_responses_that_state_no_freshness() {
    let origin = counting(&[]).await;
    let proxy = cached(&origin, "default_ttl = \"60s\"").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v1");
    // An explicit word from the origin still wins.
    let explicit = counting(&[("cache-control", "max-age=0")]).await;
    let proxy = cached(&explicit, "default_ttl = \"60s\"").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "v2");
}

#[tokio::test]
async fn a_fresh_5xx_is_stored_when_error_pages_pass_through() {
    let origin = Origin::start(|_| {
        Reply::ok("maintenance")
            .status(503)
            .header("cache-control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\nreplace_error_pages = false\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n\
         [[routes]]\nupstream = \"app\"\n[cache]\n",
        origin.addr
    ))
    .await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.status, 503);
    assert_eq!(second.body, "maintenance");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_304_does_not_replace_the_stored_etag() {
    let origin = Origin::start(|seen: &Seen| {
        if seen.headers.contains_key("if-none-match") {
            Reply::ok("").status(304).header("etag", "\"other\"")
        } else {
            Reply::ok("body")
                .header("cache-control", "max-age=0")
                .header("etag", "\"mine\"")
        }
    })
    .await;
    let proxy = cached(&origin, "").await;
    let (_, second) = get_twice(&proxy, "/a").await;
    assert_eq!(second.body, "body");
    assert_eq!(second.headers["etag"], "\"mine\"");
}

#[tokio::test]
async fn accept_encoding_spelled_differently_shares_one_variant() {
    let origin = counting(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]).await;
    let proxy = cached(&origin, "").await;
    let chrome = get(
        proxy.addr,
        "site",
        "/a",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    let other = get(
        proxy.addr,
        "site",
        "/a",
        &[("accept-encoding", "br,gzip, deflate;q=0.5")],
    )
    .await;
    assert_eq!((chrome.body.as_str(), other.body.as_str()), ("v1", "v1"));
    let fewer = get(proxy.addr, "site", "/a", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        fewer.body, "v2",
        "a client accepting less is another variant"
    );
}

#[tokio::test]
async fn an_absolute_form_target_cannot_key_one_host_and_fetch_another() {
    let origin = Origin::start(|seen: &Seen| {
        let host = seen.headers["host"].to_str().unwrap().to_string();
        Reply::ok(format!("page of {host}")).header("cache-control", "max-age=60")
    })
    .await;
    let proxy = cached(&origin, "").await;
    // Routed and keyed as victim.test; the Host field names another site.
    let (out, _) = raw(
        proxy.addr,
        b"GET http://victim.test/ HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.contains("page of victim.test"), "{out}");
    assert_eq!(origin.requests()[0].headers["host"], "victim.test");
    let (two_hosts, _) = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: victim.test\r\nHost: attacker.test\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
}

/// A body of `len` ASCII bytes in which every 8-byte block names its own
/// offset, so a byte sent from the wrong place shows.
fn numbered_body(len: usize) -> String {
    let mut body: String = (0..len.div_ceil(8))
        .map(|i| format!("{:07x}.", i * 8))
        .collect();
    body.truncate(len);
    body
}

/// An origin answering every path with `body`, cacheable for a minute.
async fn large_origin(body: &str) -> Origin {
    let body = body.to_string();
    Origin::start(move |_| Reply::ok(body.clone()).header("cache-control", "max-age=60")).await
}

#[tokio::test]
async fn large_hits_sent_from_their_memory_file_keep_the_connection_in_step() {
    let body = numbered_body(300 * 1024 + 5);
    let origin = large_origin(&body).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/big", &[]).await;
    // Three hits on one connection: each must end exactly where its
    // Content-Length says, or the next answer does not parse.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        // The connection task may still be finishing the last exchange.
        sender.ready().await.expect("the connection stays open");
        let req = Request::get("/big")
            .header("host", "site")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert!(
            response.headers()["cache-status"]
                .to_str()
                .unwrap()
                .contains("hit")
        );
        let got = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(got == body.as_bytes(), "a hit's body differs");
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_range_of_a_large_hit_comes_from_the_right_place_in_its_file() {
    let body = numbered_body(256 * 1024);
    let origin = large_origin(&body).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/big", &[]).await;
    let part = get(
        proxy.addr,
        "site",
        "/big",
        &[("range", "bytes=40001-200000")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, body[40001..=200000]);
    let head = send(
        proxy.addr,
        Request::head("/big")
            .header("host", "site")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(head.body, "");
    assert_eq!(head.headers["content-length"], body.len().to_string());
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_slow_reader_gets_a_large_hit_whole_once_the_socket_drains() {
    let body = numbered_body(1024 * 1024);
    let origin = large_origin(&body).await;
    let proxy = cached(&origin, "").await;
    get(proxy.addr, "site", "/big", &[]).await;
    // A small receive window and slow reads: the proxy's socket fills and
    // the send must wait for room, many times over.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the whole answer within 20 s")
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() % (64 * 1024) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..split]);
    assert!(head.contains("cache-status: palisade; hit"), "{head}");
    assert!(
        &out[split..] == body.as_bytes(),
        "the slow hit's body differs"
    );
}
