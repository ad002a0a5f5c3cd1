//! The documents shipped with the binary agree with it: the man page is
//! warning-free for groff and describes the stats port as `src/stats.rs`
//! serves it.

// Only the path helpers are needed here.
#[allow(unused_imports)]
mod common;

use common::*;
use std::process::{Command, Stdio};

fn man_page() -> String {
    read(&manifest_dir().join("man/nutcracker.8"))
}

/// The text of the man page section `name`, up to the next `.SH`.
fn man_section(page: &str, name: &str) -> String {
    let head = format!(".SH {name}\n");
    let start = page
        .find(&head)
        .unwrap_or_else(|| panic!("no section {name}"));
    let body = &page[start + head.len()..];
    body[..body.find("\n.SH ").unwrap_or(body.len())].to_string()
}

/// `groff -ww -man -z` prints every warning it has and no output; skipped,
/// with a message, where groff is not installed.
#[test]
fn man_page_is_warning_free() {
    let out = Command::new("groff")
        .args(["-ww", "-man", "-z"])
        .arg(manifest_dir().join("man/nutcracker.8"))
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => {
            assert!(out.status.success(), "groff: {out:?}");
            assert!(
                out.stderr.is_empty(),
                "groff warnings:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED man_page_is_warning_free: groff is not installed");
        }
        Err(e) => panic!("running groff: {e}"),
    }
}

#[test]
fn man_page_names_the_crate_version() {
    let page = man_page();
    let th = page.lines().next().unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    assert!(th.starts_with(".TH NUTCRACKER 8 "), "{th}");
    assert!(th.contains(&format!("\"nutcracker {version}\"")), "{th}");
    let stats = man_section(&page, "STATISTICS");
    assert!(
        stats.contains(&format!("\"version\":\"{version}\"")),
        "{stats}"
    );
}

/// What the stats port does (src/stats.rs): raw JSON for anything that is
/// not HTTP, HTTP with `/`, `/stats`, `/metrics` and 404, the mbuf figures,
/// and a lag of one interval (the engine publishes once per `-i`).
#[test]
fn man_page_describes_the_stats_port_as_served() {
    let page = man_page();
    let stats = man_section(&page, "STATISTICS");
    for needle in [
        "echo stats | nc",
        "HTTP/1.1",
        ".B GET /metrics",
        ".B GET /stats",
        "404",
        "405",
        "_total",
        "mbuf_chunk_size",
        "mbuf_allocated",
        "mbuf_free",
        "mbuf_bytes",
        "up to one interval",
    ] {
        assert!(
            stats.contains(needle),
            "STATISTICS lacks {needle:?}:\n{stats}"
        );
    }
    for stale in ["nothing is read", "two intervals"] {
        assert!(!stats.contains(stale), "STATISTICS still says {stale:?}");
    }
    let signals = man_section(&page, "SIGNALS");
    assert!(signals.contains("SIGSEGV"), "{signals}");
}
