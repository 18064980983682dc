//! A one-lane "vector" for targets without SIMD registers (Cortex-M4F): the FPU's
//! scalar f32, with the few operations of `wide`'s vectors the kernels use.
//!
//! Four lanes there (an array of four f32, as `wide` falls back to) bought nothing the
//! FPU could overlap and compiled every element loop and tail four times over.

use core::ops::{Add, AddAssign, Mul, Sub};

/// One f32 as a vector of one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(transparent)]
pub(crate) struct F32x1(f32);

impl F32x1 {
    pub(crate) const ZERO: F32x1 = F32x1(0.0);

    #[inline(always)]
    pub(crate) fn new([x]: [f32; 1]) -> F32x1 {
        F32x1(x)
    }

    #[inline(always)]
    pub(crate) fn splat(x: f32) -> F32x1 {
        F32x1(x)
    }

    #[inline(always)]
    pub(crate) fn to_array(self) -> [f32; 1] {
        [self.0]
    }

    #[inline(always)]
    pub(crate) fn as_array(&self) -> &[f32; 1] {
        core::array::from_ref(&self.0)
    }

    /// `self·m + a`, rounded twice, as `wide` computes it where there is no SIMD.
    #[inline(always)]
    pub(crate) fn mul_add(self, m: F32x1, a: F32x1) -> F32x1 {
        F32x1(self.0 * m.0 + a.0)
    }

    #[inline(always)]
    pub(crate) fn simd_lt(self, o: F32x1) -> F32x1 {
        F32x1::mask(self.0 < o.0)
    }

    #[inline(always)]
    pub(crate) fn simd_le(self, o: F32x1) -> F32x1 {
        F32x1::mask(self.0 <= o.0)
    }

    #[inline(always)]
    pub(crate) fn simd_gt(self, o: F32x1) -> F32x1 {
        F32x1::mask(self.0 > o.0)
    }

    /// `t`'s bits where `self`'s are set, else `f`'s (`self` a mask of a comparison).
    #[inline(always)]
    pub(crate) fn bitselect(self, t: F32x1, f: F32x1) -> F32x1 {
        let m = self.0.to_bits();
        F32x1(f32::from_bits((t.0.to_bits() & m) | (f.0.to_bits() & !m)))
    }

    /// All bits set when `b`, else none, as a SIMD comparison's lane.
    #[inline(always)]
    fn mask(b: bool) -> F32x1 {
        F32x1(f32::from_bits(if b { u32::MAX } else { 0 }))
    }
}

impl From<[f32; 1]> for F32x1 {
    #[inline(always)]
    fn from(x: [f32; 1]) -> F32x1 {
        F32x1::new(x)
    }
}

/// The first value (the engine passes exactly one).
impl From<&[f32]> for F32x1 {
    #[inline(always)]
    fn from(x: &[f32]) -> F32x1 {
        F32x1(x.first().copied().unwrap_or(0.0))
    }
}

impl Add for F32x1 {
    type Output = F32x1;
    #[inline(always)]
    fn add(self, o: F32x1) -> F32x1 {
        F32x1(self.0 + o.0)
    }
}

impl Sub for F32x1 {
    type Output = F32x1;
    #[inline(always)]
    fn sub(self, o: F32x1) -> F32x1 {
        F32x1(self.0 - o.0)
    }
}

impl Mul for F32x1 {
    type Output = F32x1;
    #[inline(always)]
    fn mul(self, o: F32x1) -> F32x1 {
        F32x1(self.0 * o.0)
    }
}

impl AddAssign for F32x1 {
    #[inline(always)]
    fn add_assign(&mut self, o: F32x1) {
        self.0 += o.0;
    }
}
