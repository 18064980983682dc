#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprint};

#[entry]
fn main() -> ! {
    hprint!("hello from cortex-m4f: {:?}\nPASS\n", batchnorm::Shape::rows(2, 3).len());
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprint!("PANIC: {}\n", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
