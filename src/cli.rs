//! The command line of nutcracker 0.5.0 (docs/compatibility.md §2.1-§2.4): the flags, their
//! defaults and validation, the exact error messages, and the version and
//! usage texts.
//!
//! Parsing is done by `getopts`, configured to behave like the GNU
//! `getopt_long` the C binary uses: repeated options (the last one wins),
//! grouped short flags (`-dt`), attached values (`-v6`, `--verbose=6`), free
//! arguments ignored wherever they stand, `--` ending the options. Two GNU
//! features getopts lacks are added around it: unique prefixes of long
//! options (`--conf=x`) are expanded before parsing, and values are checked
//! afterwards in command-line order, so the first bad value is the one
//! reported, as in C. [`parse`] returns what to do; it prints nothing.

use crate::metrics;

/// Default `-c`.
pub const DEFAULT_CONF_FILE: &str = "conf/nutcracker.yml";
/// Default `-s`.
pub const DEFAULT_STATS_PORT: u16 = 22222;
/// Default `-a`.
pub const DEFAULT_STATS_ADDR: &str = "0.0.0.0";
/// Default `-i`, in milliseconds.
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 30_000;
/// Default `-m`.
pub const DEFAULT_MBUF_SIZE: usize = 16384;
/// Smallest `-m`.
pub const MBUF_MIN_SIZE: usize = 512;
/// Largest `-m`.
pub const MBUF_MAX_SIZE: usize = 16_777_216;

/// The usage text (docs/compatibility.md §2.4), byte for byte: three blocks, each followed by
/// `\n`, with `\r\n` inside the blocks.
pub const USAGE: &str = concat!(
    "Usage: nutcracker [-?hVdDt] [-v verbosity level] [-o output file]\r\n",
    "                  [-c conf file] [-s stats port] [-a stats addr]\r\n",
    "                  [-i stats interval] [-p pid file] [-m mbuf size]\r\n",
    "\n",
    "Options:\r\n",
    "  -h, --help             : this help\r\n",
    "  -V, --version          : show version and exit\r\n",
    "  -t, --test-conf        : test configuration for syntax errors and exit\r\n",
    "  -d, --daemonize        : run as a daemon\r\n",
    "  -D, --describe-stats   : print stats description and exit\n",
    "  -v, --verbose=N        : set logging level (default: 5, min: 0, max: 11)\r\n",
    "  -o, --output=S         : set logging file (default: stderr)\r\n",
    "  -c, --conf-file=S      : set configuration file (default: conf/nutcracker.yml)\r\n",
    "  -s, --stats-port=N     : set stats monitoring port (default: 22222)\r\n",
    "  -a, --stats-addr=S     : set stats monitoring ip (default: 0.0.0.0)\r\n",
    "  -i, --stats-interval=N : set stats aggregation interval in msec (default: 30000 msec)\r\n",
    "  -p, --pid-file=S       : set pid file (default: off)\r\n",
    "  -m, --mbuf-size=N      : set size of mbuf chunk in bytes (default: 16384 bytes)\r\n",
    "\n",
);

/// `nutcracker-X.Y.Z`, our own crate version, as the start line and `-V`
/// name it.
pub const NAME_VERSION: &str = concat!("nutcracker-", env!("CARGO_PKG_VERSION"));

/// The version block (docs/compatibility.md §2.3) printed by `-V` and first by `-h` / `-D`.
pub fn version_text() -> String {
    format!("This is {NAME_VERSION}\nasync event backend: epoll\n\n")
}

/// Everything the command line sets, with the C defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub show_help: bool,
    pub show_version: bool,
    pub describe_stats: bool,
    pub test_conf: bool,
    pub daemonize: bool,
    /// As given; the logger clamps it to 0..=11.
    pub verbosity: i32,
    /// `None`: stderr.
    pub log_file: Option<String>,
    pub conf_file: String,
    pub stats_port: u16,
    pub stats_addr: String,
    pub stats_interval_ms: u64,
    pub pid_file: Option<String>,
    pub mbuf_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            show_help: false,
            show_version: false,
            describe_stats: false,
            test_conf: false,
            daemonize: false,
            verbosity: crate::log::DEFAULT_LEVEL,
            log_file: None,
            conf_file: DEFAULT_CONF_FILE.to_string(),
            stats_port: DEFAULT_STATS_PORT,
            stats_addr: DEFAULT_STATS_ADDR.to_string(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            pid_file: None,
            mbuf_size: DEFAULT_MBUF_SIZE,
        }
    }
}

/// What the command line asks for (docs/compatibility.md §2.1 precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-h`, `-V` or `-D` (even with `-t`): write this text to stderr and
    /// exit 0.
    Show(String),
    /// `-t`: test the configuration and exit.
    TestConf(Options),
    /// Start the proxy.
    Run(Options),
}

/// A bad command line: `message` (no newline) goes to stderr, then the
/// usage text, then the process exits 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
}

impl CliError {
    fn new(message: String) -> Self {
        CliError { message }
    }

    /// The full stderr output for this error: message, newline, usage.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.message, USAGE)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    Flag,
    Number,
    File,
    Text,
}

struct OptSpec {
    short: char,
    long: &'static str,
    arg: ArgKind,
}

/// The C `short_options` / `long_options` tables.
const SPECS: [OptSpec; 13] = [
    OptSpec {
        short: 'h',
        long: "help",
        arg: ArgKind::Flag,
    },
    OptSpec {
        short: 'V',
        long: "version",
        arg: ArgKind::Flag,
    },
    OptSpec {
        short: 't',
        long: "test-conf",
        arg: ArgKind::Flag,
    },
    OptSpec {
        short: 'd',
        long: "daemonize",
        arg: ArgKind::Flag,
    },
    OptSpec {
        short: 'D',
        long: "describe-stats",
        arg: ArgKind::Flag,
    },
    OptSpec {
        short: 'v',
        long: "verbose",
        arg: ArgKind::Number,
    },
    OptSpec {
        short: 'o',
        long: "output",
        arg: ArgKind::File,
    },
    OptSpec {
        short: 'c',
        long: "conf-file",
        arg: ArgKind::File,
    },
    OptSpec {
        short: 's',
        long: "stats-port",
        arg: ArgKind::Number,
    },
    OptSpec {
        short: 'i',
        long: "stats-interval",
        arg: ArgKind::Number,
    },
    OptSpec {
        short: 'a',
        long: "stats-addr",
        arg: ArgKind::Text,
    },
    OptSpec {
        short: 'p',
        long: "pid-file",
        arg: ArgKind::File,
    },
    OptSpec {
        short: 'm',
        long: "mbuf-size",
        arg: ArgKind::Number,
    },
];

fn spec_by_short(c: char) -> Option<&'static OptSpec> {
    SPECS.iter().find(|s| s.short == c)
}

/// A getopts option name (a short letter or a long name) to its spec.
fn spec_by_name(name: &str) -> Option<&'static OptSpec> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if let Some(s) = spec_by_short(c) {
            return Some(s);
        }
    }
    SPECS.iter().find(|s| s.long == name)
}

/// GNU `getopt_long` matching: an exact name, else a prefix of exactly one
/// long option. Ambiguous and unknown names give `None`.
fn resolve_long(name: &str) -> Option<&'static OptSpec> {
    if let Some(s) = SPECS.iter().find(|s| s.long == name) {
        return Some(s);
    }
    if name.is_empty() {
        return None;
    }
    let mut found = SPECS.iter().filter(|s| s.long.starts_with(name));
    match (found.next(), found.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

/// Rewrites abbreviated long options to their full names, walking the
/// arguments the way getopt does so that option values (which may start
/// with `--`) are left alone.
fn expand_long_prefixes(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg.clone());
            out.extend(iter.cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(spec) = resolve_long(name) else {
                out.push(arg.clone());
                continue;
            };
            match value {
                Some(v) => out.push(format!("--{}={}", spec.long, v)),
                None => out.push(format!("--{}", spec.long)),
            }
            if spec.arg != ArgKind::Flag && value.is_none() {
                out.extend(iter.next().cloned());
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            out.push(arg.clone());
            for (j, c) in arg.char_indices().skip(1) {
                let Some(spec) = spec_by_short(c) else { break };
                if spec.arg != ArgKind::Flag {
                    if j + c.len_utf8() == arg.len() {
                        out.extend(iter.next().cloned());
                    }
                    break;
                }
            }
        } else {
            out.push(arg.clone());
        }
    }
    out
}

/// The C `nc_atoi`: a non-empty run of ASCII digits accumulated in a 32-bit
/// signed int (wrapping, as the C arithmetic does in practice); -1 for
/// anything else or a negative result.
pub fn nc_atoi(s: &str) -> i32 {
    if s.is_empty() {
        return -1;
    }
    let mut value: i32 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return -1;
        }
        value = value.wrapping_mul(10).wrapping_add(i32::from(b - b'0'));
    }
    if value < 0 {
        -1
    } else {
        value
    }
}

fn invalid_option(what: &str) -> CliError {
    CliError::new(format!("nutcracker: invalid option -- '{what}'"))
}

fn missing_argument(spec: &OptSpec) -> CliError {
    let what = match spec.arg {
        ArgKind::File => "a file name",
        ArgKind::Text => "a string",
        ArgKind::Number | ArgKind::Flag => "a number",
    };
    CliError::new(format!(
        "nutcracker: option -{} requires {what}",
        spec.short
    ))
}

fn fail_to_error(fail: getopts::Fail) -> CliError {
    match fail {
        getopts::Fail::ArgumentMissing(name) => match spec_by_name(&name) {
            Some(spec) => missing_argument(spec),
            None => invalid_option(&name),
        },
        // A flag given a value (`--help=1`): GNU reports the option's letter.
        getopts::Fail::UnexpectedArgument(name) => match spec_by_name(&name) {
            Some(spec) => invalid_option(&spec.short.to_string()),
            None => invalid_option(&name),
        },
        getopts::Fail::UnrecognizedOption(name)
        | getopts::Fail::OptionMissing(name)
        | getopts::Fail::OptionDuplicated(name) => invalid_option(&name),
    }
}

fn getopts_table() -> getopts::Options {
    let mut g = getopts::Options::new();
    for s in &SPECS {
        let short = s.short.to_string();
        match s.arg {
            ArgKind::Flag => g.optflagmulti(&short, s.long, ""),
            _ => g.optmulti(&short, s.long, "", ""),
        };
    }
    g
}

/// Applies one option value to `opts`, with the C checks and messages.
fn apply_value(opts: &mut Options, short: char, value: String) -> Result<(), CliError> {
    let number = || nc_atoi(&value);
    match short {
        'v' => {
            let n = number();
            if n < 0 {
                return Err(CliError::new(
                    "nutcracker: option -v requires a number".into(),
                ));
            }
            opts.verbosity = n;
        }
        'o' => opts.log_file = Some(value),
        'c' => opts.conf_file = value,
        's' => {
            let n = number();
            if n < 0 {
                return Err(CliError::new(
                    "nutcracker: option -s requires a number".into(),
                ));
            }
            opts.stats_port = u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
                CliError::new(format!(
                    "nutcracker: option -s value {n} is not a valid port"
                ))
            })?;
        }
        'i' => {
            let n = number();
            if n < 0 {
                return Err(CliError::new(
                    "nutcracker: option -i requires a number".into(),
                ));
            }
            opts.stats_interval_ms = u64::from(n.unsigned_abs());
        }
        'a' => opts.stats_addr = value,
        'p' => opts.pid_file = Some(value),
        'm' => {
            let n = number();
            if n <= 0 {
                return Err(CliError::new(
                    "nutcracker: option -m requires a non-zero number".into(),
                ));
            }
            let size = n.unsigned_abs() as usize;
            if !(MBUF_MIN_SIZE..=MBUF_MAX_SIZE).contains(&size) {
                return Err(CliError::new(format!(
                    "nutcracker: mbuf chunk size must be between {MBUF_MIN_SIZE} and {MBUF_MAX_SIZE} bytes"
                )));
            }
            opts.mbuf_size = size;
        }
        _ => return Err(invalid_option(&short.to_string())),
    }
    Ok(())
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Action, CliError> {
    let args = expand_long_prefixes(args);
    let matches = getopts_table().parse(&args).map_err(fail_to_error)?;

    let mut opts = Options {
        show_help: matches.opt_present("h"),
        show_version: matches.opt_present("V"),
        describe_stats: matches.opt_present("D"),
        test_conf: matches.opt_present("t"),
        daemonize: matches.opt_present("d"),
        ..Options::default()
    };

    // Check values in command-line order so the first bad one is reported,
    // and apply them in that order so the last occurrence wins.
    let mut values: Vec<(usize, char, String)> = Vec::new();
    for s in SPECS.iter().filter(|s| s.arg != ArgKind::Flag) {
        for (pos, v) in matches.opt_strs_pos(&s.short.to_string()) {
            values.push((pos, s.short, v));
        }
    }
    values.sort_by_key(|(pos, _, _)| *pos);
    for (_, short, value) in values {
        apply_value(&mut opts, short, value)?;
    }

    if opts.show_help || opts.show_version || opts.describe_stats {
        let mut text = version_text();
        if opts.show_help {
            text.push_str(USAGE);
        }
        if opts.describe_stats {
            text.push_str(&metrics::describe());
        }
        return Ok(Action::Show(text));
    }
    if opts.test_conf {
        return Ok(Action::TestConf(opts));
    }
    Ok(Action::Run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> Options {
        match parse(&args(list)) {
            Ok(Action::Run(o)) => o,
            other => panic!("{list:?}: expected Run, got {other:?}"),
        }
    }

    fn err(list: &[&str]) -> String {
        match parse(&args(list)) {
            Err(e) => e.message,
            other => panic!("{list:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.verbosity, 5);
        assert_eq!(o.conf_file, "conf/nutcracker.yml");
        assert_eq!(o.stats_port, 22222);
        assert_eq!(o.stats_addr, "0.0.0.0");
        assert_eq!(o.stats_interval_ms, 30000);
        assert_eq!(o.mbuf_size, 16384);
        assert!(o.log_file.is_none() && o.pid_file.is_none() && !o.daemonize);
    }

    #[test]
    fn every_option_short_and_long() {
        let short = run(&[
            "-d",
            "-v",
            "7",
            "-o",
            "log",
            "-c",
            "x.yml",
            "-s",
            "1234",
            "-a",
            "127.0.0.1",
            "-i",
            "0",
            "-p",
            "pid",
            "-m",
            "512",
        ]);
        let long = run(&[
            "--daemonize",
            "--verbose=7",
            "--output",
            "log",
            "--conf-file=x.yml",
            "--stats-port",
            "1234",
            "--stats-addr=127.0.0.1",
            "--stats-interval",
            "0",
            "--pid-file=pid",
            "--mbuf-size",
            "512",
        ]);
        assert_eq!(short, long);
        assert!(short.daemonize);
        assert_eq!(short.verbosity, 7);
        assert_eq!(short.log_file.as_deref(), Some("log"));
        assert_eq!(short.conf_file, "x.yml");
        assert_eq!(short.stats_port, 1234);
        assert_eq!(short.stats_addr, "127.0.0.1");
        assert_eq!(short.stats_interval_ms, 0);
        assert_eq!(short.pid_file.as_deref(), Some("pid"));
        assert_eq!(short.mbuf_size, 512);
    }

    #[test]
    fn attached_grouped_repeated_and_free_arguments() {
        let o = run(&["-v6", "-dcfoo.yml", "positional", "-v", "9", "--", "-h"]);
        assert_eq!(o.verbosity, 9, "last occurrence wins");
        assert!(o.daemonize);
        assert_eq!(o.conf_file, "foo.yml");
        // A value may look like an option.
        let o = run(&["-c", "-h"]);
        assert_eq!(o.conf_file, "-h");
        let o = run(&["--conf-file", "--help"]);
        assert_eq!(o.conf_file, "--help");
        // Verbosity is not clamped here (the logger does it).
        assert_eq!(run(&["-v", "99"]).verbosity, 99);
    }

    #[test]
    fn long_prefixes() {
        assert_eq!(run(&["--conf=a"]).conf_file, "a");
        assert_eq!(run(&["--stats-p", "99"]).stats_port, 99);
        assert!(run(&["--dae"]).daemonize);
        assert!(matches!(parse(&args(&["--he"])), Ok(Action::Show(_))));
        // Ambiguous prefixes are unknown options.
        assert_eq!(err(&["--ver"]), "nutcracker: invalid option -- 'ver'");
        assert_eq!(err(&["--stats=1"]), "nutcracker: invalid option -- 'stats'");
    }

    #[test]
    fn precedence() {
        let v = version_text();
        assert_eq!(parse(&args(&["-V"])), Ok(Action::Show(v.clone())));
        assert_eq!(
            parse(&args(&["-t", "-h"])),
            Ok(Action::Show(format!("{v}{USAGE}")))
        );
        assert_eq!(
            parse(&args(&["-D", "-t"])),
            Ok(Action::Show(format!("{v}{}", metrics::describe())))
        );
        assert_eq!(
            parse(&args(&["-D", "-h"])),
            Ok(Action::Show(format!("{v}{USAGE}{}", metrics::describe())))
        );
        assert!(matches!(parse(&args(&["-t", "-d"])), Ok(Action::TestConf(o)) if o.daemonize));
        // Errors win over -h, wherever they are.
        assert_eq!(
            err(&["-h", "-v", "x"]),
            "nutcracker: option -v requires a number"
        );
    }

    #[test]
    fn number_errors() {
        for (flag, letter) in [("-v", 'v'), ("-s", 's'), ("-i", 'i')] {
            for bad in ["", "x", "-1", "+1", " 1", "1 ", "1.5"] {
                assert_eq!(
                    err(&[flag, bad]),
                    format!("nutcracker: option -{letter} requires a number"),
                    "{flag} {bad:?}"
                );
            }
        }
        assert_eq!(
            err(&["-s", "0"]),
            "nutcracker: option -s value 0 is not a valid port"
        );
        assert_eq!(
            err(&["-s", "70000"]),
            "nutcracker: option -s value 70000 is not a valid port"
        );
        assert_eq!(run(&["-s", "65535"]).stats_port, 65535);
        assert_eq!(run(&["-s", "1"]).stats_port, 1);
        for bad in ["0", "x", "", "-5"] {
            assert_eq!(
                err(&["-m", bad]),
                "nutcracker: option -m requires a non-zero number",
                "{bad:?}"
            );
        }
        for bad in ["511", "16777217", "1"] {
            assert_eq!(
                err(&["-m", bad]),
                "nutcracker: mbuf chunk size must be between 512 and 16777216 bytes"
            );
        }
        assert_eq!(run(&["-m", "16777216"]).mbuf_size, 16_777_216);
        // First bad value in command-line order is the one reported.
        assert_eq!(err(&["-m", "1", "-s", "x"]), err(&["-m", "1"]));
        assert_eq!(err(&["-s", "x", "-m", "1"]), err(&["-s", "x"]));
    }

    #[test]
    fn nc_atoi_matches_c() {
        assert_eq!(nc_atoi("0"), 0);
        assert_eq!(nc_atoi("007"), 7);
        assert_eq!(nc_atoi("2147483647"), i32::MAX);
        assert_eq!(nc_atoi("2147483648"), -1);
        // 2^32 + 1 wraps to 1 in 32-bit arithmetic.
        assert_eq!(nc_atoi("4294967297"), 1);
        assert_eq!(nc_atoi(""), -1);
        assert_eq!(nc_atoi("1a"), -1);
        assert_eq!(nc_atoi("٣"), -1);
    }

    #[test]
    fn missing_arguments() {
        for f in ["-o", "-c", "-p"] {
            assert_eq!(
                err(&[f]),
                format!("nutcracker: option {f} requires a file name")
            );
        }
        for f in ["-m", "-v", "-s", "-i"] {
            assert_eq!(
                err(&[f]),
                format!("nutcracker: option {f} requires a number")
            );
        }
        assert_eq!(err(&["-a"]), "nutcracker: option -a requires a string");
        assert_eq!(
            err(&["--conf-file"]),
            "nutcracker: option -c requires a file name"
        );
        assert_eq!(
            err(&["-d", "--mbuf"]),
            "nutcracker: option -m requires a number"
        );
    }

    #[test]
    fn unknown_options() {
        assert_eq!(err(&["-x"]), "nutcracker: invalid option -- 'x'");
        assert_eq!(err(&["-?"]), "nutcracker: invalid option -- '?'");
        assert_eq!(err(&["-dx"]), "nutcracker: invalid option -- 'x'");
        assert_eq!(err(&["--bogus"]), "nutcracker: invalid option -- 'bogus'");
        assert_eq!(err(&["--help=1"]), "nutcracker: invalid option -- 'h'");
    }

    #[test]
    fn usage_shape() {
        assert_eq!(USAGE.matches("\r\n").count(), 16);
        assert!(USAGE.ends_with("(default: 16384 bytes)\r\n\n"));
        assert!(USAGE.contains("print stats description and exit\n  -v"));
        assert!(USAGE.contains("[-m mbuf size]\r\n\nOptions:\r\n"));
        let e = CliError::new("nutcracker: invalid option -- 'x'".into());
        assert_eq!(
            e.output(),
            format!("nutcracker: invalid option -- 'x'\n{USAGE}")
        );
    }

    #[test]
    fn version() {
        assert_eq!(
            version_text(),
            format!(
                "This is nutcracker-{}\nasync event backend: epoll\n\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
