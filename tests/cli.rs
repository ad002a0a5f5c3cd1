//! The command line of the built binary, byte for byte (docs/compatibility.md §2.1-§2.6):
//! every flag, every option error with the usage text and exit 1, the
//! version / help / describe texts, and `-t` on good and bad files (the
//! reason printed once, with its line).
//!
//! The expected texts are written out here rather than taken from the
//! library, so a change to the library's constants shows up as a failure.

mod common;

use common::*;

const USAGE: &str = "Usage: nutcracker [-?hVdDt] [-v verbosity level] [-o output file]\r\n                  [-c conf file] [-s stats port] [-a stats addr]\r\n                  [-i stats interval] [-p pid file] [-m mbuf size]\r\n\nOptions:\r\n  -h, --help             : this help\r\n  -V, --version          : show version and exit\r\n  -t, --test-conf        : test configuration for syntax errors and exit\r\n  -d, --daemonize        : run as a daemon\r\n  -D, --describe-stats   : print stats description and exit\n  -v, --verbose=N        : set logging level (default: 5, min: 0, max: 11)\r\n  -o, --output=S         : set logging file (default: stderr)\r\n  -c, --conf-file=S      : set configuration file (default: conf/nutcracker.yml)\r\n  -s, --stats-port=N     : set stats monitoring port (default: 22222)\r\n  -a, --stats-addr=S     : set stats monitoring ip (default: 0.0.0.0)\r\n  -i, --stats-interval=N : set stats aggregation interval in msec (default: 30000 msec)\r\n  -p, --pid-file=S       : set pid file (default: off)\r\n  -m, --mbuf-size=N      : set size of mbuf chunk in bytes (default: 16384 bytes)\r\n\n";

const DESCRIBE: &str = "pool stats:
  client_eof          \"# eof on client connections\"
  client_err          \"# errors on client connections\"
  client_connections  \"# active client connections\"
  server_ejects       \"# times backend server was ejected\"
  forward_error       \"# times we encountered a forwarding error\"
  fragments           \"# fragments created from a multi-vector request\"
  sentinel_connected  \"1 when connected to a redis sentinel, else 0\"
  master_switches     \"# master address changes learnt from sentinels\"
  repairing           \"# servers being repaired after an ejection\"
  repaired_keys       \"# keys repaired after ejections\"
  migrating           \"1 while a migration of the pool (migrate_from) runs\"
  migrate_scanned     \"# keys examined on previous owners\"
  migrate_moved       \"# keys moved to their new owner\"
  migrate_errors      \"# failed key moves or scans\"

server stats:
  server_eof          \"# eof on server connections\"
  server_err          \"# errors on server connections\"
  server_timedout     \"# timeouts on server connections\"
  server_connections  \"# active server connections\"
  server_ejected_at   \"timestamp when server was ejected in usec since epoch\"
  requests            \"# requests\"
  request_bytes       \"total request bytes\"
  responses           \"# responses\"
  response_bytes      \"total response bytes\"
  in_queue            \"# requests in incoming queue\"
  in_queue_bytes      \"current request bytes in incoming queue\"
  out_queue           \"# requests in outgoing queue\"
  out_queue_bytes     \"current request bytes in outgoing queue\"
";

fn version_block() -> String {
    format!(
        "This is nutcracker-{}\nasync event backend: epoll\n\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs with `args`, expects `code`, an empty stdout, and exactly `stderr`.
fn expect(args: &[&str], code: i32, stderr: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert_eq!(stderr_text(&out), stderr, "{args:?}");
}

fn expect_usage_error(args: &[&str], message: &str) {
    expect(args, 1, &format!("{message}\n{USAGE}"));
}

#[test]
fn version_flag() {
    // Our own number, never below 0.6.0: scripts compare it with 0.5.0's to
    // gate features.
    let out = run(&["-V"]);
    let text = stderr_text(&out);
    let number = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("This is nutcracker-"))
        .unwrap_or_else(|| panic!("not the 0.5.0 form: {text:?}"));
    let parts: Vec<u32> = number
        .split('.')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("bad version {number:?}"))
        })
        .collect();
    assert_eq!(parts.len(), 3, "X.Y.Z: {number:?}");
    assert!(parts >= vec![0, 6, 0], "version {number} is below 0.6.0");
    assert_eq!(number, env!("CARGO_PKG_VERSION"));
    expect(&["-V"], 0, &version_block());
    expect(&["--version"], 0, &version_block());
    expect(&["--vers"], 0, &version_block());
}

#[test]
fn help_flag() {
    let want = format!("{}{USAGE}", version_block());
    expect(&["-h"], 0, &want);
    expect(&["--help"], 0, &want);
    // -h wins over -t and a start.
    expect(&["-t", "-h", "-c", "/nonexistent.yml"], 0, &want);
    expect(&["-hV"], 0, &want);
}

#[test]
fn describe_stats_flag() {
    let want = format!("{}{DESCRIBE}", version_block());
    expect(&["-D"], 0, &want);
    expect(&["--describe-stats"], 0, &want);
    expect(&["-D", "-t"], 0, &want);
    expect(
        &["-h", "-D"],
        0,
        &format!("{}{USAGE}{DESCRIBE}", version_block()),
    );
}

#[test]
fn bad_numbers() {
    for (flag, long) in [
        ("-v", "--verbose"),
        ("-s", "--stats-port"),
        ("-i", "--stats-interval"),
    ] {
        let msg = format!("nutcracker: option {flag} requires a number");
        for bad in ["abc", "-1", "+5", " 5", "5x", ""] {
            expect_usage_error(&[flag, bad], &msg);
        }
        expect_usage_error(&[&format!("{long}=x")], &msg);
        expect_usage_error(&[long, "x"], &msg);
    }
    expect_usage_error(
        &["-s", "70000"],
        "nutcracker: option -s value 70000 is not a valid port",
    );
    expect_usage_error(
        &["-s", "0"],
        "nutcracker: option -s value 0 is not a valid port",
    );
}

#[test]
fn bad_mbuf_size() {
    for bad in ["0", "abc", "-512", ""] {
        expect_usage_error(
            &["-m", bad],
            "nutcracker: option -m requires a non-zero number",
        );
    }
    for bad in ["511", "16777217", "1"] {
        expect_usage_error(
            &["--mbuf-size", bad],
            "nutcracker: mbuf chunk size must be between 512 and 16777216 bytes",
        );
    }
}

#[test]
fn missing_arguments() {
    for f in ["-o", "-c", "-p"] {
        expect_usage_error(
            &[f],
            &format!("nutcracker: option {f} requires a file name"),
        );
    }
    for f in ["-m", "-v", "-s", "-i"] {
        expect_usage_error(&[f], &format!("nutcracker: option {f} requires a number"));
    }
    expect_usage_error(&["-a"], "nutcracker: option -a requires a string");
    expect_usage_error(
        &["-d", "--pid-file"],
        "nutcracker: option -p requires a file name",
    );
    expect_usage_error(&["--stats-addr"], "nutcracker: option -a requires a string");
}

#[test]
fn unknown_options() {
    expect_usage_error(&["-x"], "nutcracker: invalid option -- 'x'");
    expect_usage_error(&["-?"], "nutcracker: invalid option -- '?'");
    expect_usage_error(&["-tq"], "nutcracker: invalid option -- 'q'");
    // 0.5.0 prints a NUL byte here; we name the option.
    expect_usage_error(
        &["--frobnicate"],
        "nutcracker: invalid option -- 'frobnicate'",
    );
    expect_usage_error(&["--ver"], "nutcracker: invalid option -- 'ver'");
    // An error wins over -h.
    expect_usage_error(&["-h", "-x"], "nutcracker: invalid option -- 'x'");
}

fn good_config(dir: &TempDir) -> std::path::PathBuf {
    dir.write("good.yml", &redis_config(free_port()))
}

#[test]
fn test_conf_good_file() {
    let dir = TempDir::new("cli");
    good_config(&dir);
    // The path is printed exactly as given.
    let out = run_in(Some(dir.path()), &["-t", "-c", "good.yml"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_text(&out),
        "nutcracker: configuration file 'good.yml' syntax is ok\n"
    );
    // Long forms, positional arguments ignored, -t with every other option
    // (-t neither opens the log nor writes the pid file).
    let out = run_in(
        Some(dir.path()),
        &[
            "junk",
            "--test-conf",
            "--conf-file=good.yml",
            "-v",
            "11",
            "-d",
            "-p",
            "/nonexistent/x.pid",
            "-o",
            "/nonexistent/x.log",
            "-s",
            "1",
            "-a",
            "127.0.0.1",
            "-i",
            "0",
            "-m",
            "512",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stderr_text(&out),
        "nutcracker: configuration file 'good.yml' syntax is ok\n"
    );
}

#[test]
fn test_conf_shipped_example() {
    let path = manifest_dir().join("conf/nutcracker.yml");
    assert!(path.exists(), "conf/nutcracker.yml is missing");
    // The default -c is conf/nutcracker.yml relative to the current directory.
    expect(
        &["-t"],
        0,
        "nutcracker: configuration file 'conf/nutcracker.yml' syntax is ok\n",
    );
}

#[test]
fn test_conf_missing_file() {
    let out = run(&["-t", "-c", "/nonexistent/n.yml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr_text(&out);
    assert_eq!(
        err,
        "nutcracker: conf: failed to open configuration '/nonexistent/n.yml': No such file or directory\n\
         nutcracker: configuration file '/nonexistent/n.yml' syntax is invalid\n"
    );
}

const POOL_HEAD: &str = "alpha:\n  listen: 127.0.0.1:22121\n";
const ONE_SERVER: &str = "  servers:\n   - 127.0.0.1:6379:1\n";

/// (config text, expected reason, line the reason names). Covers docs/compatibility.md §4.6.
fn bad_configs() -> Vec<(String, &'static str, Option<usize>)> {
    let with = |extra: &str| format!("{POOL_HEAD}{extra}{ONE_SERVER}");
    let servers = |line: &str| format!("{POOL_HEAD}  servers:\n   - {line}\n");
    let listen = |l: &str| format!("alpha:\n  listen: {l}\n{ONE_SERVER}");
    vec![
        (with("  foo: bar\n"), "conf: directive \"foo\" is unknown", Some(3)),
        (with("  listen: 127.0.0.1:1\n"), "conf: directive \"listen\" is a duplicate", Some(3)),
        (with("  timeout: 1s\n"), "conf: directive \"timeout\" is not a number", Some(3)),
        (with("  redis: yes\n"), "conf: directive \"redis\" is not \"true\" or \"false\"", Some(3)),
        (with("  hash: sha1\n"), "conf: directive \"hash\" is not a valid hash", Some(3)),
        (
            with("  distribution: round\n"),
            "conf: directive \"distribution\" is not a valid distribution",
            Some(3),
        ),
        (
            with("  hash_tag: \"{\"\n"),
            "conf: directive \"hash_tag\" is not a valid hash tag string with two characters",
            Some(3),
        ),
        (
            listen("127.0.0.1"),
            "conf: directive \"listen\" has an invalid \"hostname:port\" format string",
            Some(2),
        ),
        (
            listen("127.0.0.1:65536"),
            "conf: directive \"listen\" has an invalid port in \"hostname:port\" format string",
            Some(2),
        ),
        (
            listen("/tmp/nutcracker-test.sock 1777"),
            "conf: directive \"listen\" has an invalid file permission in \"socket_path permission\" format string",
            Some(2),
        ),
        (
            servers("127.0.0.1"),
            "conf: directive \"servers\" has an invalid \"hostname:port:weight [name]\"or \"/path/unix_socket:weight [name]\" format string",
            Some(4),
        ),
        (
            servers("127.0.0.1:6379:x"),
            "conf: directive \"servers\" has an invalid weight in \"hostname:port:weight [name]\" format string",
            Some(4),
        ),
        (
            servers("127.0.0.1:6379:0"),
            "conf: directive \"servers\" has a zero weight in \"hostname:port:weight [name]\" format string",
            Some(4),
        ),
        (
            servers("127.0.0.1:0:1"),
            "conf: directive \"servers\" has an invalid port in \"hostname:port:weight [name]\" format string",
            Some(4),
        ),
        (String::new(), "must contain only 1 document; found 0 documents", None),
        (
            format!("---\n{POOL_HEAD}{ONE_SERVER}"),
            "conf: document start token (5) is disallowed",
            Some(1),
        ),
        (
            with("  hash_tag: {}\n"),
            "conf: flow mapping start token (12) is disallowed",
            Some(3),
        ),
        (
            with("  hash_tag: [a]\n"),
            "conf: flow sequence start token (10) is disallowed",
            Some(3),
        ),
        (
            format!("alpha: &a\n  listen: 127.0.0.1:22121\n{ONE_SERVER}"),
            "conf: anchor token (19) is disallowed",
            Some(1),
        ),
        (
            "alpha:\n\tlisten: 127.0.0.1:22121\n".to_string(),
            "conf: failed (err 3) to get the next yaml document",
            Some(2),
        ),
        ("hello\n".to_string(), "has invalid empty \"key:\" at depth 0", None),
        ("alpha:\n".to_string(), "has invalid mapping \"key:\" at depth 1", None),
        (
            format!("{POOL_HEAD}  hash:\n    a: b\n{ONE_SERVER}"),
            "has a depth greater than 2",
            None,
        ),
        ("- alpha\n".to_string(), "has sequence at depth 0 instead of 2", None),
        (
            format!("{POOL_HEAD}{ONE_SERVER}  replicas:\n   - 127.0.0.1:26379:1\n"),
            "has more than one sequence directive",
            None,
        ),
        (format!("{POOL_HEAD}  hash: md5\n"), "missing sequence directive at depth 2", None),
        (
            format!("alpha:\n  hash: md5\n{ONE_SERVER}"),
            "conf: directive \"listen:\" is missing",
            None,
        ),
        (
            with("  server_connections: 0\n"),
            "conf: directive \"server_connections:\" cannot be 0",
            None,
        ),
        (
            with("  redis_auth: secret\n"),
            "conf: directive \"redis_auth:\" is only valid for a redis pool",
            None,
        ),
        (
            format!("{POOL_HEAD}  servers:\n   - 127.0.0.1:6379:1\n   - 127.0.0.1:6379:2\n"),
            "conf: pool 'alpha' has servers with same name '127.0.0.1:6379'",
            None,
        ),
        (
            format!("{POOL_HEAD}{ONE_SERVER}beta:\n  listen: 127.0.0.1:22121\n{ONE_SERVER}"),
            "conf: pools 'alpha' and 'beta' have the same listen address '127.0.0.1:22121'",
            None,
        ),
    ]
}

#[test]
fn test_conf_bad_files_print_the_reason_once() {
    let dir = TempDir::new("cli-bad");
    for (i, (text, reason, line)) in bad_configs().into_iter().enumerate() {
        let name = format!("bad{i}.yml");
        dir.write(&name, &text);
        let out = run_in(Some(dir.path()), &["-t", "-c", &name]);
        let err = stderr_text(&out);
        let ctx = format!("case {i} ({reason}):\n{text}\n--- stderr:\n{err}");
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(out.stdout.is_empty(), "{ctx}");
        assert_eq!(count(&err, reason), 1, "reason printed once: {ctx}");
        let invalid = format!("nutcracker: configuration file '{name}' syntax is invalid\n");
        assert_eq!(count(&err, &invalid), 1, "{ctx}");
        assert!(err.ends_with(&invalid), "invalid line last: {ctx}");
        assert!(err.starts_with("nutcracker: "), "{ctx}");
        if let Some(line) = line {
            assert!(err.contains(&format!("line {line})")), "line {line}: {ctx}");
        }
    }
}

#[test]
fn unopenable_log_file() {
    let dir = TempDir::new("cli-log");
    let conf = good_config(&dir);
    let conf = conf.to_str().expect("utf-8 path");
    expect(
        &["-c", conf, "-o", "/nonexistent/dir/n.log"],
        1,
        "opening log file '/nonexistent/dir/n.log' failed: No such file or directory\n",
    );
}
