// Stack high-water mark of one call: paint the stack below the current frame with a
// pattern, make the call, and find the deepest word that changed. Single core, no
// interrupts enabled: nothing else writes below the stack pointer meanwhile.

/// How far below the caller's frame the stack is painted.
pub const DEPTH: usize = 64 * 1024;
/// Left unpainted just below the stack pointer read in `used`: LLVM may shrink-wrap
/// `used` so that its own registers are pushed after the read (seen on Thumb), and
/// those must not be overwritten.
pub const GUARD: usize = 128;
const PAINT: u32 = 0x5A5A_C3C3;

#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer into a register; `mov Rd, sp` is valid in both
    // Thumb-2 and A64.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

#[inline(never)]
fn call<F: FnOnce()>(f: F) {
    f()
}

/// Bytes of stack `f` used below the stack pointer of this function (the call into
/// `f` included: see [`baseline`]); at least [`GUARD`], at most [`DEPTH`].
#[inline(never)]
pub fn used<F: FnOnce()>(f: F) -> usize {
    let sp0 = sp();
    let top = (sp0 - GUARD) & !15;
    let bottom = sp0 - DEPTH;
    let mut p = bottom;
    while p < top {
        // SAFETY: [bottom, top) is free stack below this frame and its saved registers
        // (the stacks are ≥ 1 MiB); nothing else runs concurrently.
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
    call(f);
    let mut p = bottom;
    // SAFETY: as above; reading back the painted words.
    while p < top && unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    sp0 - p
}

/// What [`used`] reports for a call that does nothing: the measuring overhead.
pub fn baseline() -> usize {
    used(|| {})
}
