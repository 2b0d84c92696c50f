//! `[ratelimit]`: token buckets per client address, header or cookie, with
//! 429, `Retry-After` and the IETF `RateLimit` fields.

use crate::util::*;

fn config(origin: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\n{limits}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_burst_gets_429_with_retry_after_and_ratelimit_fields() {
    // The origin's own RateLimit field must not reach the client beside ours.
    let origin = Origin::start(|_| Reply::ok("ok").header("ratelimit", "\"origin\";r=9;t=1")).await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "[[ratelimit.limits]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = \"1/h\"\nburst = 2\n",
    ))
    .await;
    let addr = proxy.addr;
    let from = move |ip: &'static str| async move {
        get(addr, "site.test", "/", &[("x-forwarded-for", ip)]).await
    };
    let first = from("192.0.2.1").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["ratelimit-policy"], "\"per-ip\";q=1;w=3600");
    let state = first.headers["ratelimit"].to_str().unwrap();
    assert!(
        state.starts_with("\"per-ip\";r=1;t="),
        "allowed responses carry the state: {state}"
    );
    assert_eq!(
        first.headers.get_all("ratelimit").iter().count(),
        1,
        "ours replaces the origin's"
    );
    assert_eq!(from("192.0.2.1").await.status, 200);
    let refused = from("192.0.2.1").await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3500..=3600).contains(&retry),
        "one token per hour: {retry}"
    );
    assert_eq!(refused.headers["ratelimit-policy"], "\"per-ip\";q=1;w=3600");
    let state = refused.headers["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"per-ip\";r=0;t="), "{state}");
    assert_eq!(
        from("192.0.2.2").await.status,
        200,
        "another client, another bucket"
    );
    assert_eq!(
        origin.requests().len(),
        3,
        "refused requests never reach the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_by_header_apply_only_where_scoped_and_only_with_the_header() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "[ratelimit]\nheaders = false\n[[ratelimit.limits]]\nkey = \"header:X-Api-Key\"\nrate = \"1/h\"\nburst = 1\n\
         path_prefix = \"/api\"\nmethods = [\"post\"]\n",
    ))
    .await;
    let send = |method: &'static str, path: &'static str, key: Option<&'static str>| {
        let addr = proxy.addr;
        async move {
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("http://site.test{path}"))
                .header("host", "site.test");
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            send(
                addr,
                req.body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(send("POST", "/api/orders", Some("alpha")).await, 200);
    assert_eq!(send("POST", "/api/orders", Some("alpha")).await, 429);
    assert_eq!(
        send("POST", "/api/orders", Some("beta")).await,
        200,
        "a key of its own"
    );
    assert_eq!(
        send("GET", "/api/orders", Some("alpha")).await,
        200,
        "GET is not limited"
    );
    assert_eq!(
        send("POST", "/shop", Some("alpha")).await,
        200,
        "outside the prefix"
    );
    assert_eq!(
        send("POST", "/api/orders", None).await,
        200,
        "no key, no limit"
    );
    assert_eq!(send("POST", "/api/orders", None).await, 200);
}

#[test]
fn broken_limits_are_reported_as_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
         [[ratelimit.limits]]\nkey = \"user\"\nrate = \"1/s\"\n\
         [[ratelimit.limits]]\nrate = \"fast\"\n\
         [[ratelimit.limits]]\nrate = \"5/m\"\nburst = 0\nmethods = [\"GE T\"]\n",
    )
    .unwrap();
    let p = path.display();
    check_fails_with(
        &path,
        &[
            format!("{p}:7:7: limit key \"user\""),
            format!("{p}:10:8: rate \"fast\""),
            format!("{p}:13:9: burst must be a positive number"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_every_clients_bucket_unless_the_limit_changes() {
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let write = |burst: u32| {
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
                 [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n\
                 [log]\naccess = \"off\"\n[[ratelimit.limits]]\nrate = \"1/h\"\nburst = {burst}\n",
                origin.addr
            ),
        )
        .unwrap()
    };
    write(1);
    let config = palisade::config::Config::load(&path).unwrap();
    let server = palisade::server::Server::start(config).await.unwrap();
    let (addr, admin) = (server.listen_addrs[0], server.admin_addr.unwrap());
    let reload = || async move { assert_eq!(reload(admin).await.status, 200) };
    assert_eq!(get(addr, "site.test", "/", &[]).await.status, 200);
    assert_eq!(get(addr, "site.test", "/", &[]).await.status, 429);
    reload().await;
    assert_eq!(
        get(addr, "site.test", "/", &[]).await.status,
        429,
        "still empty after a reload"
    );
    write(2);
    reload().await;
    assert_eq!(
        get(addr, "site.test", "/", &[]).await.status,
        200,
        "a changed limit starts afresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_too_often_is_banned_listed_and_can_be_let_back() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "[ratelimit.ban]\nafter = 2\nwithin = \"1m\"\nduration = \"10m\"\n\
         [[ratelimit.limits]]\nrate = \"1/h\"\nburst = 1\n",
    ))
    .await;
    let addr = proxy.addr;
    let from = move |ip: &'static str| async move {
        get(addr, "site.test", "/", &[("x-forwarded-for", ip)])
            .await
            .status
            .as_u16()
    };
    assert_eq!(from("198.51.100.7").await, 200);
    assert_eq!(from("198.51.100.7").await, 429);
    assert_eq!(from("198.51.100.7").await, 429, "the second refusal bans");
    assert_eq!(from("198.51.100.7").await, 403, "banned");
    assert_eq!(from("198.51.100.8").await, 200, "others are not");
    let listed = get(proxy.admin, "admin", "/bans", &[]).await;
    let bans: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(bans[0]["ip"], "198.51.100.7", "{bans}");
    let left = bans[0]["seconds_left"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{left}");
    let lift = |ip: &'static str| {
        let admin = proxy.admin;
        async move {
            let req = http::Request::delete(format!("/bans/{ip}"))
                .header("host", "admin")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            send(admin, req).await.status.as_u16()
        }
    };
    assert_eq!(lift("198.51.100.7").await, 204);
    assert_eq!(lift("198.51.100.7").await, 404, "nothing left to lift");
    assert_eq!(lift("not-an-ip").await, 400);
    assert_eq!(
        from("198.51.100.7").await,
        429,
        "back to its (still empty) bucket"
    );
}
