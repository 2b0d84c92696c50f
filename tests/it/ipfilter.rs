//! `[ipfilter]`: CIDR allow and deny lists, inline and from files, against
//! the client address after trusted-proxy resolution.

use crate::util::*;

/// A proxy in front of one origin; loopback is a trusted proxy, so each
/// request names its client in `X-Forwarded-For`.
fn config(origin: std::net::SocketAddr, ipfilter: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\n[ipfilter]\n{ipfilter}\n"
    )
}

async fn status_for(proxy: &Proxy, client: &str) -> (u16, String) {
    let got = get(
        proxy.addr,
        "site.test",
        "/",
        &[("x-forwarded-for", client), ("x-request-id", "ipf-1")],
    )
    .await;
    (got.status.as_u16(), got.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_cidr_gets_403_with_request_id_and_a_counted_reason() {
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("deny.txt");
    std::fs::write(
        &list,
        "# scanners\n198.51.100.0/24\n2001:db8:bad::/48 # v6 range\n",
    )
    .unwrap();
    let log = dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        "{}[log]\naccess = \"{}\"\n",
        config(
            origin.addr,
            &format!(
                "deny = [\"203.0.113.0/24\"]\nallow = [\"203.0.113.7\"]\ndeny_files = [\"{}\"]",
                list.display()
            ),
        ),
        log.display()
    ))
    .await;
    let (status, body) = status_for(&proxy, "203.0.113.9").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("ipf-1"),
        "our page names the request id: {body}"
    );
    assert_eq!(
        status_for(&proxy, "203.0.113.7").await.0,
        200,
        "the /32 allow is more specific"
    );
    assert_eq!(
        status_for(&proxy, "198.51.100.200").await.0,
        403,
        "from the file"
    );
    assert_eq!(status_for(&proxy, "2001:db8:bad::1").await.0, 403);
    assert_eq!(status_for(&proxy, "2001:db8:b00::1").await.0, 200);
    assert_eq!(
        status_for(&proxy, "192.0.2.1").await.0,
        200,
        "unlisted passes"
    );
    assert_eq!(
        origin.requests().len(),
        3,
        "denied requests never reach the origin"
    );
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("palisade_ipfilter_denied_total{reason=\"cidr\"} 3"),
        "{metrics}"
    );
    let lines = log_lines(&log, 6).await;
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["ipfilter"], "cidr", "{first}");
    assert_eq!(first["client_ip"], "203.0.113.9");
    let allowed: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert!(allowed["ipfilter"].is_null(), "{allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_mode_refuses_everyone_not_listed() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(
        origin.addr,
        "mode = \"allowlist\"\nallow = [\"10.0.0.0/8\", \"127.0.0.1\"]\ndeny = [\"10.6.6.0/24\"]",
    ))
    .await;
    assert_eq!(status_for(&proxy, "10.1.2.3").await.0, 200);
    assert_eq!(
        status_for(&proxy, "10.6.6.6").await.0,
        403,
        "deny carves out of allow"
    );
    assert_eq!(
        status_for(&proxy, "192.0.2.1").await.0,
        403,
        "not on the list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_not_believed() {
    let origin = Origin::named("ok").await;
    // Loopback is not trusted here: the peer itself (127.0.0.1) is judged.
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n\
         [ipfilter]\nmode = \"allowlist\"\nallow = [\"203.0.113.0/24\"]\n",
        origin.addr
    ))
    .await;
    assert_eq!(status_for(&proxy, "203.0.113.9").await.0, 403);
}

#[test]
fn bad_list_lines_are_reported_as_file_line_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("deny.txt");
    std::fs::write(&list, "10.0.0.0/8\nnot-an-ip\n\n10.0.0.300 # typo\n").unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!(
            "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
             [ipfilter]\nmode = \"blocklist\"\ndeny = [\"10.0.0.0/33\"]\ndeny_files = [\"{}\", \"missing.txt\"]\n",
            list.display()
        ),
    )
    .unwrap();
    let (p, l) = (path.display(), list.display());
    let stderr = check_fails_with(
        &path,
        &[
            format!("{p}:7:8: ipfilter.mode \"blocklist\""),
            format!("{p}:8:9: \"10.0.0.0/33\" is not an IP address or CIDR"),
            "missing.txt: ".to_string(),
            format!("{l}:2:1: \"not-an-ip\" is not an IP address or CIDR"),
            format!("{l}:4:1: \"10.0.0.300\" is not an IP address or CIDR"),
        ],
    );
    assert_eq!(stderr.lines().count(), 5, "one line per error:\n{stderr}");
}

/// Networks of a MaxMind test database's JSON source with the value at
/// `field` (a path of keys).
fn networks(file: &str, field: &[&str]) -> Vec<(ipnet::IpNet, serde_json::Value)> {
    let text = std::fs::read_to_string(geoip_dir().join(file)).unwrap();
    let entries: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).unwrap();
    entries
        .into_iter()
        .flat_map(|e| e.into_iter())
        .filter_map(|(net, record)| {
            let net: ipnet::IpNet = net.parse().ok()?;
            let value = field.iter().try_fold(&record, |v, k| v.get(*k))?.clone();
            Some((net, value))
        })
        .collect()
}

/// The first address inside `net`.
fn address_in(net: &ipnet::IpNet) -> String {
    net.hosts().next().unwrap_or(net.addr()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_and_asns_from_maxmind_databases_are_denied_by_reason() {
    let countries = networks("GeoIP2-Country-Test.json", &["country", "iso_code"]);
    // Two networks of two countries, neither nested in another network.
    let alone = |net: &ipnet::IpNet| {
        countries
            .iter()
            .filter(|(n, _)| n.contains(net) || net.contains(n))
            .count()
            == 1
    };
    let (first_net, first_cc) = countries.iter().find(|(n, _)| alone(n)).cloned().unwrap();
    let (second_net, second_cc) = countries
        .iter()
        .find(|(n, cc)| *cc != first_cc && alone(n))
        .cloned()
        .unwrap();
    let (first_cc, second_cc) = (first_cc.as_str().unwrap(), second_cc.as_str().unwrap());
    let asns = networks("GeoLite2-ASN-Test.json", &["autonomous_system_number"]);
    let (asn_net, asn) = asns
        .iter()
        .find(|(n, _)| {
            !countries
                .iter()
                .any(|(c, _)| c.contains(n) || n.contains(c))
        })
        .cloned()
        .unwrap();
    let unknown = "127.0.0.2";
    assert!(
        !countries
            .iter()
            .any(|(n, _)| n.contains(&unknown.parse::<std::net::IpAddr>().unwrap()))
    );

    let origin = Origin::named("ok").await;
    let geo = geoip_dir();
    let proxy = Proxy::start(&config(
        origin.addr,
        &format!(
            "geoip_db = \"{}\"\nasn_db = \"{}\"\ndeny_countries = [\"{}\"]\ndeny_asns = [{asn}]\n",
            geo.join("GeoIP2-Country-Test.mmdb").display(),
            geo.join("GeoLite2-ASN-Test.mmdb").display(),
            first_cc.to_lowercase(),
        ),
    ))
    .await;
    assert_eq!(
        status_for(&proxy, &address_in(&first_net)).await.0,
        403,
        "{first_cc}"
    );
    assert_eq!(
        status_for(&proxy, &address_in(&second_net)).await.0,
        200,
        "{second_cc}"
    );
    assert_eq!(
        status_for(&proxy, &address_in(&asn_net)).await.0,
        403,
        "AS{asn}"
    );
    assert_eq!(
        status_for(&proxy, unknown).await.0,
        200,
        "unknown is allowed by default"
    );
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    for line in [
        "palisade_ipfilter_denied_total{reason=\"country\"} 1".to_string(),
        "palisade_ipfilter_denied_total{reason=\"asn\"} 1".to_string(),
        format!("palisade_ipfilter_denied_countries_total{{country=\"{first_cc}\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "missing {line}:\n{metrics}");
    }

    // Only the second country, and unknown addresses refused.
    let proxy = Proxy::start(&config(
        origin.addr,
        &format!(
            "geoip_db = \"{}\"\nallow_countries = [\"{second_cc}\"]\nunknown_country = \"deny\"\n",
            geo.join("GeoIP2-Country-Test.mmdb").display(),
        ),
    ))
    .await;
    assert_eq!(status_for(&proxy, &address_in(&second_net)).await.0, 200);
    assert_eq!(status_for(&proxy, &address_in(&first_net)).await.0, 403);
    assert_eq!(status_for(&proxy, unknown).await.0, 403);
}

#[test]
fn geo_rules_without_their_database_or_with_a_broken_one_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.mmdb");
    std::fs::write(&broken, b"not a database").unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!(
            "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
             [ipfilter]\ndeny_countries = [\"XYZ\", \"fr\"]\ndeny_asns = [-1]\nasn_db = \"{}\"\nunknown_country = \"maybe\"\n",
            broken.display()
        ),
    )
    .unwrap();
    let p = path.display();
    check_fails_with(
        &path,
        &[
            format!("{p}:7:19: \"XYZ\" is not a two-letter ISO country code"),
            format!("{p}:7:19: country rules need ipfilter.geoip_db"),
            format!("{p}:8:14: -1 is not an AS number"),
            format!("{p}:9:10: {}: not a MaxMind database", broken.display()),
            format!("{p}:10:19: ipfilter.unknown_country \"maybe\""),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_its_own_ipfilter_replaces_the_global_one() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/admin\"\nupstream = \"app\"\n\
         [routes.ipfilter]\nmode = \"allowlist\"\nallow = [\"10.0.0.0/8\"]\n\
         [[routes]]\nupstream = \"app\"\n\
         [ipfilter]\ndeny = [\"192.0.2.0/24\"]\n",
        origin.addr
    ))
    .await;
    let status = |path: &'static str, client: &'static str| {
        let addr = proxy.addr;
        async move {
            get(addr, "site.test", path, &[("x-forwarded-for", client)])
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(status("/admin/x", "10.1.1.1").await, 200);
    assert_eq!(
        status("/admin/x", "198.51.100.1").await,
        403,
        "not on the route's allowlist"
    );
    assert_eq!(status("/admin/x", "192.0.2.1").await, 403);
    assert_eq!(status("/shop", "192.0.2.1").await, 403, "the global list");
    assert_eq!(status("/shop", "198.51.100.1").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_walk_around_a_route_rule() {
    let origin = Origin::start(|seen| Reply::ok(seen.path.clone())).await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/admin\"\nupstream = \"app\"\n\
         [routes.ipfilter]\nmode = \"allowlist\"\nallow = [\"10.0.0.0/8\"]\n\
         [[routes]]\nupstream = \"app\"\n",
        origin.addr
    ))
    .await;
    let answer = |target: &str| {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
        let addr = proxy.addr;
        async move {
            let (out, _) = raw(addr, request.as_bytes(), std::time::Duration::from_secs(2)).await;
            out
        }
    };
    for trick in [
        "/admin/x",
        "/%61dmin/x",
        "/./admin/x",
        "/shop/../admin/x",
        "/shop/%2e%2e/admin/x",
        "/;x=1/admin/x",
        "//admin/x",
        "/admin;jsessionid=1/x",
    ] {
        let out = answer(trick).await;
        assert!(out.starts_with("HTTP/1.1 403"), "{trick} got {out}");
    }
    for refused in ["/a%00b", "/a\\..\\admin", "/%c0%ae%c0%ae/admin", "/a%zz"] {
        let out = answer(refused).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{refused} got {out}");
    }
    assert_eq!(origin.hits(), 0);
    // What is let through reaches the backend in the form it was judged in.
    let out = answer("/shop/./a/../%62ook?q=%2e").await;
    assert!(out.ends_with("/shop/book?q=%2e"), "{out}");
}
