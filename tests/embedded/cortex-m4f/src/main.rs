//! batchnorm self-check for Cortex-M4F (thumbv7em-none-eabihf) under QEMU mps2-an386.
#![no_std]
#![no_main]

mod console;

#[path = "../../common/checks.rs"]
mod checks;
#[path = "../../common/data.rs"]
mod data;
#[path = "../../common/expected.rs"]
mod expected;
#[path = "../../common/reference.rs"]
mod reference;
#[path = "../../common/scenario.rs"]
mod scenario;
#[path = "../../common/stack.rs"]
mod stack;

use core::fmt::Write;
use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    let mut out = console::Console::new();
    let _ = writeln!(
        out,
        "batchnorm self-check: thumbv7em-none-eabihf (Cortex-M4F), QEMU mps2-an386"
    );
    let failed = checks::run(&mut out);
    let _ = writeln!(out, "{}", if failed == 0 { "PASS" } else { "FAIL" });
    out.flush();
    console::exit(if failed == 0 { 0 } else { 1 })
}
