//! What a first-time user runs, checked: the README's and the demo's
//! memcached one-liners return (issue 11 point 6), and Cargo.toml's
//! `rust-version` is the toolchain the locked dependencies need, which
//! scripts/install-deps.sh installs (point 5; `.ci/run` on a machine
//! without Rust is the end-to-end check of that, see README).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn text(rel: &str) -> String {
    let p = manifest(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `printf ... | nc 127.0.0.1 22122` never returned: OpenBSD netcat keeps
/// reading after its input ends, and the proxy, rightly, keeps the
/// connection open. Every such line in the README and the demo must ask nc
/// to close its side (`-N`), and nothing else.
#[test]
fn readme_and_demo_pipe_into_nc_with_dash_n() {
    for file in ["README.md", "scripts/demo.sh"] {
        let body = text(file);
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.contains("| nc ") && l.contains(" 22122"))
            .collect();
        assert!(!lines.is_empty(), "{file}: no memcached nc example");
        for l in lines {
            assert!(l.contains("| nc -N 127.0.0.1 22122"), "{file}: {l}");
        }
    }
}

/// What `nc -N` does, done on a socket: send the request, shut down the
/// write side, read until the proxy closes. The reply must be complete and
/// the proxy must close once it is sent (so nc returns), for a storage
/// command and for a get.
#[test]
fn memcached_request_then_half_close_gets_reply_and_eof() {
    let mc = Memcached::start();
    let mut proxy = Proxy::start_pools(&[PoolConf::memcache(&[&mc])], &[]);
    for (req, want) in [
        (&b"set k 0 0 1\r\nv\r\n"[..], &b"STORED\r\n"[..]),
        (b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n"),
    ] {
        let mut c = proxy.raw();
        c.send(req);
        c.shutdown_write();
        // recv_until(Eof) fails after READ_TIMEOUT if the proxy never closes.
        let got = c.recv_until(Until::Eof);
        assert_eq!(show(&got), show(want), "{}", show(req));
    }
    proxy.assert_alive();
}

/// The README's command itself, where an OpenBSD netcat is installed:
/// it must print the reply and exit (under `timeout`, so a hang fails
/// rather than blocks the suite).
#[test]
fn readme_nc_command_returns() {
    let has_nc_n = Command::new("sh")
        .args(["-c", "nc -h 2>&1 | grep -qE '^[[:space:]]*-N'"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_nc_n {
        eprintln!("skipped: no nc with -N (OpenBSD netcat) installed; the socket-level test covers the proxy side");
        return;
    }
    let mc = Memcached::start();
    let mut proxy = Proxy::start_pools(&[PoolConf::memcache(&[&mc])], &[]);
    let port = proxy.port();
    let out = Command::new("timeout")
        .args([
            "10",
            "sh",
            "-c",
            &format!("printf 'set k 0 0 1\\r\\nv\\r\\n' | nc -N 127.0.0.1 {port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert_eq!(out.status.code(), Some(0), "nc -N did not return: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "STORED\r\n");
    proxy.assert_alive();
}

/// `rust-version = "X.Y"` of a Cargo.toml, if it declares one.
fn rust_version(toml: &str) -> Option<Vec<u32>> {
    toml.lines()
        .find_map(|l| l.strip_prefix("rust-version"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(|v| v.split('.').map(|n| n.parse().expect("number")).collect())
}

/// Cargo.toml declares exactly the newest `rust-version` among the locked
/// packages whose sources cargo has unpacked for this build (every one the
/// tests compile): lower and a too old toolchain would fail on a
/// dependency instead of a clear message; higher and it would refuse
/// toolchains that work.
#[test]
fn rust_version_is_what_the_locked_dependencies_need() {
    let ours = rust_version(&text("Cargo.toml")).expect("Cargo.toml declares rust-version");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let Ok(indexes) = std::fs::read_dir(home.join("registry/src")) else {
        eprintln!(
            "skipped: no {}/registry/src (vendored build?)",
            home.display()
        );
        return;
    };
    let roots: Vec<PathBuf> = indexes.filter_map(Result::ok).map(|e| e.path()).collect();
    let lock = text("Cargo.lock");
    let mut newest: Option<(Vec<u32>, String)> = None;
    let mut seen = 0;
    for block in lock.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        if name == "nutcracker" {
            continue;
        }
        let dir = format!("{name}-{version}");
        // Packages for other platforms (windows-sys, wasi) are never unpacked.
        let Some(toml) = roots
            .iter()
            .find_map(|r| std::fs::read_to_string(r.join(&dir).join("Cargo.toml")).ok())
        else {
            continue;
        };
        seen += 1;
        if let Some(v) = rust_version(&toml) {
            if newest.as_ref().is_none_or(|(n, _)| v > *n) {
                newest = Some((v, dir));
            }
        }
    }
    assert!(
        seen >= 20,
        "only {seen} locked packages found under {}",
        home.display()
    );
    let (need, who) = newest.expect("some dependency declares rust-version");
    assert_eq!(
        ours, need,
        "Cargo.toml rust-version {ours:?}, but {who} needs {need:?}"
    );
    // install-deps.sh reads the same line to decide whether to install.
    let script = text("scripts/install-deps.sh");
    assert!(
        script.contains("s/^rust-version *= *"),
        "install-deps.sh no longer reads rust-version from Cargo.toml"
    );
}
