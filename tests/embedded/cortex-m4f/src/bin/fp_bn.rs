//! Footprint firmware (batch norm): see common/footprint.rs. No formatting, no printing.
#![no_std]
#![no_main]

#[path = "../../../common/footprint.rs"]
mod footprint;

use cortex_m_semihosting::debug;

#[cortex_m_rt::entry]
fn main() -> ! {
    let ok = footprint::body(footprint::Uses::BatchNorms);
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
