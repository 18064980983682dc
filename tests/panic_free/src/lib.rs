//! Thin wrappers around every public entry point of `batchnorm`, for run.sh's
//! link-time panic check. The list is in `entry_points.rs`.
#![no_std]

use core::panic::PanicInfo;

// Defined nowhere: a wrapper from which a panic is reachable after optimisation
// references it (through the handler below), and run.sh's link of that wrapper fails.
// `safe` keeps the call outside an `unsafe` block; it is never called at run time.
unsafe extern "C" {
    safe fn batchnorm_panic_free_panic_is_reachable() -> !;
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    batchnorm_panic_free_panic_is_reachable()
}

/// Defines one exported function per entry point: `#[no_mangle]` keeps its symbol,
/// so the optimiser cannot assume anything about its arguments (they are any value a
/// caller could pass), and its name is the one run.sh reports.
macro_rules! entry_points {
    ($($(#[$doc:meta])* fn $name:ident $(<$($lt:lifetime),*>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block)*) => {
        $(
            $(#[$doc])*
            // A wrapper takes what its entry point takes, however many.
            #[allow(clippy::too_many_arguments)]
            #[unsafe(no_mangle)]
            pub fn $name $(<$($lt),*>)? ($($arg: $ty),*) $(-> $ret)? $body
        )*
    };
}

mod entry_points;

/// The check's own control, linked like an entry point: an index the optimiser
/// cannot prove in range. run.sh requires that this one IS reported, so a broken
/// check (handler optimised out, symbol resolved, sections merged) cannot pass.
#[unsafe(no_mangle)]
pub fn pf_control_must_panic(x: &[f32], i: usize) -> f32 {
    x[i]
}
