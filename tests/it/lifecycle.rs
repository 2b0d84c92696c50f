use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// Waits (at most 10 s) for a proxy just spawned to accept on `port`.
async fn until_listening(port: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(port).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The soft (`column` 3) or hard (4) open-files limit in a
/// `/proc/PID/limits` text.
fn open_files_limit(limits: &str, column: usize) -> String {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(column))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn config_errors_are_all_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = ["127.0.0.1:8080"]
trusted_proxies = ["10.0.0.0/33"]
colour = "blue"
error_page = "missing/page.html"

[server.limits]
header_read_timeout = "ten seconds"

[[upstreams]]
name = "app"
servers = ["127.0.0.1:3000"]
balance = "random"

[[routes]]
host = "*"
upstream = "ghost"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    for expected in [
        format!("{p}:3:20: \"10.0.0.0/33\" is not an IP address or CIDR"),
        format!("{p}:4:1: unknown field `colour`"),
        format!("{p}:5:14: error_page"),
        format!("{p}:8:23: duration \"ten seconds\""),
        format!("{p}:13:11: unknown balance \"random\""),
        format!("{p}:17:12: route names unknown upstream \"ghost\""),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 6, "one line per error:\n{stderr}");
}

#[test]
fn check_accepts_a_valid_config_and_rejects_broken_toml() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[server\nlisten = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:1:", broken.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_lets_the_request_in_flight_finish_after_sigterm() {
    let origin = Origin::start(|_| Reply::ok("finished").delay(Duration::from_millis(1500))).await;
    let port = dead_port().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{port}\"]\nadmin_listen = \"off\"\n[server.limits]\ndrain_timeout = \"10s\"\n\
             [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n[log]\naccess = \"off\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_listening(port).await;
    let in_flight = tokio::spawn(async move { get(port, "site.test", "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(port).await.is_err(),
        "no new connections while draining"
    );
    let got = in_flight.await.unwrap();
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "finished"));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_config_and_keeps_serving_on_a_bad_one() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let write = |origin: std::net::SocketAddr| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
             [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n[[routes]]\nupstream = \"app\"\n[log]\naccess = \"off\"\n"
        )
    };
    std::fs::write(&path, write(a.addr)).unwrap();
    let config = palisade::config::Config::load(&path).unwrap();
    let server = palisade::server::Server::start(config).await.unwrap();
    let (addr, admin) = (server.listen_addrs[0], server.admin_addr.unwrap());
    assert_eq!(get(addr, "site.test", "/", &[]).await.body, "a");

    std::fs::write(&path, write(b.addr)).unwrap();
    assert_eq!(reload(admin).await.status, 200);
    assert_eq!(get(addr, "site.test", "/", &[]).await.body, "b");

    std::fs::write(&path, "[[routes]]\nupstream = \"nowhere\"\n").unwrap();
    let refused = reload(admin).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.body.contains("palisade.toml:2:12"),
        "{}",
        refused.body
    );
    assert_eq!(
        get(addr, "site.test", "/", &[]).await.body,
        "b",
        "old config still serves"
    );
}

#[tokio::test]
async fn a_proxy_started_under_a_low_open_files_limit_raises_it_to_the_hard_limit() {
    let hard = open_files_limit(&std::fs::read_to_string("/proc/self/limits").unwrap(), 4);
    if hard.parse::<u64>().map_or(true, |n| n <= 256) {
        // Nothing to raise to on this machine.
        return;
    }
    let port = dead_port().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{port}\"]\nadmin_listen = \"off\"\n\
             [[upstreams]]\nname = \"app\"\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"app\"\n[log]\naccess = \"off\"\n"
        ),
    )
    .unwrap();
    // A shell lowers the soft limit, then becomes the proxy.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -Sn 256 && exec \"{BIN}\" run -c \"$0\""))
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_listening(port).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(open_files_limit(&limits, 3), hard, "{limits}");
}
