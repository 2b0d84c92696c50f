//! HTTPS in front and TLS to backends, with certificates made by rcgen in
//! each test: SNI, ALPN, protocol versions, hot reload of certificates,
//! broken files, redirects, HSTS, and verified upstream TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade::config::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PKCS_ED25519,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::util::{Origin, Proxy, Reply, empty_get, get, h2_client, send};

/// A test certificate authority.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate (with its chain) and its key, as PEM and DER.
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A leaf for `names` (DNS names or IPs) with an ECDSA P-256 key.
    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, KeyPair::generate().unwrap(), |_| {})
    }

    fn leaf_with(
        &self,
        names: &[&str],
        key: KeyPair,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A leaf issued by an intermediate CA; its PEM holds leaf then
    /// intermediate, as a server must send them.
    fn leaf_via_intermediate(&self, names: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Test Intermediate");
        let intermediate =
            CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.ca).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &intermediate)
            .unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), intermediate.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`.
    fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A client that trusts `roots`, offers `alpn`, and sends SNI unless
/// told not to.
fn client(roots: RootCertStore, alpn: &[&[u8]], sni: bool) -> TlsConnector {
    let mut config = ClientConfig::builder_with_provider(palisade::config::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    TlsConnector::from(Arc::new(config))
}

/// A client that accepts any certificate: for tests that look at which
/// certificate the server picked, not at whether it verifies.
fn inspecting_client(sni: bool) -> TlsConnector {
    let mut config =
        palisade::config::tls::client_config(RootCertStore::empty(), true).expect("client config");
    config.enable_sni = sni;
    TlsConnector::from(Arc::new(config))
}

async fn handshake(
    addr: SocketAddr,
    name: &str,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented.
fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// Sends GET `path` for `host` over an established TLS stream with
/// HTTP/1.1; returns the status, body and the sender for further requests.
async fn get_over(
    stream: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (
    u16,
    String,
    http::HeaderMap,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let (status, body, headers) = request(&mut sender, host, path).await;
    (status, body, headers, sender)
}

async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, String, http::HeaderMap) {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
        parts.headers,
    )
}

/// One `[[server.tls]]` entry on a fresh loopback port.
fn https_entry(cert: &Path, key: &Path) -> String {
    format!("[[server.tls]]\nlisten = [\"127.0.0.1:0\"]\ncert = {cert:?}\nkey = {key:?}\n")
}

/// Writes `text` as `palisade.toml` in `dir`, loads it, starts the proxy.
async fn start_from_file(dir: &Path, text: &str) -> (Proxy, SocketAddr) {
    let path = dir.join("palisade.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}\n---\n{text}"));
    let proxy = Proxy::from_config(config).await;
    let https = proxy.server.tls_addrs[0];
    (proxy, https)
}

fn base_config(origin: SocketAddr, tls_entries: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         {tls_entries}\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\n[log]\naccess = \"off\"\n"
    )
}

async fn post_reload(admin: SocketAddr) -> crate::util::Got {
    let req = Request::post("/reload")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(admin, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_for_each_name_the_wildcard_and_the_default() {
    let origin = Origin::start(|seen| {
        let proto = seen
            .headers
            .get("x-forwarded-proto")
            .map_or("none".into(), |v| v.to_str().unwrap_or("bad").to_string());
        Reply::ok(format!("proto={proto}"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test Root");
    // Three key types: ECDSA served with a chain, Ed25519, RSA.
    let alpha = pki.leaf_via_intermediate(&["alpha.test"]);
    let beta = pki.leaf_with(
        &["beta.test"],
        KeyPair::generate_for(&PKCS_ED25519).unwrap(),
        |_| {},
    );
    let rsa_key = KeyPair::from_pem(include_str!("fixtures/rsa2048-test-only.key")).unwrap();
    let wild = pki.leaf_with(&["*.wild.test"], rsa_key, |_| {});
    let fallback = pki.leaf(&["fallback.test"]);
    let mut entries = String::new();
    for (leaf, stem, extra) in [
        (&alpha, "alpha", "listen = [\"127.0.0.1:0\"]\n"),
        (&beta, "beta", ""),
        (&wild, "wild", ""),
        (&fallback, "fallback", "default = true\n"),
    ] {
        let (cert, key) = leaf.write(dir.path(), stem);
        entries.push_str(&format!(
            "[[server.tls]]\n{extra}cert = {cert:?}\nkey = {key:?}\n"
        ));
    }
    let (_proxy, https) = start_from_file(dir.path(), &base_config(origin.addr, &entries)).await;

    // Verified against the root only: alpha's intermediate must come from
    // the server's chain.
    let verifying = client(pki.roots(), &[b"http/1.1"], true);
    for (name, leaf) in [
        ("alpha.test", &alpha),
        ("beta.test", &beta),
        ("api.wild.test", &wild),
    ] {
        let stream = handshake(https, name, &verifying)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            served(&stream) == leaf.der,
            "{name} got the wrong certificate"
        );
        let (status, body, _, _) = get_over(stream, name, "/").await;
        assert_eq!((status, body.as_str()), (200, "proto=https"), "{name}");
    }

    // A wildcard covers one label only; unknown names and clients without
    // SNI get the default certificate.
    let inspecting = inspecting_client(true);
    for name in ["a.b.wild.test", "wild.test", "unknown.test"] {
        let stream = handshake(https, name, &inspecting).await.unwrap();
        assert!(
            served(&stream) == fallback.der,
            "{name} should get the default"
        );
    }
    let no_sni = handshake(https, "alpha.test", &inspecting_client(false))
        .await
        .unwrap();
    assert!(served(&no_sni) == fallback.der, "no SNI gets the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_and_http11_remains_for_clients_without_it() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test Root");
    let (cert, key) = pki.leaf(&["site.test"]).write(dir.path(), "site");
    let entry = https_entry(&cert, &key);
    let (_proxy, https) = start_from_file(dir.path(), &base_config(origin.addr, &entry)).await;

    let stream = handshake(
        https,
        "site.test",
        &client(pki.roots(), &[b"h2", b"http/1.1"], true),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = h2_client(stream).await;
    for _ in 0..3 {
        let response = sender
            .send_request(empty_get("https://site.test/x"))
            .await
            .expect("h2 response");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"app");
    }

    let plain = handshake(https, "site.test", &client(pki.roots(), &[], true))
        .await
        .unwrap();
    assert_eq!(plain.get_ref().1.alpn_protocol(), None);
    let (status, body, _, _) = get_over(plain, "site.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "app"));
    assert_eq!(origin.hits(), 4);
}

/// A TLS 1.1 ClientHello: legacy_version 3.2 and no supported_versions
/// extension.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    // Suites rustls has (TLS 1.2 ECDHE-GCM), so only the version is wrong.
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let extensions: &[u8] = &[
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01,
        // supported_groups: x25519, secp256r1
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17,
        // ec_point_formats: uncompressed
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_client_hello_is_refused_with_a_protocol_version_alert() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Pki::new("Root")
        .leaf(&["site.test"])
        .write(dir.path(), "site");
    let entry = https_entry(&cert, &key);
    let (proxy, https) = start_from_file(dir.path(), &base_config(origin.addr, &entry)).await;

    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    // An alert record (21), fatal (2), protocol_version (70); never a
    // ServerHello (a handshake record, 22).
    assert!(answer.len() >= 7, "no answer: {answer:?}");
    assert_eq!(answer[0], 21, "expected an alert record, got {answer:?}");
    assert_eq!(
        &answer[5..7],
        &[2, 70],
        "expected protocol_version: {answer:?}"
    );
    // The failure is counted once the handshake task ends, which may be
    // just after the client has read the alert.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
        if metrics.contains("palisade_tls_handshake_failures_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("palisade_tls_handshake_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_for_new_connections_while_an_old_one_keeps_serving() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Root");
    let first = pki.leaf(&["site.test"]);
    let (cert, key) = first.write(dir.path(), "site");
    let entry = https_entry(&cert, &key);
    let (proxy, https) = start_from_file(dir.path(), &base_config(origin.addr, &entry)).await;
    let connector = client(pki.roots(), &[b"http/1.1"], true);

    let old = handshake(https, "site.test", &connector).await.unwrap();
    assert!(served(&old) == first.der);
    let (status, _, _, mut old_sender) = get_over(old, "site.test", "/").await;
    assert_eq!(status, 200);

    let second = pki.leaf(&["site.test"]);
    second.write(dir.path(), "site");
    let reloaded = post_reload(proxy.admin).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);

    // A fresh client: one that resumes its earlier session is shown the
    // certificate of that session.
    let fresh = client(pki.roots(), &[b"http/1.1"], true);
    let new = handshake(https, "site.test", &fresh).await.unwrap();
    assert!(
        served(&new) == second.der,
        "new handshakes get the new certificate"
    );
    let (status, _, _) = request(&mut old_sender, "site.test", "/again").await;
    assert_eq!(
        status, 200,
        "the connection opened before the reload still serves"
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_files_are_refused_by_name_and_the_old_certificate_stays() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Root");
    let good = pki.leaf(&["site.test"]);
    let (cert, key) = good.write(dir.path(), "site");
    let entry = https_entry(&cert, &key);
    let (proxy, https) = start_from_file(dir.path(), &base_config(origin.addr, &entry)).await;
    let other = pki.leaf(&["site.test"]);
    let expired = pki.leaf_with(&["site.test"], KeyPair::generate().unwrap(), |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let key_name = key.display().to_string();
    let cert_name = cert.display().to_string();
    // (what, cert file, key file, message, line of the setting at fault)
    let cases: [(&str, String, String, String, u32); 3] = [
        (
            "mismatched key",
            other.chain_pem.clone(),
            good.key_pem.clone(),
            format!("private key {key_name} does not match the certificate {cert_name}"),
            7,
        ),
        (
            "bad PEM",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n".into(),
            good.key_pem.clone(),
            format!("certificate {cert_name}: "),
            6,
        ),
        (
            "expired",
            expired.chain_pem.clone(),
            expired.key_pem.clone(),
            format!("certificate {cert_name} expired on"),
            6,
        ),
    ];
    for (what, cert_pem, key_pem, message, line) in cases {
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let refused = post_reload(proxy.admin).await;
        assert_eq!(refused.status, 422, "{what}: {}", refused.body);
        assert!(refused.body.contains(&message), "{what}: {}", refused.body);
        // file:line of the `cert` or `key` setting in the config.
        let at = format!("palisade.toml:{line}:");
        assert!(refused.body.contains(&at), "{what}: {}", refused.body);
        // A fresh client each time: a resumed session would show the
        // certificate of its first handshake whatever the server holds.
        let connector = client(pki.roots(), &[b"http/1.1"], true);
        let stream = handshake(https, "site.test", &connector).await.unwrap();
        assert!(
            served(&stream) == good.der,
            "{what}: the old certificate stays"
        );
        let (status, _, _, _) = get_over(stream, "site.test", "/").await;
        assert_eq!(status, 200, "{what}");
    }
}

#[test]
fn check_reports_every_tls_setting_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.toml");
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\nhsts_max_age = \"365d\"\nhttps_redirect = true\n\
                [[server.tls]]\nlisten = [\"127.0.0.1:8080\"]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n\
                names = [\"bad name!\"]\n\
                [[upstreams]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\ntls_ca = \"ca.pem\"\n\
                [[routes]]\nupstream = \"app\"\n";
    std::fs::write(&path, text).unwrap();
    let errors = Config::load(&path).unwrap_err().to_string();
    for expected in [
        "palisade.toml:5:1: 127.0.0.1:8080 is both a plain-HTTP and an HTTPS listener",
        "palisade.toml:7:8: certificate ",
        "missing.pem: No such file",
        "palisade.toml:9:10: \"bad name!\" is not a host name or `*.domain` (for SNI)",
        "palisade.toml:13:10: TLS setting on an upstream with no https:// server",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_with_308_to_the_same_url_and_hsts_goes_on_https_only() {
    let origin =
        Origin::start(|_| Reply::ok("app").header("strict-transport-security", "max-age=1")).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Root");
    let (cert, key) = pki.leaf(&["site.test"]).write(dir.path(), "site");
    let text = base_config(
        origin.addr,
        &format!(
            "https_redirect = true\nhsts_max_age = \"365d\"\nhsts_include_subdomains = true\n\
             [[server.tls]]\nlisten = [\"127.0.0.1:0\"]\ncert = {cert:?}\nkey = {key:?}\n"
        ),
    );
    let (proxy, https) = start_from_file(dir.path(), &text).await;

    let redirected = get(proxy.addr, "Site.Test:8080", "/a/b?x=1&y=%20", &[]).await;
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.headers["location"],
        format!("https://site.test:{}/a/b?x=1&y=%20", https.port()).as_str()
    );
    assert!(
        redirected
            .headers
            .get("strict-transport-security")
            .is_none()
    );
    assert_eq!(origin.hits(), 0, "redirects never reach the origin");

    let stream = handshake(https, "site.test", &client(pki.roots(), &[], true))
        .await
        .unwrap();
    let (status, body, headers, _) = get_over(stream, "site.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "app"));
    let hsts: Vec<_> = headers
        .get_all("strict-transport-security")
        .iter()
        .collect();
    assert_eq!(
        hsts,
        ["max-age=31536000; includeSubDomains"],
        "ours replaces the origin's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported_as_a_metric() {
    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let leaf = Pki::new("Root").leaf_with(&["site.test"], KeyPair::generate().unwrap(), |p| {
        p.not_after = rcgen::date_time_ymd(2040, 6, 1);
    });
    let (cert, key) = leaf.write(dir.path(), "site");
    let entry = https_entry(&cert, &key);
    let (proxy, _) = start_from_file(dir.path(), &base_config(origin.addr, &entry)).await;
    let metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
    // 2040-06-01T00:00:00Z
    let line = format!(
        "palisade_tls_certificate_not_after_seconds{{cert=\"{}\"}} 2222121600",
        cert.display()
    );
    assert!(metrics.contains(&line), "missing {line:?} in:\n{metrics}");
}

/// An HTTPS origin with a certificate from `leaf`; counts requests and
/// TLS connections.
struct TlsOrigin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

async fn tls_origin(leaf: &Leaf) -> TlsOrigin {
    let chain = vec![leaf.der.clone()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(palisade::config::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (counter, conn_counter) = (Arc::clone(&hits), Arc::clone(&connections));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            conn_counter.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from("secure origin"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TlsOrigin {
        addr,
        hits,
        connections,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_https_is_verified_against_the_configured_ca_and_fails_closed_with_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let backend_pki = Pki::new("Backend Root");
    let origin = tls_origin(&backend_pki.leaf(&["backend.internal", "127.0.0.1"])).await;
    let (backend, hits) = (origin.addr, &origin.hits);
    std::fs::write(dir.path().join("right-ca.pem"), backend_pki.ca_pem()).unwrap();
    std::fs::write(
        dir.path().join("wrong-ca.pem"),
        Pki::new("Other Root").ca_pem(),
    )
    .unwrap();
    let config = |ca: &str, name: &str| {
        format!(
            "[[upstreams]]\nname = \"app\"\nservers = [\"https://{backend}\"]\ntls_ca = {ca:?}\n{name}retries = 0\n\
             [[routes]]\nupstream = \"app\"\n"
        )
    };
    let ca = |file: &str| dir.path().join(file).display().to_string();

    // Verified by IP address, then by a configured SNI name.
    for name in ["", "tls_server_name = \"backend.internal\"\n"] {
        let proxy = Proxy::start(&config(&ca("right-ca.pem"), name)).await;
        for _ in 0..3 {
            let got = get(proxy.addr, "site.test", "/", &[]).await;
            assert_eq!(
                (got.status.as_u16(), got.body.as_str()),
                (200, "secure origin"),
                "{name}"
            );
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 6);

    let before = hits.load(Ordering::SeqCst);
    for (ca_file, name) in [
        ("wrong-ca.pem", ""),
        // Right CA, wrong name: verification must check the name too.
        ("right-ca.pem", "tls_server_name = \"impostor.internal\"\n"),
    ] {
        let proxy = Proxy::start(&config(&ca(ca_file), name)).await;
        let got = get(proxy.addr, "site.test", "/", &[]).await;
        assert_eq!(got.status, 502, "{ca_file} {name}: {}", got.body);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "nothing reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_reaches_a_backend_with_an_untrusted_certificate() {
    let origin = tls_origin(&Pki::new("Unknown Root").leaf(&["whatever.test"])).await;
    let backend = origin.addr;
    let proxy = Proxy::start(&format!(
        "[[upstreams]]\nname = \"app\"\nservers = [\"https://{backend}\"]\ntls_insecure_skip_verify = true\n\
         [[routes]]\nupstream = \"app\"\n"
    ))
    .await;
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "secure origin")
    );
    // Kept alive and reused: the pooled TLS connection survives the
    // session tickets that arrive while it is idle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = get(proxy.addr, "site.test", "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        1,
        "one TLS connection, reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_within_14_days_is_warned_about_at_start_and_at_reload() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let origin = Origin::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let leaf = Pki::new("Root").leaf_with(&["site.test"], KeyPair::generate().unwrap(), |p| {
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(5 * 24 + 12);
    });
    let (cert, key) = leaf.write(dir.path(), "site");
    let path = dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = []\nadmin_listen = \"off\"\n\
             [[server.tls]]\nlisten = [\"127.0.0.1:0\"]\ncert = {cert:?}\nkey = {key:?}\n\
             [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n\
             [log]\naccess = \"off\"\nlevel = \"warn\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let next_warning = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut seen = Vec::new();
            while let Some(line) = rx.recv().await {
                if line.contains("certificate expires within 14 days") {
                    return line;
                }
                seen.push(line);
            }
            panic!("palisade exited without the warning:\n{}", seen.join("\n"));
        })
        .await
        .expect("no expiry warning within 10 s")
    };
    let at_start = next_warning(&mut rx).await;
    assert!(
        at_start.contains("site.pem") && at_start.contains("days_left=5"),
        "{at_start}"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let at_reload = next_warning(&mut rx).await;
    assert!(at_reload.contains("site.pem"), "{at_reload}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_cache_hits_over_tls_and_h2_read_their_stored_body_whole() {
    // Large enough to be kept in a memory file: TLS and HTTP/2 read it
    // through the mapping, where plain HTTP/1 would use sendfile.
    let body: String = (0..40_000).map(|i| format!("{:05}", i % 99_991)).collect();
    let origin = {
        let body = body.clone();
        Origin::start(move |_| Reply::ok(body.clone()).header("cache-control", "max-age=60")).await
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test Root");
    let (cert, key) = pki.leaf(&["site.test"]).write(dir.path(), "site");
    let config = format!(
        "{}\n[cache]\nmax_size = \"16MiB\"\n",
        base_config(origin.addr, &https_entry(&cert, &key))
    );
    let (_proxy, https) = start_from_file(dir.path(), &config).await;

    let http1 = handshake(https, "site.test", &client(pki.roots(), &[], true))
        .await
        .unwrap();
    let (status, first, _, mut sender) = get_over(http1, "site.test", "/big").await;
    assert_eq!(status, 200);
    assert!(first == body, "the stored response's own answer differs");
    // The client's connection task may still be finishing the first
    // exchange: the next request waits for it.
    sender.ready().await.expect("the connection stays open");
    let (_, hit, headers) = request(&mut sender, "site.test", "/big").await;
    assert!(headers["cache-status"].to_str().unwrap().contains("hit"));
    assert!(hit == body, "an HTTP/1.1 hit over TLS differs");

    let h2 = handshake(https, "site.test", &client(pki.roots(), &[b"h2"], true))
        .await
        .unwrap();
    let mut sender = h2_client(h2).await;
    let response = sender
        .send_request(empty_get("https://site.test/big"))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert!(got == body.as_bytes(), "an h2 hit differs");
    assert_eq!(origin.hits(), 1);
}
