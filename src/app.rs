//! The commands behind the CLI: `run`, `demo`, `check`. Each returns the
//! process exit code.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::server::Server;

/// `palisade check`: 0 when the config is valid, 1 with every error otherwise.
pub fn check(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} HTTP and {} HTTPS listener(s), {} certificate(s), {} route(s), {} upstream(s))",
                path.display(),
                config.server.listen.len(),
                config.server.tls_listen.len(),
                config.server.tls.len(),
                config.routes.len(),
                config.upstreams.len()
            );
            0
        }
        Err(errors) => {
            eprintln!("{errors}");
            1
        }
    }
}

/// `palisade rules check`: 0 and the rule count when the files load, 1
/// and every error otherwise. Warnings go to stderr either way.
pub fn rules_check(files: &[std::path::PathBuf]) -> u8 {
    match crate::waf::seclang::load(files) {
        Ok(rules) => {
            for warning in &rules.warnings {
                eprintln!("{warning} (warning)");
            }
            println!("{} rules loaded", rules.rule_count());
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            1
        }
    }
}

/// `palisade run`: serve until SIGTERM/SIGINT, reloading on SIGHUP.
pub fn run(path: &Path) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return 1;
        }
    };
    init_logging(&config.log.level);
    raise_descriptor_limit();
    let Some(runtime) = tokio_runtime() else {
        return 1;
    };
    runtime.block_on(async move {
        // Installed before the server starts: a SIGHUP or SIGTERM sent as
        // soon as it logs must not find the default action (exit) in place.
        let Some(signals) = Signals::install() else {
            return 1;
        };
        match Server::start(config).await {
            Ok(server) => {
                for addr in &server.listen_addrs {
                    tracing::info!("listening on http://{addr}");
                }
                for addr in &server.tls_addrs {
                    tracing::info!("listening on https://{addr}");
                }
                if let Some(addr) = server.admin_addr {
                    tracing::info!("admin on http://{addr}");
                }
                serve_until_signal(server, signals).await
            }
            Err(e) => {
                eprintln!("palisade: {e}");
                1
            }
        }
    })
}

/// Lifts the soft limit on open files to the hard one, as Go's runtime
/// does and nginx's `worker_rlimit_nofile` is set for: each connection,
/// upstream socket and large stored body (`cache::memfile`) takes a
/// descriptor, and services are still often started with 1024.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit is not a value the soft one may take.
    let most = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|soft| soft < most) {
        let raised = Rlimit {
            current: Some(most),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("open files limit stays {:?}: {e}", limit.current);
        }
    }
}

/// `palisade demo`: the sample app and the proxy in front of it.
pub fn demo() -> u8 {
    init_logging("info");
    raise_descriptor_limit();
    let Some(runtime) = tokio_runtime() else {
        return 1;
    };
    runtime.block_on(async {
        let Some(signals) = Signals::install() else {
            return 1;
        };
        let demo = match crate::demo::start().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("palisade demo: {e}");
                return 1;
            }
        };
        println!("{}", demo.instructions);
        serve_until_signal(demo.server, signals).await
    })
}

/// The control runtime: admin listener, health checks, reloads, signals.
/// Requests are served on the threads `server.workers` starts, so this one
/// needs little.
fn tokio_runtime() -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1);
    match builder.enable_all().thread_name("palisade-control").build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("palisade: cannot start the async runtime: {e}");
            None
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The signals `run` and `demo` act on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some(Signals { term, int, hup }),
            _ => {
                eprintln!("palisade: cannot install signal handlers");
                None
            }
        }
    }
}

/// Waits for SIGTERM/SIGINT (drain, then exit 0) and SIGHUP (reload).
async fn serve_until_signal(server: Arc<Server>, signals: Signals) -> u8 {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    // Expiry warnings come at start and reload; a server left running for
    // weeks between reloads must still say so in time.
    let every = std::time::Duration::from_secs(12 * 3600);
    let mut cert_check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = cert_check.tick() => server.check_certificates(),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = server.reload();
            }
        }
    }
    tracing::info!("draining: no new connections; waiting for requests in flight");
    server.shutdown();
    if server.drained().await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timeout passed with requests still open; exiting");
    }
    0
}
