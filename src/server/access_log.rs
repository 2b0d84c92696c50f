//! The JSON access log: one object per request, written by a background
//! thread so a slow disk never stalls a request. When the writer falls
//! behind by more than `QUEUE` lines, new lines are dropped and counted
//! (`palisade_access_log_dropped_total`) instead of growing memory.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::config::AccessLogTarget;
use crate::pipeline::{RequestCtx, Stage, Summary};
use crate::server::respond::ProxyError;

const QUEUE: usize = 64 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    dropped: Counter,
    route_labels: std::sync::Arc<[String]>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    client_ip: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    route: Option<&'a str>,
    upstream: Option<String>,
    cache: Option<&'a str>,
    waf: Option<&'a str>,
    /// Why the IP filter denied the request (`cidr`).
    ipfilter: Option<&'a str>,
    /// The limit that refused the request with 429.
    ratelimit: Option<&'a str>,
    /// Why Palisade answered with its own error page
    /// (`ProxyError::kind`: `uri_too_long`, `bad_request`, ...).
    error: Option<&'static str>,
    /// For some errors, the rule the request broke (`two Host fields`).
    error_detail: Option<&'static str>,
    aborted: bool,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(
        target: &AccessLogTarget,
        dropped: Counter,
        route_labels: Vec<String>,
    ) -> io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    tx: None,
                    dropped,
                    route_labels: route_labels.into(),
                });
            }
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::Stderr => Box::new(io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, sink))?;
        Ok(AccessLog {
            tx: Some(tx),
            dropped,
            route_labels: route_labels.into(),
        })
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        // Drain what is queued, then flush: lines reach the file as soon as
        // the log goes quiet, and a busy log still writes in large blocks.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

impl Stage for AccessLog {
    fn name(&self) -> &'static str {
        "access_log"
    }

    fn on_log(&self, ctx: &RequestCtx, summary: &Summary) {
        let Some(tx) = &self.tx else { return };
        let line = Line {
            time: rfc3339_now(),
            request_id: ctx.id.to_str().unwrap_or(""),
            client_ip: ctx.client_ip.to_string(),
            method: ctx.method.as_str(),
            host: &ctx.host,
            path: &ctx.path,
            protocol: match ctx.http_version {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: summary.status,
            bytes_in: ctx.bytes_in,
            bytes_out: summary.bytes_out,
            duration_ms: (summary.duration.as_secs_f64() * 1e6).round() / 1e3,
            route: ctx
                .route
                .and_then(|r| self.route_labels.get(r))
                .map(String::as_str),
            upstream: ctx.upstream_server.map(|a| a.to_string()),
            cache: ctx.cache_status,
            waf: ctx.waf_verdict,
            ipfilter: ctx.ipfilter_denied,
            ratelimit: ctx.ratelimit_refused.as_deref(),
            error: ctx.error.as_ref().map(ProxyError::kind),
            error_detail: ctx.error.as_ref().and_then(ProxyError::detail),
            aborted: summary.aborted,
        };
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return;
        };
        bytes.push(b'\n');
        match tx.try_send(bytes) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// Current UTC time as `2026-11-27T13:45:01.123Z`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
