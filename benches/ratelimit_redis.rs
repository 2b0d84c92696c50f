//! Latency of a rate-limit decision kept in Redis, on loopback, against a
//! plain `PING` round trip on the same kind of connection as the baseline.
//! Starts its own redis-server (`.ci/run` installs it). Prints p50, p99 and
//! p99.9 for one client at a time and for 64 concurrent clients.
//!
//! `cargo bench --bench ratelimit_redis`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::config::RedisConfig;
use palisade::ratelimit::bucket::Rate;
use palisade::ratelimit::redis::RedisStore;

const ROUNDS: usize = 20_000;
const CONCURRENT: usize = 64;

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16_379);
    let mut server = match Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("redis-server not available ({e}); nothing measured");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(measure(port));
    let _ = server.kill();
    let _ = server.wait();
}

async fn measure(port: u16) {
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{e}"));
    let ping_conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let store = Arc::new(
        RedisStore::new(&RedisConfig {
            url,
            timeout: Duration::from_secs(1),
            prefix: "bench:".into(),
        })
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let rate =
        Rate::new(1_000_000, Duration::from_secs(1), 1_000).unwrap_or_else(|| unreachable!());

    let ping = |conn: redis::aio::MultiplexedConnection| async move {
        let mut conn = conn;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("ping: {e}"));
    };
    let take = |store: Arc<RedisStore>, i: usize| async move {
        let key = format!("limit:198.51.100.{}", i % 256);
        store
            .take(key.as_bytes(), &rate)
            .await
            .unwrap_or_else(|e| panic!("take: {e}"));
    };

    // Warm up both paths (connection, script load).
    for i in 0..1_000 {
        ping(ping_conn.clone()).await;
        take(Arc::clone(&store), i).await;
    }

    let mut ping_one = Vec::with_capacity(ROUNDS);
    let mut take_one = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let t = Instant::now();
        ping(ping_conn.clone()).await;
        ping_one.push(t.elapsed());
        let t = Instant::now();
        take(Arc::clone(&store), i).await;
        take_one.push(t.elapsed());
    }
    report("one client: PING", &mut ping_one);
    report("one client: limit decision", &mut take_one);

    let mut ping_many = concurrently(|_| ping(ping_conn.clone())).await;
    let mut take_many = concurrently(|i| take(Arc::clone(&store), i)).await;
    report("64 clients: PING", &mut ping_many);
    report("64 clients: limit decision", &mut take_many);

    let p99 = |v: &[Duration]| percentile(v, 0.99).as_secs_f64();
    println!(
        "decision p99 / PING p99: one client {:.2}x, 64 clients {:.2}x",
        p99(&take_one) / p99(&ping_one),
        p99(&take_many) / p99(&ping_many)
    );
}

/// Runs `CONCURRENT` tasks, each doing `ROUNDS / CONCURRENT` calls in a
/// row; returns every call's latency.
async fn concurrently<F, Fut>(call: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let per_task = ROUNDS / CONCURRENT;
    let mut tasks = Vec::new();
    for t in 0..CONCURRENT {
        let calls: Vec<Fut> = (0..per_task).map(|i| call(t * per_task + i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(calls.len());
            for c in calls {
                let start = Instant::now();
                c.await;
                times.push(start.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::with_capacity(ROUNDS);
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort_unstable();
    println!(
        "{what:32} p50 {:>7.1} µs   p99 {:>7.1} µs   p99.9 {:>7.1} µs   ({} calls)",
        percentile(times, 0.50).as_secs_f64() * 1e6,
        percentile(times, 0.99).as_secs_f64() * 1e6,
        percentile(times, 0.999).as_secs_f64() * 1e6,
        times.len()
    );
}
