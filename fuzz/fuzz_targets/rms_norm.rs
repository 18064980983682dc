//! `RmsNorm::forward`, `forward_in_place` and `backward` (see `run_row_norm` in
//! src/lib.rs for what is checked and the byte layout).
#![no_main]

use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run_row_norm(data, true));
