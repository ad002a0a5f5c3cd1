//! Key placement of the built binary against the golden data of nutcracker
//! 0.5.0 (tests/golden/, see its README.md). tests/golden.rs checks the
//! same files through the library's selection code; this replays them end
//! to end, the way they were recorded: every key is written through a
//! running `nutcracker`, then looked up on each backend.
//!
//! Only the `*-named` files are replayed: their servers carry names
//! (`host:port:weight name`) and nutcracker places keys by the name, so the
//! recording's backend ports (31001-31015) can be replaced by free ones
//! without changing where a key belongs. That covers all 12 hashes under
//! ketama and modula for redis (24 files) and fnv1a_64, md5, murmur and
//! crc32 under both for memcached (8 files), with the files' own weights
//! (1, 1, 2, 3, 1) and `hash_tag: "$$"`.
//!
//! Each file's keys get a value of their own (the file's name), so a key
//! left on a backend by an earlier file is never mistaken for this file's,
//! and the backends need no flushing between files.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use support::*;

/// One golden placement file: its config and where each key went.
struct Golden {
    name: String,
    /// The header's YAML, verbatim.
    yaml: String,
    /// `(key, 0-based position in the YAML servers: list)`.
    rows: Vec<(Vec<u8>, usize)>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn load(name: &str) -> Golden {
    let path = golden_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml = text
        .lines()
        .filter_map(|l| l.strip_prefix("#| ").or((l == "#|").then_some("")))
        .map(|l| format!("{l}\n"))
        .collect();
    let rows = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "{name}: bad row {l:?}");
            let index = f[1].parse().unwrap_or_else(|_| panic!("{name}: row {l:?}"));
            // The hex column is authoritative (the first is escaped text).
            (unhex(f[2]), index)
        })
        .collect();
    Golden {
        name: name.to_string(),
        yaml,
        rows,
    }
}

/// The golden YAML with the listen address on a free port (`@PORT0@`) and
/// server `i` of the `servers:` list on `ports[i]`, weight and name kept.
fn rewrite(g: &Golden, ports: &[u16]) -> String {
    let mut out = String::new();
    let mut server = 0;
    for line in g.yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("listen:") {
            out.push_str("  listen: 127.0.0.1:@PORT0@\n");
        } else if let Some(spec) = trimmed.strip_prefix("- ") {
            // host:port:weight name -> 127.0.0.1:<port>:weight name
            let (addr, name) = spec.split_once(' ').expect("named server line");
            let weight = addr.rsplit(':').next().expect("weight");
            let port = ports[server];
            out.push_str(&format!("   - 127.0.0.1:{port}:{weight} {name}\n"));
            server += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(server, ports.len(), "{}: {server} servers", g.name);
    out
}

/// Files `placement-<proto>-<hash>-<dist>-named.tsv` for `dist`.
fn named_files(proto: &str, dist: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(golden_dir())
        .expect("tests/golden is readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("placement-{proto}-"))
                && n.ends_with(&format!("-{dist}-named.tsv"))
        })
        .collect();
    names.sort();
    names
}

/// Where each key went, per the backends: for every golden row, the YAML
/// positions of the backends holding this file's value under that key.
fn check(g: &Golden, found: &[Vec<usize>]) {
    let mut wrong = Vec::new();
    for ((key, want), got) in g.rows.iter().zip(found) {
        if got != &[*want] {
            wrong.push(format!("{}: expected server {want}, on {got:?}", show(key)));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} keys misplaced:\n{}",
        g.name,
        wrong.len(),
        g.rows.len(),
        wrong.join("\n")
    );
}

fn replay_redis(dist: &str) {
    let files = named_files("redis", dist);
    assert_eq!(files.len(), 12, "every hash under {dist}: {files:?}");
    let backends = Redis::start_many(5);
    let ports: Vec<u16> = backends.iter().map(Redis::port).collect();
    for name in &files {
        let g = load(name);
        let tag = name.as_bytes();
        let proxy = Proxy::start(&rewrite(&g, &ports), &[]);
        let mut c = proxy.raw();
        // One pipelined write of every SET, then every reply.
        let mut req = Vec::new();
        for (key, _) in &g.rows {
            req.extend(cmd(&[b"SET".as_slice(), key, tag]));
        }
        c.send(&req);
        for (key, _) in &g.rows {
            assert_eq!(c.recv_reply(), Resp::ok(), "{name}: SET {}", show(key));
        }
        let mut found = vec![Vec::new(); g.rows.len()];
        for (i, b) in backends.iter().enumerate() {
            let mut d = b.raw();
            let mut req = Vec::new();
            for (key, _) in &g.rows {
                req.extend(cmd(&[b"GET".as_slice(), key]));
            }
            d.send(&req);
            for f in found.iter_mut() {
                if d.recv_reply() == Resp::bulk(tag) {
                    f.push(i);
                }
            }
        }
        check(&g, &found);
    }
}

/// Reads the reply to one `get <key>` (`VALUE ... END` or `END`).
fn mc_recv_get(conn: &mut RawConn) -> Option<Vec<u8>> {
    let line = conn.recv_line();
    if line == b"END\r\n" {
        return None;
    }
    let text = String::from_utf8_lossy(&line).into_owned();
    assert!(text.starts_with("VALUE "), "bad get reply {text:?}");
    let len: usize = text
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad get reply {text:?}"));
    let data = conn.recv_exact(len + 2);
    conn.expect(b"END\r\n");
    Some(data[..len].to_vec())
}

fn replay_memcache(dist: &str) {
    let files = named_files("memcache", dist);
    assert_eq!(
        files.len(),
        4,
        "fnv1a_64, md5, murmur, crc32 under {dist}: {files:?}"
    );
    let backends: Vec<Memcached> = (0..5).map(|_| Memcached::start()).collect();
    let ports: Vec<u16> = backends.iter().map(Memcached::port).collect();
    for name in &files {
        let g = load(name);
        let tag = name.as_bytes();
        let proxy = Proxy::start(&rewrite(&g, &ports), &[]);
        let mut c = proxy.raw();
        let mut req = Vec::new();
        for (key, _) in &g.rows {
            req.extend_from_slice(b"set ");
            req.extend_from_slice(key);
            req.extend_from_slice(format!(" 0 0 {}\r\n", tag.len()).as_bytes());
            req.extend_from_slice(tag);
            req.extend_from_slice(b"\r\n");
        }
        c.send(&req);
        for (key, _) in &g.rows {
            assert_eq!(c.recv_line(), b"STORED\r\n", "{name}: set {}", show(key));
        }
        let mut found = vec![Vec::new(); g.rows.len()];
        for (i, b) in backends.iter().enumerate() {
            let mut d = b.raw();
            let mut req = Vec::new();
            for (key, _) in &g.rows {
                req.extend_from_slice(b"get ");
                req.extend_from_slice(key);
                req.extend_from_slice(b"\r\n");
            }
            d.send(&req);
            for f in found.iter_mut() {
                if mc_recv_get(&mut d).as_deref() == Some(tag) {
                    f.push(i);
                }
            }
        }
        check(&g, &found);
    }
}

#[test]
fn redis_ketama_named_through_the_binary() {
    replay_redis("ketama");
}

#[test]
fn redis_modula_named_through_the_binary() {
    replay_redis("modula");
}

#[test]
fn memcache_ketama_named_through_the_binary() {
    replay_memcache("ketama");
}

#[test]
fn memcache_modula_named_through_the_binary() {
    replay_memcache("modula");
}
