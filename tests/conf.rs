//! Integration tests of the configuration loader: the shipped sample files,
//! every configuration recorded in the golden vectors (with the server order
//! and names the C binary printed for them), and loading from disk.

use nutcracker::conf::{describe, Conf, Listen, PoolConf, ServerAddr};
use nutcracker::hashkit::{Distribution, HashKind};
use std::path::{Path, PathBuf};

fn crate_file(rel: &str) -> String {
    format!("{}/{}", env!("CARGO_MANIFEST_DIR"), rel)
}

fn load(rel: &str) -> Conf {
    let path = crate_file(rel);
    match Conf::load(&path) {
        Ok(conf) => conf,
        Err(e) => panic!("{}", describe(&e, &path)),
    }
}

fn pool<'a>(conf: &'a Conf, name: &str) -> &'a PoolConf {
    match conf.pools.iter().find(|p| p.name == name) {
        Some(p) => p,
        None => panic!("no pool {name}"),
    }
}

fn tcp(addr: &str) -> Listen {
    Listen::Tcp(addr.parse().expect("test address"))
}

#[test]
fn sample_nutcracker_yml_loads() {
    let conf = load("conf/nutcracker.yml");
    let names: Vec<&str> = conf.pools.iter().map(|p| p.name.as_str()).collect();
    // Sorted by length first, then bytes.
    assert_eq!(names, ["beta", "alpha", "delta", "gamma", "omega"]);

    let alpha = pool(&conf, "alpha");
    assert_eq!(alpha.listen, tcp("127.0.0.1:22121"));
    assert_eq!(alpha.hash, HashKind::Fnv1a_64);
    assert_eq!(alpha.distribution, Distribution::Ketama);
    assert!(alpha.auto_eject_hosts && alpha.redis);
    assert_eq!(alpha.server_retry_timeout_ms, 2000);
    assert_eq!(alpha.server_failure_limit, 1);
    assert_eq!(alpha.servers.len(), 1);
    assert_eq!(alpha.servers[0].name, "127.0.0.1:6379");

    let beta = pool(&conf, "beta");
    assert_eq!(beta.listen, tcp("127.0.0.1:22122"));
    assert_eq!(beta.hash_tag, Some(*b"{}"));
    assert_eq!(beta.timeout_ms, Some(400));
    assert!(beta.redis && !beta.auto_eject_hosts);
    let servers: Vec<(&str, &str)> = beta
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.pname.as_str()))
        .collect();
    assert_eq!(
        servers,
        [
            ("server1", "127.0.0.1:6380:1"),
            ("server2", "127.0.0.1:6381:1"),
            ("server3", "127.0.0.1:6382:1"),
            ("server4", "127.0.0.1:6383:1"),
        ]
    );

    let gamma = pool(&conf, "gamma");
    assert_eq!(gamma.listen, tcp("127.0.0.1:22123"));
    assert_eq!((gamma.timeout_ms, gamma.backlog), (Some(400), 1024));
    assert!(gamma.preconnect && gamma.auto_eject_hosts && !gamma.redis);
    assert_eq!(gamma.server_failure_limit, 3);
    assert_eq!(gamma.servers.len(), 2);

    let delta = pool(&conf, "delta");
    assert_eq!(delta.listen, tcp("127.0.0.1:22124"));
    assert_eq!(delta.timeout_ms, Some(100));
    let ports: Vec<u16> = delta
        .servers
        .iter()
        .map(|s| match s.addr {
            ServerAddr::Tcp { port, .. } => port,
            ServerAddr::Unix { .. } => 0,
        })
        .collect();
    assert_eq!(ports, (11214..=11223).collect::<Vec<u16>>());

    let omega = pool(&conf, "omega");
    assert_eq!(
        omega.listen,
        Listen::Unix {
            path: "/tmp/gamma".into(),
            perm: 0
        }
    );
    assert_eq!(omega.hash, HashKind::Hsieh);
    let weights: Vec<u32> = omega.servers.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [100_000, 1]);
}

#[test]
fn sample_redis_yml_loads() {
    let conf = load("conf/redis.yml");
    assert_eq!(conf.pools.len(), 1);
    let p = &conf.pools[0];
    assert!(p.redis);
    assert_eq!(p.listen, tcp("127.0.0.1:22121"));
    assert_eq!(p.hash_tag, Some(*b"{}"));
    assert_eq!(p.timeout_ms, Some(400));
    let names: Vec<&str> = p.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.1:6379", "127.0.0.1:6380"]);
}

#[test]
fn sample_memcached_yml_loads() {
    let conf = load("conf/memcached.yml");
    assert_eq!(conf.pools.len(), 1);
    let p = &conf.pools[0];
    assert!(!p.redis);
    // Port 11211 is left out of the name, which also sorts it first.
    let names: Vec<&str> = p.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.1", "127.0.0.1:11212"]);
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The `#| ` lines of a golden file, i.e. the YAML the C binary ran with.
fn golden_yaml(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("#|"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect()
}

/// `#   sorted 0 -> yaml 1  pname=P name=N weight=W` lines: (yaml index, pname, name, weight).
fn golden_sorted(text: &str) -> Vec<(usize, String, String, u32)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("#   sorted ") else {
            continue;
        };
        let field = |key: &str| -> String {
            let start = rest.find(key).expect("field") + key.len();
            rest[start..].split(' ').next().unwrap_or("").to_string()
        };
        let yaml: usize = field("-> yaml ").parse().expect("yaml index");
        let weight: u32 = field("weight=").parse().expect("weight");
        rows.push((yaml, field("pname="), field(" name="), weight));
    }
    rows
}

#[test]
fn every_golden_configuration_loads_in_the_c_order() {
    let dir = golden_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (mut configs, mut tables) = (0, 0);
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("golden file");
        let yaml = golden_yaml(&text);
        if yaml.is_empty() {
            continue;
        }
        configs += 1;
        let conf =
            Conf::parse_str(&yaml, &file).unwrap_or_else(|e| panic!("{}", describe(&e, &file)));
        assert_eq!(conf.pools.len(), 1, "{file}");
        let p = &conf.pools[0];
        assert_eq!(p.listen, tcp("127.0.0.1:31100"), "{file}");
        if file.starts_with("placement-redis") {
            assert!(p.redis, "{file}");
        }
        if file.starts_with("placement-memcache") {
            assert!(!p.redis, "{file}");
        }
        if file.ends_with("-named.tsv") {
            assert_eq!(p.hash_tag, Some(*b"$$"), "{file}");
        }
        let sorted = golden_sorted(&text);
        if sorted.is_empty() {
            continue;
        }
        tables += 1;
        let got: Vec<(usize, String, String, u32)> = p
            .servers
            .iter()
            .map(|s| (s.yaml_index, s.pname.clone(), s.name.clone(), s.weight))
            .collect();
        assert_eq!(got, sorted, "{file}");
    }
    assert!(configs >= 90, "only {configs} golden configurations found");
    assert!(tables >= 9, "only {tables} continuum headers found");
}

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("nc-conf-{}-{tag}.yml", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn missing_file_reports_strerror() {
    let path = crate_file("conf/does-not-exist.yml");
    let err = Conf::load(&path).unwrap_err();
    assert_eq!(err.line, None);
    assert_eq!(
        err.message,
        format!("failed to open configuration '{path}': No such file or directory")
    );
    assert_eq!(
        describe(&err, &path),
        format!("conf: failed to open configuration '{path}': No such file or directory")
    );
}

#[test]
fn directory_is_a_reader_error() {
    let path = crate_file("conf");
    let err = Conf::load(&path).unwrap_err();
    assert_eq!(
        err.message,
        "failed (err 2) to get the next yaml document: Is a directory"
    );
}

#[test]
fn crlf_file_loads() {
    let text = "p:\r\n  listen: 127.0.0.1:22121\r\n  redis: true\r\n  servers:\r\n   - 127.0.0.1:6379:1 a\r\n   - 127.0.0.1:6380:1\r\n";
    let file = TempFile::new("crlf", text.as_bytes());
    let conf = Conf::load(&file.path()).unwrap_or_else(|e| panic!("{e}"));
    let p = &conf.pools[0];
    assert!(p.redis);
    let names: Vec<&str> = p.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "127.0.0.1:6380"]);
}

#[test]
fn errors_on_disk_name_the_file_and_line() {
    let file = TempFile::new(
        "bad",
        b"p:\n  listen: 127.0.0.1:22121\n  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n",
    );
    let path = file.path();
    let err = Conf::load(&path).unwrap_err();
    assert_eq!(
        describe(&err, &path),
        format!("conf: directive \"hash\" is not a valid hash (file '{path}' line 3)")
    );
    let file = TempFile::new("utf16", b"\xff\xfep\x00:\x00");
    let err = Conf::load(&file.path()).unwrap_err();
    assert!(err
        .message
        .starts_with("failed (err 2) to get the next yaml document"));
}
