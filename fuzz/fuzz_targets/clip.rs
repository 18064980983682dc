//! `clip_grad_value`, `clip_grad_norm` and `total_norm` (see `run_clip` in src/lib.rs
//! for what is checked and the byte layout).
#![no_main]

use batchnorm_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run_clip(data));
