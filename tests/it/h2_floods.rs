//! HTTP/2 abuse from a raw frame writer: rapid reset (CVE-2023-44487),
//! CONTINUATION flood, HPACK bomb, PING flood, flow-control window overflow
//! and empty DATA frames. Each abusive connection must be ended (or its
//! requests refused) without the backend seeing the flood, and a normal
//! HTTP/2 client alongside must still be served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal field without indexing, new name (RFC 7541 §6.2.2);
/// names and values under 127 bytes.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// A GET for `/` on site.test: the static table's :method GET (2),
/// :scheme http (6), :path / (4), then :authority as a literal.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84];
    block.extend(literal(":authority", "site.test"));
    block
}

/// Opens a raw HTTP/2 connection: preface and empty SETTINGS sent.
async fn raw_h2(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    s
}

/// Reads frames until `stop(kind, stream)` holds for one (true), or the
/// server closes (`closed`), or `wait` passes (false).
async fn read_frames_until(
    s: &mut TcpStream,
    wait: Duration,
    closed: bool,
    stop: impl Fn(u8, u32) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            if stop(buf[3], stream) {
                return true;
            }
            buf.drain(..9 + len);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return closed,
            Err(_) => return false,
        }
    }
}

/// Whether the server closed the connection or sent GOAWAY within `wait`.
async fn ended_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    read_frames_until(s, wait, true, |kind, _| kind == GOAWAY).await
}

/// Whether a response (HEADERS on `stream`) arrived within `wait`.
async fn answered(s: &mut TcpStream, stream: u32, wait: Duration) -> bool {
    read_frames_until(s, wait, false, |kind, id| kind == HEADERS && id == stream).await
}

/// `block` sent as a whole request on stream 1 of `s` reaches the origin
/// (its first request) and is answered: the frames are well formed.
async fn request_is_answered(s: &mut TcpStream, block: &[u8], origin: &Origin) {
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        .await
        .unwrap();
    assert!(
        answered(s, 1, Duration::from_secs(2)).await,
        "raw request unanswered"
    );
    assert_eq!(origin.hits(), 1);
}

/// A normal HTTP/2 client gets its answer (within two seconds).
async fn normal_client_is_served(addr: std::net::SocketAddr) {
    let mut sender = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let req = empty_get("http://site.test/");
    let resp = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req))
        .await
        .expect("the normal client waited over 2 s")
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// The abusive connection shows in `palisade_h2_connection_errors_total`.
async fn assert_counted(proxy: &Proxy) {
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = get(proxy.admin, "admin", "/metrics", &[]).await.body;
        if metrics.contains("palisade_h2_connection_errors_total 1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the protocol error was not counted: {metrics}");
}

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"app\"\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        origin.addr
    ))
    .await;
    (origin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_is_cut_off_and_never_reaches_the_backend() {
    let (origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let block = get_block();
    // The frames are well formed: one request, not reset, is answered.
    request_is_answered(&mut s, &block, &origin).await;
    let mut burst = Vec::new();
    for i in 1..10_001u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    // The server may stop reading (and close) part-way: a write error is
    // the defence working.
    let _ = s.write_all(&burst).await;
    assert!(
        ended_by_server(&mut s, Duration::from_secs(5)).await,
        "10,000 opened-and-reset streams did not end the connection"
    );
    normal_client_is_served(proxy.addr).await;
    let hits = origin.hits() - 2;
    eprintln!("rapid reset: the backend saw {hits} of 10,000 reset requests");
    assert!(
        hits < 1_000,
        "the backend saw {hits} of 10,000 reset requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_refused_without_unbounded_buffering() {
    let (origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let _ = s
        .write_all(&frame(HEADERS, END_STREAM, 1, &get_block()))
        .await;
    // Far past max_header_bytes (32 KiB): 20,000 CONTINUATION frames of
    // junk fields, never an END_HEADERS.
    let junk = literal("x-junk", &"a".repeat(100));
    let mut flood = Vec::new();
    for _ in 0..20_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &junk));
    }
    let _ = s.write_all(&flood).await;
    assert!(
        ended_by_server(&mut s, Duration::from_secs(5)).await,
        "a CONTINUATION flood did not end the connection"
    );
    normal_client_is_served(proxy.addr).await;
    assert_counted(&proxy).await;
    assert_eq!(origin.hits(), 1, "only the normal client's request arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused() {
    let (origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    // Indexing works as written: a field added to the dynamic table and
    // referenced once is an ordinary request.
    let mut fine = get_block();
    fine.extend([0x40, 6]);
    fine.extend_from_slice(b"x-note");
    fine.extend([2, b'o', b'k']);
    fine.push(0x80 | 62);
    request_is_answered(&mut s, &fine, &origin).await;
    let mut s = raw_h2(proxy.addr).await;
    // One 4,000-byte field into the dynamic table (literal with incremental
    // indexing), then 1,000 one-byte references to it: 4 MB decoded from
    // 5 KB sent.
    let mut block = get_block();
    block.push(0x40);
    block.push(6);
    block.extend_from_slice(b"x-bomb");
    let value = "b".repeat(4000);
    // Value length 4000 as an HPACK integer with a 7-bit prefix.
    block.push(0x7f);
    let mut rest = 4000 - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend_from_slice(value.as_bytes());
    // Dynamic table index 62 is the newest entry.
    block.extend(std::iter::repeat_n(0x80 | 62, 1000));
    let _ = s
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await;
    // Refused: either the connection ends or the stream is answered with a
    // reset or a 431; the backend never sees it.
    let _ = ended_by_server(&mut s, Duration::from_secs(1)).await;
    normal_client_is_served(proxy.addr).await;
    assert_eq!(
        origin.hits(),
        2,
        "the bombed request never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_leave_other_clients_served() {
    let (_origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let mut flood = Vec::new();
    for i in 0..50_000u64 {
        flood.extend(frame(PING, 0, 0, &i.to_be_bytes()));
        flood.extend(frame(SETTINGS, 0, 0, &[]));
    }
    // We never read the PING ACKs: a server that queued them without bound
    // would grow here.
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&flood)).await;
    normal_client_is_served(proxy.addr).await;
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_overflow_is_a_connection_error() {
    let (_origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    // Two increments of 2^31-1 overflow the connection window (RFC 9113
    // §6.9.1): FLOW_CONTROL_ERROR and GOAWAY.
    let max = 0x7fff_ffffu32.to_be_bytes();
    let _ = s.write_all(&frame(WINDOW_UPDATE, 0, 0, &max)).await;
    let _ = s.write_all(&frame(WINDOW_UPDATE, 0, 0, &max)).await;
    assert!(
        ended_by_server(&mut s, Duration::from_secs(3)).await,
        "an overflowing window did not end the connection"
    );
    normal_client_is_served(proxy.addr).await;
    assert_counted(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_frame_flood_leaves_other_clients_served() {
    let (_origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let mut block = vec![0x83, 0x86, 0x84]; // :method POST
    block.extend(literal(":authority", "site.test"));
    let _ = s.write_all(&frame(HEADERS, END_HEADERS, 1, &block)).await;
    let mut flood = Vec::new();
    for _ in 0..100_000 {
        flood.extend(frame(DATA, 0, 1, &[]));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&flood)).await;
    normal_client_is_served(proxy.addr).await;
}

/// Streams past `h2_max_concurrent_streams` (100) are refused with
/// RST_STREAM(REFUSED_STREAM); those within it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_concurrency_limit_are_refused() {
    let (_origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let mut block = vec![0x83, 0x86, 0x84]; // :method POST, body never sent
    block.extend(literal(":authority", "site.test"));
    let mut burst = Vec::new();
    for i in 0..150u32 {
        burst.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    s.write_all(&burst).await.unwrap();
    let refused = std::sync::atomic::AtomicUsize::new(0);
    read_frames_until(&mut s, Duration::from_secs(2), false, |kind, _| {
        if kind == RST_STREAM {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        refused.load(std::sync::atomic::Ordering::Relaxed) >= 50
    })
    .await;
    let refused = refused.into_inner();
    assert!(
        refused >= 50,
        "only {refused} of the 50 streams over the limit were refused"
    );
    normal_client_is_served(proxy.addr).await;
}

/// A header list over `max_header_bytes` (32 KiB) never reaches the
/// backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_list_is_refused() {
    let (origin, proxy) = setup().await;
    let mut s = raw_h2(proxy.addr).await;
    let mut block = get_block();
    for i in 0..400 {
        block.extend(literal(&format!("x-big-{i}"), &"v".repeat(100)));
    }
    // 44 KB of fields, sent as one HEADERS frame and CONTINUATIONs under
    // the default 16 KiB frame size.
    let mut chunks = block.chunks(16_000).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { END_HEADERS } else { 0 } | if first { END_STREAM } else { 0 };
        let kind = if first { HEADERS } else { CONTINUATION };
        let _ = s.write_all(&frame(kind, flags, 1, chunk)).await;
        first = false;
    }
    let _ = ended_by_server(&mut s, Duration::from_secs(1)).await;
    normal_client_is_served(proxy.addr).await;
    assert_eq!(
        origin.hits(),
        1,
        "the oversized request never reached the backend"
    );
}
