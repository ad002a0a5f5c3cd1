//! Fuzzes the memcached reply parser (`McRspParser`) with the invariant checks of
//! `nutcracker::fuzzcheck::memcache_response`, which the regression test
//! `tests/fuzz_regressions.rs` also runs on saved crash inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nutcracker::fuzzcheck::{self, Options};
use std::sync::LazyLock;

/// Strict unless `NUTCRACKER_FUZZ_ALLOW` relaxes a check (see fuzz/README.md).
static OPTIONS: LazyLock<Options> = LazyLock::new(Options::from_env);

fuzz_target!(|data: &[u8]| {
    fuzzcheck::memcache_response_with(data, *OPTIONS);
});
