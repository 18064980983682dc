//! `InstanceNorm::forward`, `forward_in_place` (with and without running statistics)
//! and `backward`, both layouts (see `run_group_norm` in src/lib.rs for what is
//! checked and the byte layout).
#![no_main]

use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run_group_norm(data, true));
