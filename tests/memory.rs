//! Memory given back after a burst: clients pipeline many large MGETs to
//! real redis servers and hold off reading, so the proxy buffers tens of
//! MiB of replies; once they have read everything and the proxy is idle,
//! its RSS and its mbuf chunk figures must come back near the baseline
//! within a generous bound. A functional check that memory is returned at
//! all (free chunks beyond the reuse pool's bound are freed once unused
//! for a second, and the heap trimmed, see src/mbuf.rs), not a speed
//! target: the bench measures RSS 10 s after its heaviest workload.

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;
use support::*;

const MIB: u64 = 1024 * 1024;
/// Value size: 12 chunks of the default 16 KiB, so one MGET reply spans
/// about 120 chunks.
const VALUE: usize = 192 * 1024;
const KEYS: usize = 20;
const MGET_KEYS: usize = 10;
/// Clients and pipelined MGETs each: 8 x 6 x 10 x 192 KiB = 90 MiB of
/// replies, well beyond what the kernel's socket buffers take in.
const CLIENTS: usize = 8;
const MGETS: usize = 6;
/// The burst must have made the proxy grow at least this much, or the test
/// would prove nothing.
const MIN_GROWTH: u64 = 32 * MIB;
/// What the proxy may keep above its baseline once idle: its reuse pool
/// (4 MiB by default) plus allocator slack and the bookkeeping of the
/// messages of the burst. Before chunks were given back the proxy kept all
/// of the burst (80 MiB).
const RSS_SLACK: u64 = 12 * MIB;
/// Bound on coming back: unused chunks go within about two seconds and the
/// heap is trimmed right after; this leaves room for a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

fn key(i: usize) -> String {
    format!("mem:{i}")
}

/// The reuse pool bound the proxy runs with: it inherits this process's
/// environment (see man/nutcracker.8, ENVIRONMENT).
fn pool_bytes() -> u64 {
    std::env::var("NUTCRACKER_MBUF_POOL_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4 * MIB)
}

/// `mbuf_allocated`, `mbuf_free` and `mbuf_bytes` from the stats port.
fn mbufs(p: &Proxy) -> (i64, i64, i64) {
    let json = p.stats();
    let one = |name: &str| {
        stat_values(&json, name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {name} in stats: {json}"))
    };
    (one("mbuf_allocated"), one("mbuf_free"), one("mbuf_bytes"))
}

fn mget(first: usize) -> Vec<u8> {
    let mut args = vec!["MGET".to_string()];
    args.extend((0..MGET_KEYS).map(|k| key((first + k) % KEYS)));
    cmd(&args)
}

/// The exact reply to [`mget`]: every key holds the same value.
fn mget_reply(value: &[u8]) -> Vec<u8> {
    let mut r = format!("*{MGET_KEYS}\r\n").into_bytes();
    for _ in 0..MGET_KEYS {
        r.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    r
}

#[test]
fn memory_is_given_back_after_a_burst_of_large_replies() {
    let backends = Redis::start_many(2);
    let refs: Vec<&Redis> = backends.iter().collect();
    // Stats every 100 ms, so the mbuf figures are fresh.
    let p = Proxy::redis(&refs, &[], &["-i", "100"]);
    let value = vec![b'v'; VALUE];
    let mut c = p.raw();
    for i in 0..KEYS {
        let k = key(i);
        let args: [&[u8]; 3] = [b"SET", k.as_bytes(), &value];
        assert_eq!(c.call(&args), Resp::ok());
    }
    drop(c);
    // Baseline: warm (server connections open, keys written) and idle. The
    // writes above went through one chunk after another, so what they
    // freed is already back in the pool or trimmed away.
    std::thread::sleep(Duration::from_millis(1500));
    let base_rss = rss(p.pid());
    let (base_alloc, _, _) = mbufs(&p);

    let sent = Arc::new(Barrier::new(CLIENTS + 1));
    let read = Arc::new(Barrier::new(CLIENTS + 1));
    let expected = Arc::new(mget_reply(&value));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (sent, read, expected) = (sent.clone(), read.clone(), expected.clone());
            let mut conn = p.raw();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for m in 0..MGETS {
                    batch.extend(mget(n + m));
                }
                conn.send(&batch);
                sent.wait();
                // Not reading yet: the proxy holds the replies.
                read.wait();
                for m in 0..MGETS {
                    let got = conn.recv_exact(expected.len());
                    assert!(got == *expected, "client {n}: reply {m} differs");
                }
            })
        })
        .collect();
    sent.wait();
    let mut peak = base_rss;
    let grew = wait_until(WAIT, || {
        peak = peak.max(rss(p.pid()));
        peak >= base_rss + MIN_GROWTH
    });
    let (burst_alloc, _, burst_bytes) = mbufs(&p);
    read.wait();
    for c in clients {
        c.join().expect("client thread");
    }
    assert!(
        grew,
        "the burst did not load the proxy: RSS {:.1} MiB, baseline {:.1} MiB",
        peak as f64 / MIB as f64,
        base_rss as f64 / MIB as f64
    );

    // Back near the baseline: chunks beyond the pool bound freed, the heap
    // trimmed once the loop went idle.
    let chunk_data = 16384 - 48;
    let pool_chunks = i64::try_from(pool_bytes() / chunk_data).unwrap_or(i64::MAX);
    let mut now = (0, 0, 0, 0);
    let settled = wait_until(SETTLE, || {
        let (alloc, free, bytes) = mbufs(&p);
        now = (rss(p.pid()), alloc, free, bytes);
        now.0 <= base_rss + RSS_SLACK && alloc <= base_alloc + pool_chunks && free <= pool_chunks
    });
    assert!(
        settled,
        "not back near the baseline within {SETTLE:?}: RSS {:.1} MiB (baseline {:.1}, peak {:.1}), \
         mbuf_allocated {} mbuf_free {} mbuf_bytes {} (baseline allocated {base_alloc}, during the \
         burst {burst_alloc} / {burst_bytes} bytes, pool bound {pool_chunks} chunks)",
        now.0 as f64 / MIB as f64,
        base_rss as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        now.1,
        now.2,
        now.3,
    );
    eprintln!(
        "memory: baseline RSS {:.1} MiB, {base_alloc} chunks; burst: peak RSS {:.1} MiB, \
         {burst_alloc} chunks; settled: RSS {:.1} MiB, {} chunks ({} free)",
        base_rss as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        now.0 as f64 / MIB as f64,
        now.1,
        now.2
    );
    // And the proxy still serves: the pool refills from fresh memory.
    let mut c = p.raw();
    c.send(&mget(0));
    assert!(
        c.recv_exact(expected.len()) == *expected,
        "MGET after the burst"
    );
}
