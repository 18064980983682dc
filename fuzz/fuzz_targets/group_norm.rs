//! `GroupNorm::forward`, `forward_in_place` and `backward`, both layouts, groups that
//! divide the channels or not (see `run_group_norm` in src/lib.rs for what is checked
//! and the byte layout).
#![no_main]

use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run_group_norm(data, false));
