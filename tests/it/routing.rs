use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_most_specific_host_then_longest_prefix() {
    let any = Origin::named("any").await;
    let wildcard = Origin::named("wildcard").await;
    let exact = Origin::named("exact").await;
    let exact_v2 = Origin::named("exact-v2").await;
    let proxy = Proxy::start(&format!(
        r#"
[[upstreams]]
name = "any"
servers = ["{}"]
[[upstreams]]
name = "wildcard"
servers = ["{}"]
[[upstreams]]
name = "exact"
servers = ["{}"]
[[upstreams]]
name = "exact-v2"
servers = ["{}"]

[[routes]]
host = "*"
upstream = "any"
[[routes]]
host = "*.example.com"
upstream = "wildcard"
[[routes]]
host = "api.example.com"
upstream = "exact"
[[routes]]
host = "api.example.com"
path_prefix = "/v2/"
upstream = "exact-v2"
"#,
        any.addr, wildcard.addr, exact.addr, exact_v2.addr
    ))
    .await;
    let cases = [
        ("api.example.com", "/v2/users", "exact-v2"),
        ("API.Example.com:8080", "/v2/users", "exact-v2"),
        ("api.example.com", "/v1/users", "exact"),
        ("www.example.com", "/v2/users", "wildcard"),
        ("example.com", "/", "any"),
        ("other.test", "/v2/", "any"),
    ];
    for (host, path, want) in cases {
        let got = get(proxy.addr, host, path, &[]).await;
        assert_eq!(got.body, want, "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_gets_our_404_page() {
    let origin = Origin::named("app").await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nhost = \"app.test\"\npath_prefix = \"/app\"\nupstream = \"app\"\n",
        origin.addr
    ))
    .await;
    let got = get(proxy.addr, "other.test", "/app", &[]).await;
    assert_eq!(got.status, 404);
    let id = got.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(got.body.contains(&id), "our page names the request id");
    assert_eq!(
        get(proxy.addr, "app.test", "/elsewhere", &[]).await.status,
        404
    );
    assert_eq!(get(proxy.addr, "app.test", "/app/x", &[]).await.body, "app");
    assert_eq!(origin.hits(), 1, "unrouted requests never reach a backend");
}
