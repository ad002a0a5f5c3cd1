//! Golden vectors recorded from the C nutcracker 0.5.0 (tests/golden/, see
//! its README.md): raw hash values, whole selection tables, and the server
//! every key lands on, for every hash, distribution and server-line shape.
//! Each pool is rebuilt from the YAML embedded in the file header, so the
//! config loader's server naming and sorting are tested along with the
//! hashing.

use nutcracker::hashkit::{select, Distribution, HashKind, Selector, ServerSpec};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(name: &str) -> String {
    let path = golden_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Golden file names starting with `prefix`, sorted.
fn family(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(golden_dir())
        .expect("tests/golden is readable")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(prefix) && n.ends_with(".tsv"))
        .collect();
    names.sort();
    names
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("{hex}: {e}")))
        .collect()
}

/// Data rows (not `#` comments) split at tabs.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect()
}

/// The YAML configuration embedded in the header (`#| ` lines).
fn header_yaml(text: &str) -> String {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("#| ")
                .or(if l == "#|" { Some("") } else { None })
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A pool as placement sees it; `servers` in nutcracker's sorted order.
struct Pool {
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    distribution: Distribution,
    servers: Vec<Server>,
}

struct Server {
    name: Vec<u8>,
    weight: u32,
    yaml_index: usize,
}

fn load_pool(file: &str, text: &str) -> Pool {
    let yaml = header_yaml(text);
    let conf = nutcracker::conf::Conf::parse_str(&yaml, file)
        .unwrap_or_else(|e| panic!("{file}: config rejected: {e:?}"));
    assert_eq!(conf.pools.len(), 1, "{file}: one pool expected");
    let pool = &conf.pools[0];
    Pool {
        hash: pool.hash,
        hash_tag: pool.hash_tag,
        distribution: pool.distribution,
        servers: pool
            .servers
            .iter()
            .map(|s| Server {
                name: s.name.as_bytes().to_vec(),
                weight: s.weight,
                yaml_index: s.yaml_index,
            })
            .collect(),
    }
}

/// The `*-ejected` files were recorded with YAML server 2 ejected.
fn specs<'a>(file: &str, pool: &'a Pool) -> Vec<ServerSpec<'a>> {
    let ejected = file.contains("-ejected");
    pool.servers
        .iter()
        .map(|s| ServerSpec {
            name: &s.name,
            weight: s.weight,
            live: !(ejected && s.yaml_index == 2),
        })
        .collect()
}

fn expected_placement_files() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for dist in ["ketama", "modula"] {
        for kind in HashKind::ALL {
            for case in ["addr", "named"] {
                want.insert(format!("placement-redis-{}-{dist}-{case}.tsv", kind.name()));
            }
        }
        for hash in ["fnv1a_64", "md5", "murmur"] {
            want.insert(format!("placement-redis-{hash}-{dist}-oddweights.tsv"));
        }
        for hash in ["fnv1a_64", "md5"] {
            want.insert(format!("placement-redis-{hash}-{dist}-ejected.tsv"));
        }
        for hash in ["fnv1a_64", "md5", "murmur", "crc32"] {
            for case in ["addr", "named"] {
                want.insert(format!("placement-memcache-{hash}-{dist}-{case}.tsv"));
            }
        }
        for case in ["port11211", "unix"] {
            for hash in ["fnv1a_64", "md5"] {
                want.insert(format!("placement-derived-{case}-{hash}-{dist}.tsv"));
            }
        }
    }
    want
}

fn expected_continuum_files() -> BTreeSet<String> {
    let ketama = [
        "addr",
        "ejected",
        "named",
        "oddweights",
        "port11211",
        "unix",
    ];
    let modula = ["addr", "ejected", "named"];
    ketama
        .iter()
        .map(|c| format!("continuum-ketama-{c}.tsv"))
        .chain(modula.iter().map(|c| format!("continuum-modula-{c}.tsv")))
        .collect()
}

#[test]
fn golden_directory_is_complete() {
    let placement: BTreeSet<String> = family("placement-").into_iter().collect();
    assert_eq!(placement, expected_placement_files());
    assert_eq!(placement.len(), 58 + 16 + 8);
    let continuum: BTreeSet<String> = family("continuum-").into_iter().collect();
    assert_eq!(continuum, expected_continuum_files());
    assert!(golden_dir().join("hash-vectors.tsv").is_file());
    assert!(golden_dir().join("README.md").is_file());
}

#[test]
fn hash_vectors() {
    let text = read("hash-vectors.tsv");
    let header = text
        .lines()
        .find(|l| l.starts_with("# columns:"))
        .expect("columns line");
    let columns: Vec<&str> = header
        .trim_start_matches("# columns: ")
        .split("<TAB>")
        .collect();
    let names: Vec<&str> = HashKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(&columns[2..], &names[..], "column order");

    let data = rows(&text);
    assert_eq!(data.len(), 629);
    let mut checked = 0;
    for row in &data {
        assert_eq!(row.len(), 14, "row {row:?}");
        let key = unhex(row[1]);
        for (kind, want) in HashKind::ALL.iter().zip(&row[2..]) {
            let want: u32 = want.parse().expect("decimal u32");
            assert_eq!(
                kind.hash(&key),
                want,
                "{} of key {:?} (hex {})",
                kind.name(),
                row[0],
                row[1]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 629 * 12);
}

#[test]
fn continuum_tables() {
    let files = family("continuum-");
    assert_eq!(files.len(), expected_continuum_files().len());
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        let pool = load_pool(file, &text);
        let want_dist = if file.starts_with("continuum-ketama-") {
            Distribution::Ketama
        } else {
            Distribution::Modula
        };
        assert_eq!(pool.distribution, want_dist, "{file}");
        let specs = specs(file, &pool);
        let sel = Selector::build(pool.distribution, &specs);
        let got = sel.points();

        let want = rows(&text);
        assert_eq!(got.len(), want.len(), "{file}: number of points");
        for (i, (row, &(value, sorted))) in want.iter().zip(&got).enumerate() {
            assert_eq!(row.len(), 4, "{file}: row {row:?}");
            let parse =
                |s: &str| -> u64 { s.parse().unwrap_or_else(|e| panic!("{file}: {s}: {e}")) };
            assert_eq!(parse(row[0]), i as u64, "{file}: point index");
            assert_eq!(
                (
                    value as u64,
                    sorted as u64,
                    pool.servers[sorted].yaml_index as u64
                ),
                (parse(row[1]), parse(row[3]), parse(row[2])),
                "{file}: point {i} (value, sorted index, yaml index)"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, files.len());
}

#[test]
fn placements() {
    let files = family("placement-");
    assert_eq!(files.len(), expected_placement_files().len());
    let mut checked_files = 0;
    let mut checked_rows = 0;
    let mut failures = Vec::new();
    for file in &files {
        let text = read(file);
        let pool = load_pool(file, &text);
        let specs = specs(file, &pool);
        let sel = Selector::build(pool.distribution, &specs);
        let data = rows(&text);
        assert!(data.len() >= 100, "{file}: only {} rows", data.len());
        for row in &data {
            assert_eq!(row.len(), 3, "{file}: row {row:?}");
            let key = unhex(row[2]);
            let want: usize = row[1].parse().unwrap_or_else(|e| panic!("{file}: {e}"));
            let got = select(&sel, pool.hash, pool.hash_tag, &key, pool.servers.len())
                .map(|sorted| pool.servers[sorted].yaml_index);
            if got != Some(want) {
                failures.push(format!(
                    "{file}: key {:?}: want {want}, got {got:?}",
                    row[0]
                ));
            }
            checked_rows += 1;
        }
        checked_files += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked_rows} rows differ; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    assert_eq!(checked_files, expected_placement_files().len());
}
