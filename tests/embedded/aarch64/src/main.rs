//! batchnorm self-check for AArch64 (Cortex-A53, NEON) under QEMU `virt`.
#![no_std]
#![no_main]

mod rt;

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

#[no_mangle]
extern "C" fn rust_main() -> ! {
    let mut out = rt::Console::new();
    let _ = writeln!(
        out,
        "batchnorm self-check: aarch64-unknown-none (Cortex-A53, NEON), QEMU virt"
    );
    let failed = checks::run(&mut out);
    let _ = writeln!(out, "{}", if failed == 0 { "PASS" } else { "FAIL" });
    out.flush();
    rt::exit(if failed == 0 { 0 } else { 1 })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut c = rt::Console::new();
    let _ = writeln!(c, "\nPANIC: {}\nFAIL", info);
    c.flush();
    rt::exit(1)
}
