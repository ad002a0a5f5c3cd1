//! nutcracker: a drop-in replacement for twemproxy (nutcracker 0.5.0).
//!
//! The binary (`main.rs`) parses the command line, loads the configuration
//! and hands both to [`core::run`], which owns the one event loop. The
//! modules are public so that integration tests and fuzz targets can reach
//! the parsers and the key-placement code directly.

pub mod cli;
pub mod client;
pub mod conf;
pub mod conn;
pub mod core;
pub mod daemon;
pub mod fragment;
pub mod hashkit;
pub mod id;
pub mod inbuf;
pub mod listener;
pub mod log;
pub mod mbuf;
pub mod metrics;
pub mod migrate;
pub mod msg;
pub mod net;
pub mod plan;
pub mod probe;
pub mod proto;
pub mod reload;
pub mod repair;
pub mod request;
pub mod resolver;
pub mod sentinel;
pub mod server;
pub mod signal;
pub mod split;
pub mod stats;
pub mod timer;
pub mod topology;
pub mod transaction;
