#![no_std]
#![no_main]

mod rt;

use core::fmt::Write;

#[no_mangle]
extern "C" fn rust_main() -> ! {
    let mut out = rt::Console::new();
    let _ = writeln!(out, "hello from aarch64: {:?}\nPASS", batchnorm::Shape::rows(2, 3).len());
    out.flush();
    rt::exit(0)
}
