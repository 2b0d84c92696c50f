//! `palisade demo`: the sample origin (`origin.rs`) on a loopback port and
//! the proxy on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8443 (HTTPS, with a
//! self-signed certificate made at start) in front of it, with the bundled
//! config written to a temporary folder so SIGHUP and `POST /reload` work
//! on it.

mod origin;

use std::sync::Arc;

use crate::config::Config;
use crate::server::Server;

const CONFIG_TEMPLATE: &str = include_str!("palisade.toml");

pub struct Demo {
    pub server: Arc<Server>,
    /// What to print for the user: where things are and what to try.
    pub instructions: String,
}

pub async fn start() -> Result<Demo, String> {
    let origin = origin::start()
        .await
        .map_err(|e| format!("cannot start the sample app: {e}"))?;
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_self_signed(&dir)?;
    let path = dir.join("palisade.toml");
    let text = CONFIG_TEMPLATE.replace("{origin}", &origin.to_string());
    std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = Config::from_str_at(&path, &text).map_err(|e| e.to_string())?;
    let server = Server::start(config).await.map_err(|e| e.to_string())?;
    let proxy = server
        .listen_addrs
        .first()
        .map_or_else(|| "127.0.0.1:8080".to_string(), |a| a.to_string());
    let https = server
        .tls_addrs
        .first()
        .map_or_else(|| "127.0.0.1:8443".to_string(), |a| a.to_string());
    let https_port = https.rsplit(':').next().unwrap_or("8443");
    let cert = dir.join("cert.pem");
    let admin = server
        .admin_addr
        .map_or_else(|| "(admin off)".to_string(), |a| a.to_string());
    let instructions = format!(
        "Palisade demo\n\
         \x20 proxy      http://{proxy}  ->  sample legacy app on {origin} (hidden)\n\
         \x20 https      https://{https}  (self-signed certificate for localhost: {cert})\n\
         \x20 admin      http://{admin}\n\
         \x20 config     {config}\n\
         \n\
         Try:\n\
         \x20 curl -i http://{proxy}/                       # the app; no Server / X-Powered-By leak\n\
         \x20 curl -i 'http://{proxy}/search?q=anvil'       # a search, with an X-Request-Id\n\
         \x20 curl -i -d 'user=admin&password=hunter2' http://{proxy}/login\n\
         \x20 for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' -d 'user=a&password=b' http://{proxy}/login; done   # 6th: 429\n\
         \x20 curl -i -H 'X-Forwarded-For: 203.0.113.9' http://{proxy}/   # a denied address: 403\n\
         \x20 curl -i http://{proxy}/api/products           # JSON API\n\
         \x20 curl -si http://{proxy}/static/app.css | grep -i cache-status   # twice: the second is a hit\n\
         \x20 curl -i http://{proxy}/crash                  # origin stack trace replaced by our 500 page\n\
         \x20 curl -s -D - -o /dev/null -H 'Accept-Encoding: br' http://{proxy}/api/catalog   # Content-Encoding: br\n\
         \x20 curl -i --cacert {cert} https://localhost:{https_port}/   # HTTPS; HTTP/2 by ALPN\n\
         \x20 curl -s http://{admin}/metrics | grep -E 'palisade_(requests|cache_hits)'\n\
         \x20 curl -s -d '{{\"prefix\": \"http://{proxy}/static/\"}}' http://{admin}/purge   # empty the static assets\n\
         \n\
         Access log lines (JSON) follow below. Ctrl-C drains and stops.",
        config = path.display(),
        cert = cert.display(),
    );
    Ok(Demo {
        server,
        instructions,
    })
}

/// A fresh ECDSA P-256 key and a self-signed certificate for `localhost`
/// and 127.0.0.1, as `cert.pem` and `key.pem` in `dir`.
fn write_self_signed(dir: &std::path::Path) -> Result<(), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make the demo certificate: {e}"))?;
    // The key is readable by its owner only, as a real one must be.
    for (file, pem, mode) in [
        ("cert.pem", generated.cert.pem(), 0o644),
        ("key.pem", generated.signing_key.serialize_pem(), 0o600),
    ] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
