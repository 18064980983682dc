//! Footprint firmware (batch norm): see common/footprint.rs. No formatting, no printing.
#![no_std]
#![no_main]

#[path = "../../../common/footprint.rs"]
mod footprint;
#[path = "../rt.rs"]
#[allow(dead_code)]
mod rt;

#[no_mangle]
extern "C" fn rust_main() -> ! {
    let ok = footprint::body(footprint::Uses::BatchNorms);
    rt::exit(if ok { 0 } else { 1 })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    rt::exit(1)
}
