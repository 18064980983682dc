//! Minimal bare-metal runtime for QEMU `virt` (Cortex-A53) at EL1, MMU off:
//! an entry point, semihosting output and exit. Each binary brings its panic handler.

use core::arch::{asm, global_asm};
use core::fmt;

// Entry: enable FP/SIMD (CPACR_EL1.FPEN = 0b11, or the first FP instruction traps),
// set the stack pointer, zero .bss, call `rust_main`. QEMU `virt` with `-kernel ELF`
// starts a single core at EL1 at the ELF entry.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    ldr     x0, =__stack_top
    mov     sp, x0
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  bl      rust_main
3:  wfe
    b       3b
"#
);

const SYS_WRITE0: u64 = 0x04;
const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn semihost(op: u64, arg: u64) -> u64 {
    let ret;
    // SAFETY: the semihosting trap (`hlt #0xf000`) reads `arg` as the operation
    // defines; every caller passes a pointer that is valid for it.
    unsafe {
        asm!("hlt #0xf000", inout("x0") op => ret, in("x1") arg, options(nostack));
    }
    ret
}

/// Ends the QEMU run with `status` as its exit status.
pub fn exit(status: u32) -> ! {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, status as u64];
    semihost(SYS_EXIT, block.as_ptr() as u64);
    loop {
        // SAFETY: `wfe` only waits; reached only if the host ignored SYS_EXIT.
        unsafe { asm!("wfe") };
    }
}

/// Semihosting console, line-buffered (one trap per line instead of one per byte).
pub struct Console {
    buf: [u8; 128],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Console {
            buf: [0; 128],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            self.buf[self.len] = 0;
            semihost(SYS_WRITE0, self.buf.as_ptr() as u64);
            self.len = 0;
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == 0 {
                continue;
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' || self.len == self.buf.len() - 1 {
                self.flush();
            }
        }
        Ok(())
    }
}
