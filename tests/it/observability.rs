use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_object_per_request_with_the_contract_fields() {
    let origin = Origin::named("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\npath_prefix = \"/app\"\nupstream = \"app\"\n[log]\naccess = \"{}\"\n",
        origin.addr,
        log.display()
    ))
    .await;
    let got = get(proxy.addr, "site.test", "/app/page?q=1", &[]).await;
    let missing = get(proxy.addr, "site.test", "/nowhere", &[]).await;
    assert_eq!(missing.status, 404);
    let lines = log_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for field in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "route",
        "upstream",
        "cache",
        "waf",
    ] {
        assert!(first.get(field).is_some(), "field {field} missing: {first}");
    }
    assert_eq!(
        first["request_id"],
        got.headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["path"], "/app/page");
    assert_eq!(first["bytes_out"], 2);
    assert_eq!(first["upstream"], origin.addr.to_string());
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 404);
    assert!(second["route"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status_class_without_per_path_labels() {
    let origin = Origin::start(|seen| {
        if seen.path.starts_with("/missing") {
            Reply::ok("no").status(404)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        origin.addr
    ))
    .await;
    for i in 0..3 {
        get(proxy.addr, "site.test", &format!("/page/{i}"), &[]).await;
    }
    get(proxy.addr, "site.test", "/missing/x", &[]).await;
    let healthz = get(proxy.admin, "admin", "/healthz", &[]).await;
    assert_eq!(healthz.status, 200);
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("palisade_requests_total{route=\"*/\",status=\"2xx\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_requests_total{route=\"*/\",status=\"4xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_request_duration_seconds_count{route=\"*/\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_open_connections"), "{metrics}");
    assert!(!metrics.contains("/page/"), "no per-path series");
    assert!(
        !metrics.contains("127.0.0.1\",status"),
        "no per-client series"
    );
    let not_found = get(proxy.admin, "admin", "/nope", &[]).await;
    assert_eq!(not_found.status, 404);
}
