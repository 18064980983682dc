//! Line-buffered semihosting console (one SYS_WRITE per line) and the panic handler.

use core::fmt;
use cortex_m_semihosting::{debug, hio};

pub struct Console {
    out: Option<hio::HostStream>,
    buf: [u8; 128],
    len: usize,
}

impl Console {
    pub fn new() -> Console {
        Console {
            out: hio::hstdout().ok(),
            buf: [0; 128],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.write_all(&self.buf[..self.len]);
        }
        self.len = 0;
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' || self.len == self.buf.len() {
                self.flush();
            }
        }
        Ok(())
    }
}

pub fn exit(status: i32) -> ! {
    debug::exit(if status == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut c = Console::new();
    let _ = fmt::Write::write_fmt(&mut c, format_args!("\nPANIC: {}\nFAIL\n", info));
    c.flush();
    exit(1)
}

// A fault (bad address, undefined instruction, unaligned access the core rejects, ...)
// ends the run with status 1 instead of spinning until the time limit.
#[cortex_m_rt::exception]
unsafe fn HardFault(ef: &cortex_m_rt::ExceptionFrame) -> ! {
    let mut c = Console::new();
    let _ = fmt::Write::write_fmt(&mut c, format_args!("\nHARDFAULT: {:?}\nFAIL\n", ef));
    c.flush();
    exit(1)
}

#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    let mut c = Console::new();
    let _ = fmt::Write::write_fmt(
        &mut c,
        format_args!("\nUNEXPECTED EXCEPTION/IRQ {}\nFAIL\n", irqn),
    );
    c.flush();
    exit(1)
}
