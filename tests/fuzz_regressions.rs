//! Replays fuzzing inputs through the fuzz targets' own invariant checks
//! (`fuzz/check.rs`, included here as a module) in plain `cargo test`, so a crash found once
//! stays fixed without libFuzzer installed.
//!
//! For each target, every file in `tests/fuzz_regressions/<target>/` (the
//! inputs that once broke a check, minimised) and in
//! `fuzz/corpus/<target>/` (the committed seeds) is run. Inputs listed in
//! [`KNOWN_OPEN`] reproduce a bug in a parser that is not fixed yet: they
//! must still fail, so that fixing the bug forces removing the entry.

#[path = "../fuzz/check.rs"]
#[allow(dead_code)]
mod fuzzcheck;

use nutcracker::proto::redis::request::{Progress, ReqParser};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `(target, file name)` of regression inputs that still fail.
const KNOWN_OPEN: &[(&str, &str)] = &[];

/// Regression inputs the redis request parser must refuse, with the error
/// it must give: `redis_request` lengths written with leading zeros
/// (`*01`, `$04`), which redis-server refuses, so the proxy refuses them
/// before they reach a shared server connection. The fuzz invariants hold
/// whether such a request is accepted or refused (it re-serialises to
/// itself, digits as sent), so replaying these files alone would not notice
/// the refusal being dropped; [`refused_inputs_stay_refused`] does.
const REFUSED: &[(&str, &str)] = &[
    ("leading-zero-multibulk-len", "BadMultibulkLen"),
    ("leading-zero-bulk-len", "BadBulkLen"),
    ("leading-zero-after-a-good-request", "BadBulkLen"),
    ("leading-zero-empty-argument", "BadBulkLen"),
];

/// Every file of `dir`, sorted; none if the directory does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// A panic payload as text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regressions = inputs(&root.join("tests/fuzz_regressions").join(target));
    let seeds = inputs(&root.join("fuzz/corpus").join(target));
    assert!(!seeds.is_empty(), "no seed corpus for {target}");
    let mut problems = Vec::new();
    for path in regressions.iter().chain(&seeds) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let open = regressions.contains(path) && KNOWN_OPEN.contains(&(target, name));
        match (catch_unwind(AssertUnwindSafe(|| check(&data))), open) {
            (Ok(()), false) | (Err(_), true) => {}
            (Ok(()), true) => problems.push(format!(
                "{}: passes now; remove it from KNOWN_OPEN",
                path.display()
            )),
            (Err(payload), false) => {
                problems.push(format!("{}: {}", path.display(), panic_text(&*payload)))
            }
        }
    }
    assert!(problems.is_empty(), "{target}:\n{}", problems.join("\n"));
}

#[test]
fn redis_request() {
    replay("redis_request", fuzzcheck::redis_request);
}

#[test]
fn redis_response() {
    replay("redis_response", fuzzcheck::redis_response);
}

#[test]
fn memcache_request() {
    replay("memcache_request", fuzzcheck::memcache_request);
}

#[test]
fn memcache_response() {
    replay("memcache_response", fuzzcheck::memcache_response);
}

#[test]
fn config() {
    replay("config", fuzzcheck::config);
}

#[test]
fn known_open_entries_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for (target, name) in KNOWN_OPEN {
        assert!(
            root.join(target).join(name).is_file(),
            "KNOWN_OPEN lists missing {target}/{name}"
        );
    }
}

/// Every [`REFUSED`] input, fed whole, parses to the expected error after
/// any good requests before it, and nothing after the error is parsed.
#[test]
fn refused_inputs_stay_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/redis_request");
    for (name, want) in REFUSED {
        let path = dir.join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut p = ReqParser::new();
        let mut pos = 0;
        let outcome = loop {
            assert!(pos < data.len(), "{name}: every request accepted");
            let (n, progress) = p.feed(&data[pos..], pos as u64);
            match progress {
                Progress::Complete(_) => {
                    pos += n;
                    p.reset();
                }
                other => break other,
            }
        };
        assert_eq!(format!("{outcome:?}"), format!("Error({want})"), "{name}");
    }
}

/// Random concatenations of memcached request fragments (tokens, line ends,
/// whole requests) through the fuzz target's checks: a cheap sweep of the
/// combinations a fuzzer finds first, run in every `cargo test`.
#[test]
fn memcache_request_fragment_mixes() {
    let frags: &[&[u8]] = &[
        &b"get"[..],
        b"gets",
        b"gat",
        b"set",
        b"cas",
        b"incr",
        b"touch",
        b"delete",
        b"version",
        b"quit",
        b"stats",
        b"flush_all",
        b"verbosity",
        b"GET",
        b" ",
        b"  ",
        b"\r\n",
        b"\r",
        b"\n",
        b"\0",
        b"k",
        b"key",
        b"0",
        b"1",
        b"3",
        b"-",
        b"+",
        b"-1",
        b"99999999999",
        b"noreply",
        b"x",
        b"\xff",
        b"get k\r\n",
        b"set k 0 0 1\r\nx\r\n",
        b"delete k noreply\r\n",
        b"incr k 5\r\n",
        b"cas k 1 2 0 3\r\n\r\n",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..next() % 16 {
            input.extend_from_slice(frags[(next() % frags.len() as u64) as usize]);
        }
        fuzzcheck::memcache_request(&input);
    }
}
