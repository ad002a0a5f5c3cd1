//! Fuzzes the YAML configuration loader (`Conf::parse_bytes` /
//! `parse_str`) with the invariant checks of `nutcracker::fuzzcheck::config`,
//! which the regression test `tests/fuzz_regressions.rs` also runs on saved
//! crash inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nutcracker::fuzzcheck::config(data);
});
