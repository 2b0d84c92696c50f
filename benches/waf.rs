//! The WAF engine with OWASP CRS v4 at paranoia level 1, on one core:
//! loading and compiling CRS, a benign browser GET (4 query arguments, 12
//! headers) and a 16 KiB urlencoded POST through phases 1 and 2.
//!   cargo bench --bench waf          (PALISADE_CRS_DIR: CRS location)

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use palisade::waf::rule::RuleSet;
use palisade::waf::seclang;
use palisade::waf::tx::Transaction;
use palisade::waf::tx::request::RequestData;

// The allocator the palisade binary ships with (src/main.rs), so the
// numbers are those of the engine as it runs in the proxy.
#[global_allocator]
static GLOBAL: palisade::alloc::Mimalloc = palisade::alloc::Mimalloc;

fn crs_files() -> Vec<PathBuf> {
    let crs = std::env::var_os("PALISADE_CRS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crs"));
    let engine = std::env::temp_dir().join("palisade-bench-engine.conf");
    std::fs::write(&engine, "SecRuleEngine On\nSecRequestBodyAccess On\n").expect("temp file");
    let mut rules: Vec<PathBuf> = std::fs::read_dir(crs.join("rules"))
        .expect("CRS rules folder (set PALISADE_CRS_DIR)")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    rules.sort();
    let mut files = vec![engine, crs.join("crs-setup.conf.example")];
    files.extend(rules);
    files
}

fn load_crs() -> Arc<RuleSet> {
    let source = seclang::load(&crs_files()).expect("CRS loads");
    Arc::new(RuleSet::compile(source).expect("CRS compiles"))
}

fn headers(extra: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        ("Host", "shop.example"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Cookie", "session=3f9a8c7d6e5b4a39; theme=dark"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Dest", "document"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Referer", "https://shop.example/catalog"),
    ]
    .iter()
    .chain(extra)
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn request(
    method: &str,
    target: &str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
) -> RequestData {
    RequestData {
        method: method.as_bytes().to_vec(),
        uri_raw: target.as_bytes().to_vec(),
        protocol: b"HTTP/1.1".to_vec(),
        headers,
        remote_addr: "192.0.2.10".into(),
        remote_port: 40000,
        server_name: b"shop.example".to_vec(),
        server_port: 443,
        body,
    }
}

fn run(rules: &Arc<RuleSet>, req: RequestData) -> bool {
    let mut tx = Transaction::new(Arc::clone(rules), req, "bench".into());
    tx.process_request_headers()
        .or_else(|| tx.process_request_body())
        .is_some()
}

/// The benign browser GET: 4 query arguments, 12 headers.
fn benign_get() -> RequestData {
    request(
        "GET",
        "/catalog/search?q=blue+shoes&page=2&sort=price&size=42",
        headers(&[]),
        Vec::new(),
    )
}

/// A 16 KiB urlencoded form POST of ordinary text fields.
fn form_post() -> RequestData {
    let mut body = Vec::new();
    let mut i = 0;
    while body.len() < 16 * 1024 {
        body.extend_from_slice(format!("field{i}=some+ordinary+form+text+value+{i}&").as_bytes());
        i += 1;
    }
    body.truncate(16 * 1024);
    let len = body.len().to_string();
    request(
        "POST",
        "/account/profile",
        headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", &len),
        ]),
        body,
    )
}

fn waf(c: &mut Criterion) {
    c.bench_function("load and compile CRS", |b| b.iter(|| black_box(load_crs())));
    let rules = load_crs();
    let get = benign_get();
    assert!(!run(&rules, get.clone()), "the benign GET must pass");
    c.bench_function("CRS benign GET", |b| {
        b.iter(|| black_box(run(&rules, get.clone())))
    });

    // Hostile scale: 10,000 arguments (the bound is linear in their number).
    let many: String = (0..10_000).map(|i| format!("a{i}=v{i}&")).collect();
    let huge = request("GET", &format!("/?{many}"), headers(&[]), Vec::new());
    c.bench_function("CRS GET with 10,000 args", |b| {
        b.iter(|| black_box(run(&rules, huge.clone())))
    });

    let post = form_post();
    let blocked = run(&rules, post.clone());
    eprintln!("16 KiB POST blocked: {blocked}");
    c.bench_function("CRS 16 KiB urlencoded POST", |b| {
        b.iter(|| black_box(run(&rules, post.clone())))
    });
}

/// Resident memory of this process, from /proc (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// RSS with CRS loaded, then after 10,000 varied requests spread over
/// every core (regex caches grow per thread and per pattern).
fn memory(_: &mut Criterion) {
    let before = rss_mib();
    let rules = load_crs();
    let loaded = rss_mib();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = 10_000 / threads;
    let blocked: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let rules = Arc::clone(&rules);
                scope.spawn(move || {
                    let mut blocked = 0;
                    for i in 0..per_thread {
                        let n = t * per_thread + i;
                        let target = match n % 5 {
                            0 => format!("/catalog/item{n}?id={n}&q=shoes+size+{}", n % 47),
                            1 => format!("/search?q=%27+OR+1%3D1--+{n}"),
                            2 => format!("/page?x=%3Cscript%3Ealert({n})%3C%2Fscript%3E"),
                            3 => format!("/files/../../etc/passwd?n={n}"),
                            _ => {
                                format!("/api/v1/orders/{n}?expand=items&fields=a,b,c&token={n:x}")
                            }
                        };
                        let ua = format!(
                            "Mozilla/5.0 (X11; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox",
                            100 + n % 30
                        );
                        let req =
                            request("GET", &target, headers(&[("X-Variant", &ua)]), Vec::new());
                        blocked += usize::from(run(&rules, req));
                    }
                    blocked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let after = rss_mib();
    eprintln!(
        "RSS: {before:.1} MiB before CRS, {loaded:.1} MiB with CRS loaded, {after:.1} MiB after 10,000 varied requests on {threads} threads ({blocked} blocked)"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = memory, waf
}

/// `PALISADE_WAF_REPLAY=GET:20` (or `POST:5`) runs that many transactions
/// and nothing else: for instruction counts under callgrind
/// (`benches/waf-instructions.sh`), which do not vary from run to run
/// the way timings on a shared machine do.
fn main() {
    if let Ok(spec) = std::env::var("PALISADE_WAF_REPLAY") {
        let (kind, count) = spec.split_once(':').unwrap_or((&spec, "1"));
        let count: usize = count.parse().expect("PALISADE_WAF_REPLAY=GET:N or POST:N");
        let rules = load_crs();
        let req = if kind == "POST" {
            form_post()
        } else {
            benign_get()
        };
        for _ in 0..count {
            black_box(run(&rules, req.clone()));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
