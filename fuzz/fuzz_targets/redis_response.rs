//! Fuzzes the redis reply parser (`RspParser`) with the invariant checks of
//! `fuzz/check.rs` (`redis_response`), which the regression test
//! `tests/fuzz_regressions.rs` also runs on saved crash inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "../check.rs"]
#[allow(dead_code)]
mod fuzzcheck;

use fuzzcheck::Options;
use std::sync::LazyLock;

/// Strict unless `NUTCRACKER_FUZZ_ALLOW` relaxes a check (see fuzz/README.md).
static OPTIONS: LazyLock<Options> = LazyLock::new(Options::from_env);

fuzz_target!(|data: &[u8]| {
    fuzzcheck::redis_response_with(data, *OPTIONS);
});
