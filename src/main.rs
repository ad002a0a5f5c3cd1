//! The `nutcracker` binary: the daemon shell around the proxy engine.
//!
//! Order of a start (docs/compatibility.md §2.7, with the improvements of docs/compatibility.md §13):
//!
//! ```text
//! parse options ─► -h/-V/-D: print, exit 0
//!               ─► -t: load the config, print the reason once, exit 0/1
//!               ─► open the log (-o)
//!               ─► -d: load + validate the config, then detach
//!               ─► signal handlers ─► pid file ─► start lines
//!               ─► load the config (unless -d already did)
//!               ─► core::run (binds, event loop) until SIGINT/SIGTERM
//!               ─► "done, rabbit done", pid file removed, exit 0 (1 on failure)
//! ```
//!
//! Everything printed before the log is open goes to stderr with the
//! `nutcracker: ` prefix, as the C binary's `log_stderr` does.

use nutcracker::cli::{self, Action, Options, NAME_VERSION};
use nutcracker::conf::{self, Conf, ConfError};
use nutcracker::core::{self, Settings};
use nutcracker::{daemon, log, log_error, loga, signal};
use std::io::Write as _;
use std::path::PathBuf;

fn main() {
    // Non-UTF-8 arguments are passed on lossily; getopts needs strings.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = match cli::parse(&args) {
        Err(e) => {
            write_stderr(&e.output());
            1
        }
        Ok(Action::Show(text)) => {
            write_stderr(&text);
            0
        }
        Ok(Action::TestConf(opts)) => test_conf(&opts.conf_file),
        Ok(Action::Run(opts)) => run(opts),
    };
    std::process::exit(code);
}

fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints a config error to stderr: the detail line (if any) and the
/// reason, once each, then the "syntax is invalid" line.
fn print_conf_error(err: &ConfError, path: &str) {
    if let Some(detail) = &err.detail {
        log::stderr(&format!(
            "nutcracker: {}",
            nutcracker::conf::one_line(detail)
        ));
    }
    log::stderr(&format!("nutcracker: {}", conf::describe(err, path)));
    log::stderr(&format!(
        "nutcracker: configuration file '{path}' syntax is invalid"
    ));
}

/// `-t`: only stderr is used; exit 0 when the file is valid.
fn test_conf(path: &str) -> i32 {
    match Conf::load(path) {
        Ok(_) => {
            log::stderr(&format!(
                "nutcracker: configuration file '{path}' syntax is ok"
            ));
            0
        }
        Err(e) => {
            print_conf_error(&e, path);
            1
        }
    }
}

/// Logs a config error the way a normal start reports it: the reason in
/// the log, the "syntax is invalid" line on stderr.
fn log_conf_error(err: &ConfError, path: &str) {
    if let Some(detail) = &err.detail {
        log_error!("{}", nutcracker::conf::one_line(detail));
    }
    log_error!("{}", conf::describe(err, path));
    log::stderr(&format!(
        "nutcracker: configuration file '{path}' syntax is invalid"
    ));
}

/// What to undo on the way out.
struct Running {
    pid_file: Option<PathBuf>,
}

impl Running {
    /// The orderly exit of docs/compatibility.md §2.7: pid file removed, last line logged.
    fn finish(self, code: i32) -> i32 {
        if let Some(p) = &self.pid_file {
            daemon::remove_pidfile(p);
        }
        loga!("done, rabbit done");
        code
    }
}

fn run(opts: Options) -> i32 {
    if let Err(e) = log::init(opts.verbosity, opts.log_file.as_deref()) {
        log::stderr(&format!(
            "opening log file '{}' failed: {}",
            opts.log_file.as_deref().unwrap_or(""),
            log::strerror(&e)
        ));
        return 1;
    }

    // With -d, a bad config must fail here, while the caller (an init
    // script, a terminal) can still see the reason and the exit status.
    let mut conf = None;
    if opts.daemonize {
        match Conf::load(&opts.conf_file) {
            Ok(c) => conf = Some(c),
            Err(e) => {
                print_conf_error(&e, &opts.conf_file);
                if log::to_file() {
                    if let Some(detail) = &e.detail {
                        log_error!("{}", nutcracker::conf::one_line(detail));
                    }
                    log_error!("{}", conf::describe(&e, &opts.conf_file));
                }
                return 1;
            }
        }
    }

    // The daemon runs in `/`, so the pid file path is fixed now, and so is
    // the configuration's, which a reload reads again.
    let pid_path = opts.pid_file.as_deref().map(daemon::absolute);
    let conf_path = daemon::absolute(&opts.conf_file);
    if opts.daemonize {
        if let Err(e) = daemon::daemonize() {
            log_error!("daemonize failed: {}", log::strerror(&e));
            loga!("done, rabbit done");
            return 1;
        }
    }
    let mut state = Running { pid_file: None };

    if let Err(e) = signal::install() {
        log_error!("signal init failed: {}", log::strerror(&e));
        return state.finish(1);
    }

    let pid = std::process::id();
    if let (Some(name), Some(path)) = (opts.pid_file.as_deref(), pid_path) {
        if let Err(e) = daemon::write_pidfile(&path, pid) {
            log_error!("opening pid file '{name}' failed: {}", log::strerror(&e));
            return state.finish(1);
        }
        state.pid_file = Some(path);
    }

    let (sysname, release, machine) = daemon::uname();
    loga!("{NAME_VERSION} built for {sysname} {release} {machine} started on pid {pid}");
    loga!(
        "run, rabbit run / dig that hole, forget the sun / and when at last the work is done / don't sit down / it's time to dig another one"
    );
    daemon::raise_nofile_limit();

    let conf = match conf {
        Some(c) => c,
        None => match Conf::load(&opts.conf_file) {
            Ok(c) => c,
            Err(e) => {
                log_conf_error(&e, &opts.conf_file);
                return state.finish(1);
            }
        },
    };

    let settings = Settings {
        mbuf_size: opts.mbuf_size,
        stats_addr: opts.stats_addr,
        stats_port: opts.stats_port,
        stats_interval_ms: opts.stats_interval_ms,
        conf_path: Some(conf_path),
    };
    match core::run(conf, settings) {
        Ok(()) => state.finish(0),
        Err(reason) => {
            log_error!("{reason}");
            state.finish(1)
        }
    }
}
