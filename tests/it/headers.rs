use crate::util::*;

fn one_upstream(origin: std::net::SocketAddr, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_connection_named_headers_are_removed_both_ways() {
    let origin = Origin::start(|_| {
        Reply::ok("ok")
            .header("connection", "x-backend-hop")
            .header("x-backend-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-backend-kept", "1")
    })
    .await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    let got = get(
        proxy.addr,
        "site.test",
        "/",
        &[
            ("connection", "keep-alive, X-Client-Hop"),
            ("x-client-hop", "secret"),
            ("keep-alive", "300"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-client-kept", "1"),
        ],
    )
    .await;
    let seen = &origin.requests()[0].headers;
    for hop in [
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!seen.contains_key(hop), "backend received {hop}");
    }
    assert_eq!(seen["x-client-kept"], "1");
    assert!(!got.headers.contains_key("x-backend-hop"));
    assert!(!got.headers.contains_key("keep-alive"));
    assert_eq!(got.headers["x-backend-kept"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let origin = Origin::named("ok").await;
    // 127.0.0.1 is not trusted here: the test client is just some client.
    let proxy = Proxy::start(&one_upstream(
        origin.addr,
        "trusted_proxies = [\"10.0.0.0/8\"]",
    ))
    .await;
    get(
        proxy.addr,
        "site.test",
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6"),
        ],
    )
    .await;
    let seen = &origin.requests()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "site.test");
    assert!(!seen.contains_key("forwarded"));
    assert_eq!(seen["via"], "1.1 palisade");
    assert_eq!(
        seen["host"], "site.test",
        "the client's Host reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscored_twins_of_forwarding_and_framing_headers_never_reach_the_backend() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    let (out, _) = crate::util::raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX_Forwarded_For: 6.6.6.6\r\n\
          Transfer_Encoding: chunked\r\nX_Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = &origin.requests()[0].headers;
    assert!(
        seen.keys().all(|k| !k.as_str().contains('_')),
        "the backend saw {seen:?}"
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_is_extended_and_its_client_ip_believed() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&one_upstream(
        origin.addr,
        "trusted_proxies = [\"127.0.0.1/32\"]",
    ))
    .await;
    get(
        proxy.addr,
        "site.test",
        "/",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "edge-42"),
        ],
    )
    .await;
    let seen = &origin.requests()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        seen["x-request-id"], "edge-42",
        "a trusted proxy's request id is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_sent_upstream_and_returned() {
    let origin = Origin::start(|_| Reply::ok("ok").header("x-request-id", "origin-chosen")).await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    let got = get(
        proxy.addr,
        "site.test",
        "/",
        &[("x-request-id", "client-chosen")],
    )
    .await;
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert_ne!(
        id, "client-chosen",
        "an untrusted client cannot pick its request id"
    );
    assert_eq!(id.len(), 32);
    assert_eq!(origin.requests()[0].headers["x-request-id"], id);
    assert_eq!(
        got.headers.get_all("x-request-id").iter().count(),
        1,
        "ours replaces the origin's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_identifying_response_headers_are_stripped() {
    let origin = Origin::start(|_| {
        Reply::ok("ok")
            .header("server", "Apache/2.2.3 (CentOS)")
            .header("x-powered-by", "PHP/5.3.3")
            .header("x-aspnet-version", "4.0.30319")
            .header("x-aspnetmvc-version", "5.2")
            .header("x-app", "kept")
    })
    .await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    for leak in [
        "server",
        "x-powered-by",
        "x-aspnet-version",
        "x-aspnetmvc-version",
    ] {
        assert!(!got.headers.contains_key(leak), "{leak} leaked");
    }
    assert_eq!(got.headers["x-app"], "kept");

    let custom = Proxy::start(&one_upstream(origin.addr, "hide_headers = [\"X-App\"]")).await;
    let got = get(custom.addr, "site.test", "/", &[]).await;
    assert!(!got.headers.contains_key("x-app"));
    assert!(
        got.headers.contains_key("x-powered-by"),
        "the list is configurable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_5xx_stack_trace_is_replaced_by_our_error_page() {
    let origin = Origin::start(|_| {
        Reply::ok(
            "Traceback: NullPointerException at com.acme.Db.connect(Db.java:42) password=s3cret",
        )
        .status(500)
    })
    .await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(got.status, 500);
    assert!(!got.body.contains("s3cret") && !got.body.contains("Traceback"));
    assert!(
        got.body
            .contains(got.headers["x-request-id"].to_str().unwrap())
    );

    let passthrough = Proxy::start(&one_upstream(origin.addr, "replace_error_pages = false")).await;
    let got = get(passthrough.addr, "site.test", "/", &[]).await;
    assert_eq!(got.status, 500);
    assert!(got.body.contains("Traceback"), "can be turned off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_streams_through_intact_and_head_keeps_its_length() {
    let big: String = (0..(1 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let expected = big.clone();
    let origin = Origin::start(move |_| Reply::ok(big.clone())).await;
    let proxy = Proxy::start(&one_upstream(origin.addr, "")).await;
    for _ in 0..3 {
        let got = get(proxy.addr, "site.test", "/big", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), expected.len());
        assert!(got.body == expected, "body changed in transit");
    }
    let head = http::Request::head("/big")
        .header("host", "site.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send(proxy.addr, head).await;
    assert_eq!(got.headers["content-length"], expected.len().to_string());
    assert!(got.body.is_empty());
}
