//! The documents shipped with the binary agree with it: the man page is
//! warning-free for groff and describes the stats port as `src/stats.rs`
//! serves it; docs/compatibility.md exists, the README links it, and every
//! `§N` that cites it names one of its sections.

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

fn compatibility_doc() -> String {
    let path = manifest_dir().join("docs/compatibility.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The section numbers the doc defines: `## N.` and `### N.M` headings.
fn doc_sections(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("### ").or_else(|| l.strip_prefix("## "))?;
            let num = rest.split(' ').next()?.trim_end_matches('.');
            num.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| num.to_string())
        })
        .collect()
}

/// Every `docs/compatibility.md §N` cited in the source, the tests and the
/// README names a section the doc has, and the README links to the doc.
#[test]
fn compatibility_doc_sections_resolve() {
    let doc = compatibility_doc();
    let sections = doc_sections(&doc);
    for want in ["1", "3.3", "10.3", "10.5", "13", "13.6"] {
        assert!(
            sections.iter().any(|s| s == want),
            "no §{want}: {sections:?}"
        );
    }
    // Its own cross references too.
    let mut texts = vec![("docs/compatibility.md".to_string(), doc.clone())];
    texts.push((
        "README.md".to_string(),
        read(&manifest_dir().join("README.md")),
    ));
    for dir in ["src", "tests", "benches", "fuzz"] {
        collect_rs(&manifest_dir().join(dir), &mut texts);
    }
    let readme = &texts[1].1;
    assert!(
        readme.contains("](docs/compatibility.md)"),
        "README does not link docs/compatibility.md"
    );
    let mut cited = 0;
    for (name, text) in &texts {
        for (at, _) in text.match_indices('§') {
            let num: String = text[at + '§'.len_utf8()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let num = num.trim_end_matches('.');
            if num.is_empty() {
                // Not a citation: this file's own messages print `§{..}`.
                continue;
            }
            assert!(
                sections.iter().any(|s| s == num),
                "{name} cites §{num}, which docs/compatibility.md does not have"
            );
            cited += 1;
        }
    }
    assert!(cited > 0, "nothing cites the doc");
}

fn collect_rs(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("corpus") {
                collect_rs(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push((path.display().to_string(), read(&path)));
        }
    }
}

/// The doc stands alone: it does not send the reader to a file outside
/// the repository.
#[test]
fn compatibility_doc_stands_alone() {
    let doc = compatibility_doc();
    assert!(!doc.contains("SPEC"), "docs/compatibility.md cites SPEC");
    assert!(doc.contains("## 13. Differences from 0.5.0"));
}
