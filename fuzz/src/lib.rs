//! What the fuzz targets share: a byte decoder for shapes, lengths, scalars and
//! tensors; output buffers with guard cells and a sentinel fill; the expected-error
//! oracle; and the f64 reference with its tolerance model (with what the fused ops add
//! after batch norm, and Batch Renormalization's corrections).
//!
//! # Tolerance model
//!
//! `U = 2⁻²⁴` is the unit roundoff of f32. The kernels accumulate per lane in f32 for
//! at most 64 values (one block) and merge blocks in f64, after subtracting a shift
//! `k` that lies in the channel's range (its first finite value, later the running
//! mean). So with `dev = max|x − mean|` over a channel of `n` values, first-order
//! rounding bounds are:
//!
//! - mean: `≤ 64·U·avg|x − k| ≤ 128·U·dev`; we allow `256·U·dev` ([`tol_mean`]);
//! - `m2 = Σ(x − mean)²`: `Σd²` carries `≤ 66·U·Σd²` and the `(Σd)²/n` correction
//!   `≤ 128·U·Σ|d|·|Σd|/n`, with `Σd² ≤ n·(2·dev)²`, so `≤ 776·U·n·dev²`; we allow
//!   `1024·U·(m2 + n·dev²)` ([`tol_m2`]).
//!
//! Every other quantity is propagated from these to first order plus a few `U` of the
//! magnitudes that enter its last operations (see the targets). A channel is checked
//! against the reference only when its inputs are finite and moderate (`|v| ≤ 1e15`,
//! so no f32 square of a deviation can overflow) and the results are well inside f32
//! range, and, for outputs that divide by `√(var + eps)`, when the variance is
//! determined to better than 0.1 % (`½·tol_var/(var + eps) ≤ 1e-3`). Everything else
//! still has to be written, must not panic, and keeps its guard cells.
//!
//! With these bounds a missed element, a doubled element or a value read from the
//! wrong channel or position changes `m2` by about `m2/n`, which exceeds the tolerance
//! (`≈ 1e-4·m2` for evenly spread data) for the channel sizes the targets generate.

use arbitrary::Unstructured;
use batchnorm::{Correction, Error, Layout, Momentum, Running, Shape};

/// How a train step updates running statistics: momentum, correction, and
/// `batches_tracked` before the step.
pub type Update = (Momentum, Correction, u64);

/// Running statistics over `mean`, `var` with `update`'s settings.
pub fn running_of<'a>(mean: &'a mut [f32], var: &'a mut [f32], update: Update) -> Running<'a> {
    let (momentum, correction, batches_tracked) = update;
    Running {
        mean,
        var,
        momentum,
        correction,
        batches_tracked,
    }
}

/// The factor `f` of `update`: the exponential momentum, or `1/(t + 1)`.
pub fn factor(update: Update) -> f64 {
    match update.0 {
        Momentum::Exponential(f) => f64::from(f),
        Momentum::Cumulative => 1.0 / (update.2 as f64 + 1.0),
    }
}

/// The fewest values per channel (or instance) an update with `correction` needs.
pub fn needed(correction: Correction) -> usize {
    match correction {
        Correction::Unbiased => 2,
        Correction::Biased => 1,
    }
}

/// `batches_tracked` after a call with running statistics: one more when it succeeded
/// (saturating), unchanged when it failed.
pub fn check_counted(after: Option<u64>, update: Update, ok: bool) {
    if let Some(after) = after {
        let want = if ok {
            update.2.saturating_add(1)
        } else {
            update.2
        };
        assert_eq!(after, want, "batches_tracked after the call (ok: {ok})");
    }
}

/// f32 unit roundoff.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;
/// Absolute floor of every tolerance (covers subnormal rounding of sums).
pub const TINY: f64 = 1e-40;
/// The absolute rounding error of an f32 in the subnormal range (half its spacing,
/// rounded up): a per-channel constant rounded to f32 is off by `U·|v| + SUB`.
pub const SUB: f64 = 1.5e-45;
/// Cap on the elements of a generated tensor.
pub const MAX_ELEMS: usize = 1 << 15;
/// Lengths the decoder is willing to allocate.
pub const MAX_ALLOC: usize = 1 << 16;
/// Guard cells on each side of an output buffer.
pub const GUARDS: usize = 8;
/// A signalling NaN (arithmetic never produces one) marking guard cells.
pub const GUARD_BITS: u32 = 0xff80_6a5d;
/// A signalling NaN marking output cells not yet written.
pub const SENTINEL_BITS: u32 = 0x7fa0_beef;
/// Largest magnitude of an input value for reference checks.
pub const MODERATE: f64 = 1e15;
/// Largest magnitude of a reference result for reference checks.
pub const RESULT_MAX: f64 = 1e30;

// ---------------------------------------------------------------- decoding

/// Reads the fuzz input; past its end every read gives zeros.
pub struct Dec<'a>(pub Unstructured<'a>);

impl<'a> Dec<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Dec(Unstructured::new(data))
    }
    pub fn u8(&mut self) -> u8 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub fn u32(&mut self) -> u32 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub fn u64(&mut self) -> u64 {
        self.0.arbitrary().unwrap_or(0)
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// Any f32 bits, except the two marker NaNs.
    pub fn raw_f32(&mut self) -> f32 {
        clean(f32::from_bits(self.u32()))
    }
    pub fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }

    /// A shape: mostly small (at most [`MAX_ELEMS`] elements), rarely with huge
    /// dimensions (so that products overflow or a zero dimension hides a huge one).
    pub fn shape(&mut self) -> Shape {
        let mode = self.u8();
        let layout = if self.bool() {
            Layout::ChannelsLast
        } else {
            Layout::ChannelsFirst
        };
        let (batch, channels, spatial) = if mode >= 248 {
            const HUGE: [usize; 16] = [
                0,
                1,
                2,
                3,
                7,
                1 << 16,
                1 << 31,
                1 << 32,
                (1 << 32) + 1,
                1 << 40,
                1 << 62,
                usize::MAX / 3,
                usize::MAX / 2 + 1,
                usize::MAX - 1,
                usize::MAX,
                5,
            ];
            let mut pick = || HUGE[usize::from(self.u8()) % HUGE.len()];
            (pick(), pick(), pick())
        } else {
            // Mostly a few hundred elements; rarely (mode ≥ 240) long channels, so that
            // the kernels' f64 block merges (every 2048 values) are exercised.
            let big = mode >= 240;
            let batch = usize::from(self.u8()) % if big { 256 } else { 9 };
            let cb = self.u8();
            let channels = match (big, cb) {
                (true, _) => usize::from(cb) % 5,
                (false, 0..=159) => usize::from(cb) % 10,
                (false, _) => usize::from(cb) % 72,
            };
            let s = self.u8();
            let spatial = match s {
                0..=159 => usize::from(s) % 10,
                160..=219 => usize::from(s) % 40,
                _ => [49, 64, 100, 256, 1000, 3000, 2049, 4096][usize::from(s) % 8],
            };
            let cap = if big { MAX_ELEMS } else { MAX_ELEMS / 8 };
            let (mut b, mut sp) = (batch, spatial);
            while b * channels * sp > cap {
                if sp > b {
                    sp /= 2;
                } else {
                    b /= 2;
                }
            }
            (b, channels, sp)
        };
        Shape {
            batch,
            channels,
            spatial,
            layout,
        }
    }

    /// A buffer length: `expected` mostly, else off by one, 0, or small and random.
    /// An `expected` too large to allocate (or overflowing) gives a small length.
    pub fn len(&mut self, expected: Option<usize>) -> usize {
        let f = self.u8();
        let e = match expected {
            Some(e) if e <= MAX_ALLOC => e,
            _ => return usize::from(f % 17),
        };
        match f {
            0..=239 => e,
            240..=243 => e.checked_sub(1).unwrap_or(1),
            244..=247 => e + 1,
            248..=250 => 0,
            _ => usize::from(f % 19),
        }
    }

    /// eps: usually valid (including 0 and subnormal), sometimes out of range.
    pub fn eps(&mut self) -> f32 {
        const T: [f32; 16] = [
            1e-5,
            0.0,
            1e-3,
            1.0,
            1e-45,
            1e-12,
            0.1,
            1e-5,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            -1e-5,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::NAN,
            1e6,
        ];
        let b = self.u8();
        if b >= 240 {
            self.raw_f32()
        } else {
            T[usize::from(b) % 16]
        }
    }

    /// An exponential momentum factor: usually in [0, 1], sometimes not.
    pub fn momentum_factor(&mut self) -> f32 {
        const T: [f32; 16] = [
            0.1,
            0.0,
            1.0,
            0.5,
            0.01,
            1e-45,
            0.999_999_94,
            0.1,
            f32::NAN,
            -0.0,
            1.000_000_1,
            -1e-45,
            f32::INFINITY,
            2.0,
            -0.1,
            f32::NEG_INFINITY,
        ];
        let b = self.u8();
        if b >= 240 {
            self.raw_f32()
        } else {
            T[usize::from(b) % 16]
        }
    }

    /// Batch Renormalization's `(rmax, dmax)`: usually valid (the paper's schedule, no
    /// clipping at all, plain batch norm), sometimes below the limits or NaN.
    pub fn renorm_limits(&mut self) -> (f32, f32) {
        const RMAX: [f32; 16] = [
            1.0,
            3.0,
            1.5,
            f32::INFINITY,
            1.0,
            1.000_000_1,
            2.0,
            1e30,
            3.0,
            0.999_999_94,
            f32::NAN,
            0.5,
            -1.0,
            f32::NEG_INFINITY,
            0.0,
            1.25,
        ];
        const DMAX: [f32; 16] = [
            0.0,
            5.0,
            0.5,
            f32::INFINITY,
            -0.0,
            1e-45,
            1.0,
            1e30,
            5.0,
            -1e-45,
            f32::NAN,
            -1.0,
            f32::NEG_INFINITY,
            2.0,
            0.0,
            0.125,
        ];
        let (a, b) = (self.u8(), self.u8());
        let rmax = if a >= 240 {
            self.raw_f32()
        } else {
            RMAX[usize::from(a) % 16]
        };
        let dmax = if b >= 240 {
            self.raw_f32()
        } else {
            DMAX[usize::from(b) % 16]
        };
        (rmax, dmax)
    }

    /// A value generator for one tensor.
    pub fn values(&mut self) -> Gen {
        const OFFSET: [f32; 16] = [
            0.0, 1.0, -1.0, 0.5, 3.0, -7.0, 100.0, 1e3, -1e4, 1e4, 1e5, 1e6, -3e7, 1e8, 1e-20, 0.0,
        ];
        const SPREAD: [f32; 16] = [
            1.0, 0.25, 1e-3, 1e-6, 10.0, 100.0, 1e4, 1e-30, 0.0, 2.0, 1.0, 1e-2, 3.0, 1e-4, 1e6,
            1.0,
        ];
        let seed = self.u64();
        let kind = self.u8();
        let o = self.u8();
        let offset = if o >= 250 {
            self.raw_f32()
        } else {
            OFFSET[usize::from(o) % 16]
        };
        let s = self.u8();
        let spread = if s >= 250 {
            self.raw_f32()
        } else {
            SPREAD[usize::from(s) % 16]
        };
        let ns = self.u8();
        let nspecial = if ns >= 192 { usize::from(ns % 5) } else { 0 };
        let mut specials = [(0u16, 0.0f32); 4];
        for sp in specials.iter_mut().take(nspecial) {
            let pos = self.u16();
            let which = self.u8();
            *sp = (pos, special(which, self));
        }
        Gen {
            seed,
            kind,
            offset,
            spread,
            specials,
            nspecial,
        }
    }
}

fn special(which: u8, d: &mut Dec) -> f32 {
    match which % 16 {
        0 => f32::NAN,
        1 => -f32::NAN,
        2 => f32::from_bits(0x7fc0_1234),
        3 => f32::INFINITY,
        4 => f32::NEG_INFINITY,
        5 => f32::from_bits(1),
        6 => -f32::from_bits(1),
        7 => f32::MAX,
        8 => -f32::MAX,
        9 => f32::MIN_POSITIVE,
        10 => 0.0,
        11 => -0.0,
        12 => 1e30,
        13 => -1e30,
        14 => f32::from_bits(0x7f80_0001),
        _ => d.raw_f32(),
    }
}

/// The marker NaNs never appear as data.
pub fn clean(v: f32) -> f32 {
    let b = v.to_bits();
    if b == GUARD_BITS || b == SENTINEL_BITS {
        f32::NAN
    } else {
        v
    }
}

/// Fills a tensor from a seed, a distribution and a few injected special values.
#[derive(Clone, Debug)]
pub struct Gen {
    seed: u64,
    kind: u8,
    offset: f32,
    spread: f32,
    specials: [(u16, f32); 4],
    nspecial: usize,
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Gen {
    /// `n` values of stream `k` (streams differ only in their random numbers).
    pub fn fill_stream(&self, n: usize, k: u64) -> Vec<f32> {
        Gen {
            seed: self.seed ^ k.wrapping_mul(0x2545_f491_4f6c_dd1d),
            ..self.clone()
        }
        .fill(n)
    }

    pub fn fill(&self, n: usize) -> Vec<f32> {
        let mut s = self.seed;
        let (o, sp) = (f64::from(self.offset), f64::from(self.spread));
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                let r = splitmix(&mut s);
                let u = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0; // [-1, 1)
                let x = match self.kind % 10 {
                    0..=2 => o + sp * u,
                    3 => o + sp * ((r % 17) as f64 - 8.0), // ties
                    4 => o,                                // constant
                    5 => f32::from_bits(r as u32) as f64,  // anything
                    6 => {
                        // wide dynamic range
                        let e = (r >> 3) % 61;
                        o + sp * u * f64::powi(2.0, e as i32 - 30)
                    }
                    7 => f32::from_bits((r as u32) & 0x807f_ffff) as f64, // subnormal
                    8 => {
                        // huge
                        let m = f64::from(f32::MAX) * (0.03 + 0.97 * u.abs());
                        if r & 1 == 0 {
                            m
                        } else {
                            -m
                        }
                    }
                    _ => {
                        // alternating around ±offset
                        if r & 1 == 0 {
                            o + sp * u
                        } else {
                            -o + sp * u
                        }
                    }
                };
                clean(x as f32)
            })
            .collect();
        if n > 0 {
            for &(pos, val) in &self.specials[..self.nspecial] {
                v[usize::from(pos) % n] = val;
            }
        }
        v
    }
}

/// Element `(b, c, s)` of `shape` in its flat slice.
pub fn index(shape: Shape, b: usize, c: usize, s: usize) -> usize {
    match shape.layout {
        Layout::ChannelsFirst => (b * shape.channels + c) * shape.spatial + s,
        Layout::ChannelsLast => (b * shape.spatial + s) * shape.channels + c,
    }
}

/// The flat indices of channel `c`, in (batch, spatial) order.
pub fn channel_indices(shape: Shape, c: usize) -> impl Iterator<Item = usize> + Clone {
    // No batch loop at all when spatial is 0: a huge batch must not cost time here.
    let batch = if shape.spatial == 0 { 0 } else { shape.batch };
    (0..batch).flat_map(move |b| (0..shape.spatial).map(move |s| index(shape, b, c, s)))
}

/// `shape.len()` as the oracle sees it.
pub fn expected_len(shape: Shape) -> Option<usize> {
    shape
        .batch
        .checked_mul(shape.spatial)?
        .checked_mul(shape.channels)
}

// ---------------------------------------------------------------- buffers

/// An output buffer: `GUARDS` guard cells, the body, `GUARDS` guard cells.
pub struct Buf(pub Vec<f32>);

impl Buf {
    /// A body of `n` sentinels.
    pub fn sentinel(n: usize) -> Buf {
        Buf::from(&vec![f32::from_bits(SENTINEL_BITS); n])
    }
    /// A body holding `vals`.
    pub fn from(vals: &[f32]) -> Buf {
        let g = f32::from_bits(GUARD_BITS);
        let mut v = vec![g; GUARDS];
        v.extend_from_slice(vals);
        v.extend(core::iter::repeat_n(g, GUARDS));
        Buf(v)
    }
    pub fn body(&self) -> &[f32] {
        &self.0[GUARDS..self.0.len() - GUARDS]
    }
    pub fn body_mut(&mut self) -> &mut [f32] {
        let n = self.0.len();
        &mut self.0[GUARDS..n - GUARDS]
    }
    pub fn bits(&self) -> Vec<u32> {
        self.0.iter().map(|v| v.to_bits()).collect()
    }
    /// Panics unless the guard cells are intact.
    pub fn assert_guards(&self, name: &str) {
        let n = self.0.len();
        for i in (0..GUARDS).chain(n - GUARDS..n) {
            assert_eq!(
                self.0[i].to_bits(),
                GUARD_BITS,
                "{name}: guard cell {i} overwritten"
            );
        }
    }
    /// Panics if any body cell still holds the sentinel.
    pub fn assert_written(&self, name: &str) {
        for (i, v) in self.body().iter().enumerate() {
            assert_ne!(v.to_bits(), SENTINEL_BITS, "{name}[{i}] not written");
        }
    }
    /// Panics unless bit-for-bit equal to `before`.
    pub fn assert_unchanged(&self, before: &[u32], name: &str) {
        assert_eq!(self.bits(), before, "{name} modified by a call that failed");
    }
}

/// An optional output buffer.
pub fn opt_body(b: &mut Option<Buf>) -> Option<&mut [f32]> {
    b.as_mut().map(|b| b.body_mut())
}

// ---------------------------------------------------------------- errors

/// Every error the arguments of one call deserve; the call must return one of them,
/// or `Ok` when there is none. `.1` holds errors that are permitted but not required
/// (for instance an overflowing stride of an empty tensor).
#[derive(Default, Debug)]
pub struct Expect(pub Vec<Error>, pub Vec<Error>);

impl Expect {
    pub fn len(&mut self, arg: &'static str, expected: Option<usize>, actual: usize) {
        match expected {
            Some(e) if e != actual => self.0.push(Error::Length {
                arg,
                expected: e,
                actual,
            }),
            _ => {}
        }
    }
    pub fn shape(&mut self, shape: Shape) -> Option<usize> {
        let len = expected_len(shape);
        if len.is_none() {
            self.0.push(Error::Overflow { arg: "x" });
        }
        len
    }
    pub fn eps(&mut self, eps: f32) {
        if !(eps.is_finite() && eps >= 0.0) {
            self.0.push(Error::Parameter {
                arg: "eps",
                value: eps,
            });
        }
    }
    pub fn push(&mut self, e: Error) {
        self.0.push(e);
    }
    pub fn permit(&mut self, e: Error) {
        self.1.push(e);
    }
    pub fn ok(&self) -> bool {
        self.0.is_empty()
    }
    /// Checks `r` against the oracle; true when the call succeeded.
    pub fn check(&self, r: Result<(), Error>, call: &str) -> bool {
        match r {
            Ok(()) => {
                assert!(
                    self.0.is_empty(),
                    "{call}: Ok, but the arguments deserve one of {:?}",
                    self.0
                );
                true
            }
            Err(e) => {
                assert!(
                    self.0.iter().chain(&self.1).any(|x| same_error(x, &e)),
                    "{call}: returned {e:?}, but the arguments deserve {}",
                    if self.0.is_empty() {
                        "Ok".into()
                    } else {
                        format!("one of {:?}", self.0)
                    }
                );
                false
            }
        }
    }
}

/// Error equality with parameter values compared by bits (NaN ≠ NaN otherwise).
pub fn same_error(a: &Error, b: &Error) -> bool {
    match (a, b) {
        (Error::Parameter { arg: a1, value: v1 }, Error::Parameter { arg: a2, value: v2 }) => {
            a1 == a2 && v1.to_bits() == v2.to_bits()
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------- reference

/// f64 statistics of one channel.
#[derive(Clone, Copy, Debug)]
pub struct ChanRef {
    pub n: usize,
    pub mean: f64,
    pub m2: f64,
    /// max |x − mean|
    pub dev: f64,
    /// all values finite and at most [`MODERATE`] in magnitude
    pub moderate: bool,
    /// all values finite
    pub finite: bool,
}

impl ChanRef {
    pub fn of(vals: impl Iterator<Item = f32> + Clone) -> ChanRef {
        let mut n = 0usize;
        let mut finite = true;
        let mut moderate = true;
        let mut k = None;
        let mut s = 0.0f64;
        for v in vals.clone() {
            n += 1;
            finite &= v.is_finite();
            moderate &= v.is_finite() && f64::from(v).abs() <= MODERATE;
            let k = *k.get_or_insert(f64::from(v));
            s += f64::from(v) - k;
        }
        if n == 0 {
            return ChanRef {
                n,
                mean: 0.0,
                m2: 0.0,
                dev: 0.0,
                moderate: true,
                finite: true,
            };
        }
        let k = k.unwrap_or(0.0);
        let mean = k + s / n as f64;
        let (mut m2, mut c, mut dev) = (0.0f64, 0.0f64, 0.0f64);
        for v in vals {
            let d = f64::from(v) - mean;
            m2 += d * d;
            c += d;
            dev = dev.max(d.abs());
        }
        // Two-pass with the usual correction term.
        let m2 = m2 - c * c / n as f64;
        ChanRef {
            n,
            mean: mean + c / n as f64,
            m2: m2.max(0.0),
            dev,
            moderate,
            finite,
        }
    }
    pub fn var(&self) -> f64 {
        self.m2 / self.n as f64
    }
}

/// Tolerance of a computed mean (see the module docs).
pub fn tol_mean(r: &ChanRef) -> f64 {
    256.0 * U * r.dev + TINY
}

/// Tolerance of a computed `m2` (see the module docs).
pub fn tol_m2(r: &ChanRef) -> f64 {
    1024.0 * U * (r.m2 + r.n as f64 * r.dev * r.dev) + TINY * r.n as f64
}

/// Panics unless `|got − want| ≤ tol`.
#[track_caller]
pub fn close(got: f64, want: f64, tol: f64, what: impl FnOnce() -> String) {
    let err = (got - want).abs();
    // Every result is rounded to f32 at last: allow its absolute error below 2⁻¹²⁶.
    let tol = tol + SUB;
    assert!(
        err <= tol,
        "{}: got {got:e}, reference {want:e}, error {err:e} > tolerance {tol:e}",
        what()
    );
}

/// Whether an f64 result is comfortably inside f32 range.
pub fn in_range(v: f64) -> bool {
    v.is_finite() && v.abs() <= RESULT_MAX
}

/// f32 bit equality that treats all NaNs as equal.
pub fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

// ---------------------------------------------------------------- fused ops

/// `torch.relu` in f32: negative values become +0, NaN and −0 stay.
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// What a fused forward applies after batch norm (`batchnorm::Fusion`), as the
/// reference and the unfused composition see it.
#[derive(Clone, Copy)]
pub enum Post<'a> {
    /// Plain batch norm.
    None,
    /// `relu(bn)`.
    Relu,
    /// `relu(bn + z)`.
    AddRelu(&'a [f32]),
}

impl core::fmt::Debug for Post<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(match self {
            Post::None => "BN",
            Post::Relu => "BN + ReLU",
            Post::AddRelu(_) => "BN + Add + ReLU",
        })
    }
}

impl Post<'_> {
    /// The output at element `i` from batch norm's f32 output `bn`, as PyTorch's
    /// unfused `F.relu(bn(x) + z)` computes it in f32.
    pub fn compose(&self, i: usize, bn: f32) -> f32 {
        match self {
            Post::None => bn,
            Post::Relu => relu(bn),
            Post::AddRelu(z) => relu(bn + z[i]),
        }
    }

    /// The reference and tolerance at element `i` from batch norm's (`want`, `tol`):
    /// the ReLU keeps the error bound, the add of `z` rounds once more. `None` when
    /// `z[i]` is not finite and moderate.
    pub fn apply(&self, i: usize, want: f64, tol: f64) -> Option<(f64, f64)> {
        match self {
            Post::None => Some((want, tol)),
            Post::Relu => Some((want.max(0.0), tol)),
            Post::AddRelu(z) => {
                let z = f64::from(z[i]);
                if !(z.is_finite() && z.abs() <= MODERATE) {
                    return None;
                }
                let v = want + z;
                Some((v.max(0.0), tol + U * (v.abs() + tol)))
            }
        }
    }

    /// Panics unless every value of `y` is NaN or not negative (±0 included): the range
    /// of a ReLU. Nothing to check for plain batch norm.
    pub fn assert_range(&self, y: &[f32], name: &str) {
        if let Post::None = self {
            return;
        }
        for (i, v) in y.iter().enumerate() {
            assert!(
                v.is_nan() || *v >= 0.0,
                "{name}[{i}] = {v:e} is not the output of a ReLU"
            );
        }
    }
}

/// The gradient behind a ReLU whose output is `y`, PyTorch's
/// `threshold_backward(dy, y, 0)`: +0 where `y ≤ 0` (whatever `dy` holds there), else
/// `dy` (a NaN `y` included).
pub fn relu_grad(dy: &[f32], y: &[f32]) -> Vec<f32> {
    dy.iter()
        .zip(y)
        .map(|(&d, &y)| if y <= 0.0 { 0.0 } else { d })
        .collect()
}

// ---------------------------------------------------------------- batch renorm

/// `v` within `[lo, hi]`; NaN stays NaN, except in a range of one point (`rmax = 1`,
/// `dmax = 0` is plain batch norm whatever the statistics).
pub fn clip(v: f64, lo: f64, hi: f64) -> f64 {
    if lo == hi || v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// Batch Renormalization's corrections in f64 from a channel's reference statistics
/// and the running ones before the update: `(r, d, σ)` with
/// `r = clip(√(var + eps)/σ, 1/rmax, rmax)`, `d = clip((mean − rm)/σ, −dmax, dmax)`,
/// `σ = √(rv + eps)`.
pub fn renorm_correction(
    r: &ChanRef,
    [rm, rv, eps]: [f32; 3],
    rmax: f32,
    dmax: f32,
) -> (f64, f64, f64) {
    let sigma = (f64::from(rv) + f64::from(eps)).sqrt();
    let (rmax, dmax) = (f64::from(rmax), f64::from(dmax));
    let rr = clip((r.var() + f64::from(eps)).sqrt() / sigma, 1.0 / rmax, rmax);
    let d = clip((r.mean - f64::from(rm)) / sigma, -dmax, dmax);
    (rr, d, sigma)
}

// ---------------------------------------------------------------- the neighbours

/// Row counts and lengths of a generated [`Rows`](batchnorm::Rows), rarely huge.
const HUGE_DIMS: [usize; 12] = [
    0,
    1,
    3,
    1 << 16,
    1 << 32,
    (1 << 32) + 1,
    1 << 62,
    usize::MAX / 3,
    usize::MAX / 2 + 1,
    usize::MAX - 1,
    usize::MAX,
    7,
];

impl Dec<'_> {
    /// Rows for a layer or RMS norm: lengths 0…99 and the 1, 3, 17, 4097 and
    /// a few powers of two around the SIMD widths; rarely (mode ≥ 240) many rows, and
    /// rarely (mode ≥ 248) huge counts whose product overflows or hides behind a 0.
    pub fn rows(&mut self) -> batchnorm::Rows {
        let mode = self.u8();
        if mode >= 248 {
            let mut pick = || HUGE_DIMS[usize::from(self.u8()) % HUGE_DIMS.len()];
            return batchnorm::Rows::new(pick(), pick());
        }
        let big = mode >= 240;
        let mut rows = usize::from(self.u8()) % if big { 256 } else { 33 };
        let l = self.u8();
        let mut len = match l {
            0..=127 => usize::from(l) % 20,
            128..=191 => usize::from(l) % 100,
            _ => [1, 3, 17, 4097, 16, 64, 65, 256][usize::from(l) % 8],
        };
        let cap = if big { MAX_ELEMS } else { MAX_ELEMS / 4 };
        while rows * len > cap {
            if len > rows {
                len /= 2;
            } else {
                rows /= 2;
            }
        }
        batchnorm::Rows::new(rows, len)
    }

    /// A group count for `channels`: mostly one of its divisors (1 and `channels`
    /// included), sometimes 0 or one that does not divide.
    pub fn groups(&mut self, channels: usize) -> usize {
        let b = self.u8();
        let pick = usize::from(self.u8());
        match b {
            0..=215 if channels == 0 => 1 + pick % 3,
            0..=215 if channels <= 4096 => {
                let divisors: Vec<usize> = (1..=channels)
                    .filter(|g| channels.is_multiple_of(*g))
                    .collect();
                divisors[pick % divisors.len()]
            }
            0..=215 => [1, channels][pick % 2],
            216..=231 => 0,
            _ => channels.saturating_add(1 + pick % 3) / (1 + pick % 2),
        }
    }

    /// A clipping limit (`max_norm`, `clip_value`): usually valid, sometimes NaN or
    /// negative.
    pub fn limit(&mut self) -> f32 {
        const T: [f32; 16] = [
            1.0,
            0.5,
            0.0,
            f32::INFINITY,
            1e-3,
            5.0,
            1e30,
            1e-30,
            -0.0,
            f32::NAN,
            -1.0,
            1e-45,
            f32::MAX,
            -f32::INFINITY,
            100.0,
            0.1,
        ];
        let b = self.u8();
        if b >= 240 {
            self.raw_f32()
        } else {
            T[usize::from(b) % 16]
        }
    }
}

/// How a normalization splits a tensor: its units (the flat indices normalized by one
/// mean and invstd: a row, a (sample, group)) and the γ/β index of every element.
pub struct Units {
    pub units: Vec<Vec<usize>>,
    pub param: Vec<usize>,
}

/// Layer and RMS norm: `rows` rows of `len`; γ, β per position of a row.
pub fn row_units(rows: usize, len: usize) -> Units {
    Units {
        units: (0..rows)
            .map(|r| (r * len..(r + 1) * len).collect())
            .collect(),
        param: (0..rows * len).map(|i| i % len).collect(),
    }
}

/// Group norm (instance norm: `groups = channels`) of a checked shape: units in
/// `[batch][groups]` order; γ, β per channel.
pub fn group_units(shape: Shape, groups: usize) -> Units {
    if expected_len(shape) == Some(0) {
        // No unit holds a value (a valid empty tensor has batch 0): nothing to walk,
        // however many channels.
        return Units {
            units: Vec::new(),
            param: Vec::new(),
        };
    }
    let per = shape.channels / groups;
    let mut units = Vec::with_capacity(shape.batch * groups);
    for n in 0..shape.batch {
        for g in 0..groups {
            units.push(
                (g * per..(g + 1) * per)
                    .flat_map(|c| (0..shape.spatial).map(move |s| index(shape, n, c, s)))
                    .collect(),
            );
        }
    }
    let mut param = vec![0; expected_len(shape).unwrap_or(0)];
    for c in 0..shape.channels {
        for i in channel_indices(shape, c) {
            param[i] = c;
        }
    }
    Units { units, param }
}

/// The statistics a unit is normalized by: its [`ChanRef`], and for RMS norm the mean
/// square in `var`'s place (with its tolerance).
fn unit_spread(r: &ChanRef, rms: bool) -> (f64, f64) {
    let n = r.n as f64;
    let (var, tv) = (r.var(), tol_m2(r) / n);
    if rms {
        // mean² + var: the mean's error enters doubled, times |mean|.
        let tm = tol_mean(r) + U * r.mean.abs();
        (
            var + r.mean * r.mean,
            tv + 2.0 * r.mean.abs() * tm + tm * tm,
        )
    } else {
        (var, tv)
    }
}

/// Checks a layer / RMS / group / instance norm forward against the f64 reference:
/// per unit the saved `mean` (absent for RMS norm) and `invstd`, and `y`; a unit with a
/// NaN or infinity must be NaN throughout (and its mean not finite).
#[allow(clippy::too_many_arguments)]
pub fn check_norm_forward(
    call: &str,
    x: &[f32],
    u: &Units,
    [gamma, beta]: [Option<&[f32]>; 2],
    eps: f32,
    rms: bool,
    y: &[f32],
    [mean, invstd]: [Option<&[f32]>; 2],
) {
    let eps64 = f64::from(eps);
    let invstd = invstd.unwrap_or(&[]);
    for (k, idx) in u.units.iter().enumerate() {
        let r = ChanRef::of(idx.iter().map(|&i| x[i]));
        let what = |s: &str| {
            format!(
                "{call}: {s}, unit {k} of {} values, eps {eps:e}, ref {r:?}",
                idx.len()
            )
        };
        if !r.finite {
            assert!(
                invstd[k].is_nan(),
                "{}: invstd {:e}",
                what("non-finite x"),
                invstd[k]
            );
            if let Some(m) = mean {
                assert!(
                    !m[k].is_finite(),
                    "{}: mean {:e}",
                    what("non-finite x"),
                    m[k]
                );
            }
            for &i in idx {
                assert!(
                    y[i].is_nan(),
                    "{}: y[{i}] = {:e}",
                    what("non-finite x"),
                    y[i]
                );
            }
            continue;
        }
        if !r.moderate {
            continue;
        }
        let tm = tol_mean(&r);
        let mu = if rms { 0.0 } else { r.mean };
        if let Some(m) = mean {
            close(f64::from(m[k]), r.mean, tm + U * r.mean.abs(), || {
                what("mean")
            });
        }
        let (spread, tv) = unit_spread(&r, rms);
        if spread + eps64 == 0.0 {
            assert_eq!(
                invstd[k],
                f32::INFINITY,
                "{}",
                what("invstd of spread + eps = 0")
            );
            for &i in idx {
                assert!(
                    y[i].is_nan(),
                    "{}: y[{i}] = {:e}",
                    what("spread + eps = 0"),
                    y[i]
                );
            }
            continue;
        }
        let inv = 1.0 / (spread + eps64).sqrt();
        let rv = 0.5 * tv / (spread + eps64);
        if rv > 1e-3 || !in_range(inv) {
            continue;
        }
        close(f64::from(invstd[k]), inv, inv * (rv + 2.0 * U), || {
            what("invstd")
        });
        // RMS norm subtracts nothing: its deviation is exact.
        let tmu = if rms { 0.0 } else { tm };
        for &i in idx {
            let j = u.param[i];
            let g = gamma.map_or(1.0, |g| f64::from(g[j]));
            let b = beta.map_or(0.0, |b| f64::from(b[j]));
            let s = g * inv;
            let dev = f64::from(x[i]) - mu;
            if !(in_range(s)
                && in_range(b)
                && in_range(s * r.dev.max(dev.abs()))
                && in_range(s * tmu))
            {
                continue;
            }
            let want = dev * s + b;
            let tol = s.abs() * tmu
                + (dev * s).abs() * (rv + 4.0 * U)
                + 4.0 * U * (b.abs() + want.abs())
                + SUB * (dev.abs() + 2.0)
                // x̂ is an f32 before γ multiplies it: a subnormal x̂ rounds absolutely.
                + SUB * g.abs() * (1.0 + inv)
                + TINY;
            close(f64::from(y[i]), want, tol, || {
                format!(
                    "{} x = {:e}, γ {g:e}, β {b:e}",
                    what(&format!("y[{i}]")),
                    x[i]
                )
            });
        }
    }
}

/// The saved statistics a forward would write for `x` (in f64, rounded to f32), for a
/// backward fed statistics that belong to its input.
pub fn stats_of(x: &[f32], u: &Units, eps: f32, rms: bool) -> (Vec<f32>, Vec<f32>) {
    u.units
        .iter()
        .map(|idx| {
            let r = ChanRef::of(idx.iter().map(|&i| x[i]));
            let (spread, _) = unit_spread(&r, rms);
            let mean = if rms { 0.0 } else { r.mean as f32 };
            (mean, (1.0 / (spread + f64::from(eps)).sqrt()) as f32)
        })
        .unzip()
}

/// Checks a unit norm's backward against the f64 reference from the statistics it was
/// given (`mean` absent for RMS norm): with `g = dy·γ`, per unit
/// `dx = invstd·g − invstd·Σg/m − (x − mean)·invstd³·Σg·(x − mean)/m` (no Σg term for
/// RMS norm), per parameter `dγ = Σdy·(x − mean)·invstd`, `dβ = Σdy`. `f32_adds`: how
/// many partial sums of one dγ/dβ value the kernel may add in f32.
#[allow(clippy::too_many_arguments)]
pub fn check_norm_backward(
    call: &str,
    [x, dy]: [&[f32]; 2],
    u: &Units,
    gamma: Option<&[f32]>,
    [mean, invstd]: [Option<&[f32]>; 2],
    [dx, dg, db]: [&[f32]; 3],
    params: usize,
    f32_adds: usize,
) {
    let invstd = invstd.unwrap_or(&[]);
    let gam = |j: usize| gamma.map_or(1.0, |g| f64::from(g[j]));
    // Only the parameters whose gradients were asked for (there may be a huge number
    // of them in an empty tensor).
    let params = params.min(dg.len().max(db.len()));
    // Per parameter: Σdy, Σ|dy|, Σdy·x̂, Σ|dy·x̂|, and whether all its terms are checkable.
    let mut psum = vec![[0.0f64; 5]; params];
    let mut pok = vec![true; params];
    for (k, idx) in u.units.iter().enumerate() {
        let mu = mean.map_or(0.0, |m| f64::from(m[k]));
        let inv = f64::from(invstd[k]);
        let m = idx.len() as f64;
        let what =
            |s: &str| format!("{call}: {s}, unit {k} of {m} values, mean {mu:e}, invstd {inv:e}");
        let (mut sg, mut ag, mut sgx, mut agx) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        // Σ|x − mean|: what the absolute rounding of a subnormal g = dy·γ costs Σg·(x − mean).
        let mut axc = 0.0f64;
        let mut moderate = mu.is_finite() && mu.abs() <= MODERATE && in_range(inv);
        for &i in idx {
            let (d, xc) = (f64::from(dy[i]), f64::from(x[i]) - mu);
            let j = u.param[i];
            // x̂ = (x − mean)·invstd is an f32 in the kernels: it must fit.
            let ok = dy[i].is_finite()
                && x[i].is_finite()
                && d.abs() <= MODERATE
                && f64::from(x[i]).abs() <= MODERATE
                && in_range(gam(j))
                && in_range(xc * inv);
            moderate &= ok;
            let g = d * gam(j);
            sg += g;
            ag += g.abs();
            sgx += g * xc;
            agx += (g * xc).abs();
            axc += xc.abs();
            let Some(p) = psum.get_mut(j) else {
                continue;
            };
            p[0] += d;
            p[1] += d.abs();
            p[2] += d * xc * inv;
            p[3] += (d * xc * inv).abs();
            // Its f32 product (or x̂) may be subnormal: an absolute rounding each.
            p[4] += SUB * (1.0 + d.abs()) * (1.0 + inv.abs());
            pok[j] &= ok && mu.is_finite() && mu.abs() <= MODERATE && in_range(inv);
        }
        if !(moderate && in_range(ag) && in_range(agx) && in_range(inv * inv * inv * agx)) {
            continue;
        }
        // f32 products of subnormal size round absolutely (SUB each), before γ
        // multiplies them (group norm) or in x̂ = (x − mean)·invstd (row norms).
        let gmax = idx
            .iter()
            .map(|&i| gam(u.param[i]).abs())
            .fold(0.0, f64::max);
        let sub = (m * SUB + TINY) * (1.0 + gmax);
        let (tsg, tsgx) = (
            128.0 * U * ag + sub,
            130.0 * U * agx + sub * (1.0 + 1.0 / inv.abs().max(1e-300)) + SUB * axc,
        );
        let c = if mean.is_some() { 1.0 } else { 0.0 };
        for &i in idx {
            let g = f64::from(dy[i]) * gam(u.param[i]);
            let xc = f64::from(x[i]) - mu;
            let t1 = inv * g;
            let t2 = -xc * inv * inv * inv * sgx / m;
            let t3 = -c * inv * sg / m;
            let want = t1 + t2 + t3;
            let tol = 4.0 * U * (t1.abs() + t2.abs() + t3.abs())
                + c * inv.abs() * tsg / m
                + (xc * inv * inv * inv).abs() * tsgx / m
                + SUB * (g.abs() + xc.abs() + 1.0) * (1.0 + inv.abs())
                + SUB * (1.0 + (inv * inv * sgx / m).abs() + gmax)
                + TINY;
            if !in_range(want) || !in_range(tol) {
                continue;
            }
            close(f64::from(dx[i]), want, tol, || {
                format!(
                    "{} (dy {:e}, x {:e})",
                    what(&format!("dx[{i}]")),
                    dy[i],
                    x[i]
                )
            });
        }
    }
    let adds = f32_adds as f64 + 2.0;
    for j in 0..params {
        let [sdy, ady, sdyx, adyx, sub] = psum[j];
        if !(pok[j] && in_range(ady) && in_range(adyx)) {
            continue;
        }
        let what = |s: &str| format!("{call}: {s}[{j}]");
        if !db.is_empty() {
            close(
                f64::from(db[j]),
                sdy,
                (128.0 + adds) * U * ady + TINY,
                || what("dbeta"),
            );
        }
        if !dg.is_empty() {
            close(
                f64::from(dg[j]),
                sdyx,
                (130.0 + adds) * U * adyx + sub + TINY,
                || what("dgamma"),
            );
        }
    }
}

/// Panics unless `a` and `b` hold the same bits (NaNs compared as NaN).
pub fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert!(same_f32(*p, *q), "{what}[{i}]: {p:e} vs {q:e}");
    }
}

/// A slice of `n` values for a statistic: `vals`, or a shorter or longer one padded
/// with `pad` (the lengths the decoder chose).
fn sized(vals: &[f32], n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = vals.iter().copied().take(n).collect();
    v.resize(n, 0.5);
    v
}

/// The `layer_norm` and `rms_norm` targets: `LayerNorm` / `RmsNorm` `forward`,
/// `forward_in_place` (which must give the out-of-place bits) and `backward`, with γ
/// (and β) present or not, dγ/dβ asked for or not, statistics of `x` or arbitrary.
///
/// Byte layout: `op` (bit 0 backward, bit 1 in place), rows, eps, the generators of x,
/// dy and the parameters, then whether γ, β (layer norm), dγ, dβ are present (`& 3 != 0`)
/// each followed by its length, the lengths of x, y or dy and dx, of the saved mean
/// (layer norm) and invstd, and (backward) whether the statistics are those of x (< 160).
pub fn run_row_norm(data: &[u8], rms: bool) {
    use batchnorm::{Grads, LayerNorm, RmsNorm, Saved, SavedMut};
    let mut d = Dec::new(data);
    let op = d.u8();
    let (backward, in_place) = (op & 1 == 1, op & 2 == 2);
    let rows = d.rows();
    let eps = d.eps();
    let (xgen, dygen, pgen) = (d.values(), d.values(), d.values());
    let mut expect = Expect::default();
    let len = rows.rows.checked_mul(rows.len);
    if len.is_none() {
        expect.push(Error::Overflow { arg: "x" });
    }
    expect.eps(eps);
    let (r, l) = (Some(rows.rows), Some(rows.len));
    let opt_len = |d: &mut Dec, name: &'static str, want: Option<usize>, expect: &mut Expect| {
        let n = (d.u8() & 3 != 0).then(|| d.len(want));
        if let Some(n) = n {
            expect.len(name, want, n);
        }
        n
    };
    let gamma_len = opt_len(&mut d, "gamma", l, &mut expect);
    let beta_len = if rms {
        None
    } else {
        opt_len(&mut d, "beta", l, &mut expect)
    };
    let (dg_len, db_len) = if backward {
        (
            opt_len(&mut d, "dgamma", l, &mut expect),
            opt_len(&mut d, "dbeta", l, &mut expect),
        )
    } else {
        (None, None)
    };
    let xlen = d.len(len);
    expect.len("x", len, xlen);
    let ylen = if in_place && !backward {
        xlen
    } else {
        d.len(len)
    };
    let dxlen = if backward { d.len(len) } else { 0 };
    if backward {
        expect.len("dy", len, ylen);
        expect.len("dx", len, dxlen);
    } else if !in_place {
        expect.len("y", len, ylen);
    }
    let m_len = if rms {
        rows.rows.min(MAX_ALLOC)
    } else {
        d.len(r)
    };
    let v_len = d.len(r);
    if !rms {
        expect.len("save_mean", r, m_len);
    }
    expect.len("save_invstd", r, v_len);
    if rows.rows > 0 && rows.len == 0 {
        expect.push(Error::TooFewValues {
            needed: 1,
            actual: 0,
        });
    }
    let stats_of_x = d.u8() < 160;

    let x = xgen.fill(xlen);
    let mut stream = 0;
    let mut params = |n: usize| -> Vec<f32> {
        stream += 1;
        pgen.fill_stream(n, stream)
    };
    let gamma = gamma_len.map(&mut params);
    let beta = beta_len.map(&mut params);
    let ln = LayerNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let rn = RmsNorm {
        eps,
        gamma: gamma.as_deref(),
    };
    let name = match (rms, backward, in_place) {
        (false, false, false) => "LayerNorm::forward",
        (false, false, true) => "LayerNorm::forward_in_place",
        (false, true, _) => "LayerNorm::backward",
        (true, false, false) => "RmsNorm::forward",
        (true, false, true) => "RmsNorm::forward_in_place",
        (true, true, _) => "RmsNorm::backward",
    };
    let valid = expect.ok();
    let units = || row_units(rows.rows, rows.len);

    if !backward {
        let mut y = if in_place {
            Buf::from(&x)
        } else {
            Buf::sentinel(ylen)
        };
        let (mut mean, mut invstd) = (Buf::sentinel(m_len), Buf::sentinel(v_len));
        let before = [y.bits(), mean.bits(), invstd.bits()];
        let res = match (rms, in_place) {
            (false, false) => ln.forward(
                &x,
                y.body_mut(),
                rows,
                SavedMut {
                    mean: mean.body_mut(),
                    invstd: invstd.body_mut(),
                },
            ),
            (false, true) => ln.forward_in_place(
                y.body_mut(),
                rows,
                SavedMut {
                    mean: mean.body_mut(),
                    invstd: invstd.body_mut(),
                },
            ),
            (true, false) => rn.forward(&x, y.body_mut(), rows, invstd.body_mut()),
            (true, true) => rn.forward_in_place(y.body_mut(), rows, invstd.body_mut()),
        };
        let outs = [(&y, "y"), (&mean, "mean"), (&invstd, "invstd")];
        if !expect.check(res, name) {
            for ((b, n), before) in outs.iter().zip(&before) {
                b.assert_unchanged(before, &format!("{name} {n}"));
            }
            return;
        }
        for (b, n) in outs {
            b.assert_guards(&format!("{name} {n}"));
            if rms && n == "mean" {
                // RMS norm has no mean to write.
                b.assert_unchanged(&before[1], &format!("{name} {n}"));
            } else {
                b.assert_written(&format!("{name} {n}"));
            }
        }
        if in_place {
            // The out-of-place call on the same input gives the same bits.
            let (mut y0, mut m0, mut v0) = (vec![0.0; xlen], vec![0.0; m_len], vec![0.0; v_len]);
            let res = if rms {
                rn.forward(&x, &mut y0, rows, &mut v0)
            } else {
                ln.forward(
                    &x,
                    &mut y0,
                    rows,
                    SavedMut {
                        mean: &mut m0,
                        invstd: &mut v0,
                    },
                )
            };
            assert!(
                res.is_ok(),
                "{name}: the out-of-place call returned {res:?}"
            );
            assert_same(y.body(), &y0, &format!("{name} y vs out of place"));
            assert_same(
                invstd.body(),
                &v0,
                &format!("{name} invstd vs out of place"),
            );
            if !rms {
                assert_same(mean.body(), &m0, &format!("{name} mean vs out of place"));
            }
        }
        let mean_out = (!rms).then(|| mean.body());
        check_norm_forward(
            name,
            &x,
            &units(),
            [gamma.as_deref(), beta.as_deref()],
            eps,
            rms,
            y.body(),
            [mean_out, Some(invstd.body())],
        );
        return;
    }

    let dy = dygen.fill(ylen);
    let (mut mean, mut invstd) = (params(m_len), params(v_len));
    if stats_of_x && valid {
        let (m, v) = stats_of(&x, &units(), eps, rms);
        mean = sized(&m, m_len);
        invstd = sized(&v, v_len);
    }
    let mut dx = Buf::sentinel(dxlen);
    let mut dg = dg_len.map(Buf::sentinel);
    let mut db = db_len.map(Buf::sentinel);
    let before = [
        dx.bits(),
        dg.as_ref().map_or(vec![], Buf::bits),
        db.as_ref().map_or(vec![], Buf::bits),
    ];
    let grads = Grads {
        dx: dx.body_mut(),
        dgamma: opt_body(&mut dg),
        dbeta: opt_body(&mut db),
    };
    let res = if rms {
        rn.backward(&x, &dy, rows, &invstd, grads)
    } else {
        ln.backward(
            &x,
            &dy,
            rows,
            Saved {
                mean: &mean,
                invstd: &invstd,
            },
            grads,
        )
    };
    let outs = [
        (Some(&dx), "dx"),
        (dg.as_ref(), "dgamma"),
        (db.as_ref(), "dbeta"),
    ];
    if !expect.check(res, name) {
        for ((b, n), before) in outs.iter().zip(&before) {
            if let Some(b) = b {
                b.assert_unchanged(before, &format!("{name} {n}"));
            }
        }
        return;
    }
    for (b, n) in outs {
        if let Some(b) = b {
            b.assert_guards(&format!("{name} {n}"));
            b.assert_written(&format!("{name} {n}"));
        }
    }
    let body = |b: &Option<Buf>| b.as_ref().map_or(Vec::new(), |b| b.body().to_vec());
    check_norm_backward(
        name,
        [&x, &dy],
        &units(),
        gamma.as_deref(),
        [(!rms).then_some(&mean[..]), Some(&invstd[..])],
        [dx.body(), &body(&dg), &body(&db)],
        rows.len,
        rows.rows,
    );
}

/// The `group_norm` and `instance_norm` targets: `GroupNorm` / `InstanceNorm`
/// `forward`, `forward_in_place` (which must give the out-of-place bits) and
/// `backward`; instance norm with running statistics (exponential or cumulative
/// momentum) or without.
///
/// Byte layout: `op` (bit 0 backward, bit 1 in place), shape, groups (group norm),
/// eps, the generators of x, dy and the parameters, whether γ, β, dγ, dβ are present
/// (`& 3 != 0`) each followed by its length, the lengths of x, y or dy, dx, the saved
/// mean and invstd; then (instance norm forward) whether there are running statistics
/// (bit 0), the momentum kind (bit 0: cumulative; bit 1: biased running variance), its
/// factor or count, and the lengths of the running mean and var; (backward) whether the statistics are those
/// of x (< 160).
pub fn run_group_norm(data: &[u8], instance: bool) {
    use batchnorm::{Correction, Grads, GroupNorm, InstanceNorm, Momentum, Saved, SavedMut};
    let mut d = Dec::new(data);
    let op = d.u8();
    let (backward, in_place) = (op & 1 == 1, op & 2 == 2);
    let shape = d.shape();
    let c = shape.channels;
    let groups = if instance { c.max(1) } else { d.groups(c) };
    let eps = d.eps();
    let (xgen, dygen, pgen) = (d.values(), d.values(), d.values());
    let mut expect = Expect::default();
    let len = expect.shape(shape);
    if groups == 0 || !c.is_multiple_of(groups) {
        expect.push(Error::Groups {
            groups,
            arg: "channels",
            channels: c,
        });
    }
    expect.eps(eps);
    let stats = shape.batch.checked_mul(groups);
    if stats.is_none() {
        expect.push(Error::Overflow { arg: "save_mean" });
    }
    let opt_len = |d: &mut Dec, name: &'static str, expect: &mut Expect| {
        let n = (d.u8() & 3 != 0).then(|| d.len(Some(c)));
        if let Some(n) = n {
            expect.len(name, Some(c), n);
        }
        n
    };
    let gamma_len = opt_len(&mut d, "gamma", &mut expect);
    let beta_len = opt_len(&mut d, "beta", &mut expect);
    let (dg_len, db_len) = if backward {
        (
            opt_len(&mut d, "dgamma", &mut expect),
            opt_len(&mut d, "dbeta", &mut expect),
        )
    } else {
        (None, None)
    };
    let xlen = d.len(len);
    expect.len("x", len, xlen);
    let ylen = if in_place && !backward {
        xlen
    } else {
        d.len(len)
    };
    let dxlen = if backward { d.len(len) } else { 0 };
    if backward {
        expect.len("dy", len, ylen);
        expect.len("dx", len, dxlen);
    } else if !in_place {
        expect.len("y", len, ylen);
    }
    let (m_len, v_len) = (d.len(stats), d.len(stats));
    expect.len("save_mean", stats, m_len);
    expect.len("save_invstd", stats, v_len);
    let per_group = c
        .checked_div(groups)
        .and_then(|p| p.checked_mul(shape.spatial));
    if stats.is_some_and(|s| s > 0) && per_group == Some(0) {
        expect.push(Error::TooFewValues {
            needed: 1,
            actual: 0,
        });
    }
    // Instance norm's running statistics.
    let running = instance && !backward && d.u8() & 1 == 1;
    let (update, rm_len, rv_len) = if running {
        let kind = d.u8();
        let correction = if kind & 2 == 2 {
            Correction::Biased
        } else {
            Correction::Unbiased
        };
        let (momentum, tracked) = if kind & 1 == 1 {
            (Momentum::Cumulative, u64::from(d.u8()))
        } else {
            (Momentum::Exponential(d.momentum_factor()), 0)
        };
        if let Momentum::Exponential(f) = momentum {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                expect.push(Error::Parameter {
                    arg: "momentum",
                    value: f,
                });
            }
        }
        let (rm_len, rv_len) = (d.len(Some(c)), d.len(Some(c)));
        expect.len("running_mean", Some(c), rm_len);
        expect.len("running_var", Some(c), rv_len);
        if shape.batch == 0 {
            expect.push(Error::TooFewValues {
                needed: 1,
                actual: 0,
            });
        } else if shape.spatial < needed(correction) {
            expect.push(Error::TooFewValues {
                needed: needed(correction),
                actual: shape.spatial,
            });
        }
        ((momentum, correction, tracked), rm_len, rv_len)
    } else {
        ((Momentum::Exponential(0.1), Correction::Unbiased, 0), 0, 0)
    };
    let stats_of_x = backward && d.u8() < 160;

    let x = xgen.fill(xlen);
    let mut stream = 0;
    let mut params = |n: usize| -> Vec<f32> {
        stream += 1;
        pgen.fill_stream(n, stream)
    };
    let gamma = gamma_len.map(&mut params);
    let beta = beta_len.map(&mut params);
    let gn = GroupNorm {
        groups,
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let inorm = InstanceNorm {
        eps,
        gamma: gamma.as_deref(),
        beta: beta.as_deref(),
    };
    let name = match (instance, backward, in_place) {
        (false, false, false) => "GroupNorm::forward",
        (false, false, true) => "GroupNorm::forward_in_place",
        (false, true, _) => "GroupNorm::backward",
        (true, false, false) => "InstanceNorm::forward",
        (true, false, true) => "InstanceNorm::forward_in_place",
        (true, true, _) => "InstanceNorm::backward",
    };
    let valid = expect.ok();
    let units = || group_units(shape, groups);

    if !backward {
        let rm0 = params(rm_len);
        let rv0: Vec<f32> = params(rv_len).iter().map(|v| v.abs()).collect();
        let mut y = if in_place {
            Buf::from(&x)
        } else {
            Buf::sentinel(ylen)
        };
        let (mut mean, mut invstd) = (Buf::sentinel(m_len), Buf::sentinel(v_len));
        let (mut rm, mut rv) = (Buf::from(&rm0), Buf::from(&rv0));
        let before = [y.bits(), mean.bits(), invstd.bits(), rm.bits(), rv.bits()];
        let saved = SavedMut {
            mean: mean.body_mut(),
            invstd: invstd.body_mut(),
        };
        let mut run = running.then(|| running_of(rm.body_mut(), rv.body_mut(), update));
        let res = match (instance, in_place) {
            (false, false) => gn.forward(&x, y.body_mut(), shape, saved),
            (false, true) => gn.forward_in_place(y.body_mut(), shape, saved),
            (true, false) => inorm.forward(&x, y.body_mut(), shape, saved, run.as_mut()),
            (true, true) => inorm.forward_in_place(y.body_mut(), shape, saved, run.as_mut()),
        };
        check_counted(run.map(|r| r.batches_tracked), update, res.is_ok());
        let outs = [
            (&y, "y"),
            (&mean, "mean"),
            (&invstd, "invstd"),
            (&rm, "running_mean"),
            (&rv, "running_var"),
        ];
        if !expect.check(res, name) {
            for ((b, n), before) in outs.iter().zip(&before) {
                b.assert_unchanged(before, &format!("{name} {n}"));
            }
            return;
        }
        for (b, n) in outs {
            b.assert_guards(&format!("{name} {n}"));
        }
        for (b, n) in &outs[..3] {
            b.assert_written(&format!("{name} {n}"));
        }
        if in_place {
            let (mut y0, mut m0, mut v0) = (vec![0.0; xlen], vec![0.0; m_len], vec![0.0; v_len]);
            let (mut rm1, mut rv1) = (rm0.clone(), rv0.clone());
            let saved = SavedMut {
                mean: &mut m0,
                invstd: &mut v0,
            };
            let mut run = running.then(|| running_of(&mut rm1, &mut rv1, update));
            let res = if instance {
                inorm.forward(&x, &mut y0, shape, saved, run.as_mut())
            } else {
                gn.forward(&x, &mut y0, shape, saved)
            };
            assert!(
                res.is_ok(),
                "{name}: the out-of-place call returned {res:?}"
            );
            assert_same(y.body(), &y0, &format!("{name} y vs out of place"));
            assert_same(mean.body(), &m0, &format!("{name} mean vs out of place"));
            assert_same(
                invstd.body(),
                &v0,
                &format!("{name} invstd vs out of place"),
            );
            assert_same(
                rm.body(),
                &rm1,
                &format!("{name} running_mean vs out of place"),
            );
            assert_same(
                rv.body(),
                &rv1,
                &format!("{name} running_var vs out of place"),
            );
        }
        let u = units();
        check_norm_forward(
            name,
            &x,
            &u,
            [gamma.as_deref(), beta.as_deref()],
            eps,
            false,
            y.body(),
            [Some(mean.body()), Some(invstd.body())],
        );
        if running {
            check_instance_running(
                name,
                &x,
                &u,
                shape,
                update,
                [&rm0, &rv0],
                [rm.body(), rv.body()],
            );
        } else {
            rm.assert_unchanged(&before[3], name);
            rv.assert_unchanged(&before[4], name);
        }
        return;
    }

    let dy = dygen.fill(ylen);
    let (mut mean, mut invstd) = (params(m_len), params(v_len));
    if stats_of_x && valid {
        let (m, v) = stats_of(&x, &units(), eps, false);
        mean = sized(&m, m_len);
        invstd = sized(&v, v_len);
    }
    let mut dx = Buf::sentinel(dxlen);
    let mut dg = dg_len.map(Buf::sentinel);
    let mut db = db_len.map(Buf::sentinel);
    let before = [
        dx.bits(),
        dg.as_ref().map_or(vec![], Buf::bits),
        db.as_ref().map_or(vec![], Buf::bits),
    ];
    let grads = Grads {
        dx: dx.body_mut(),
        dgamma: opt_body(&mut dg),
        dbeta: opt_body(&mut db),
    };
    let saved = Saved {
        mean: &mean,
        invstd: &invstd,
    };
    let res = if instance {
        inorm.backward(&x, &dy, shape, saved, grads)
    } else {
        gn.backward(&x, &dy, shape, saved, grads)
    };
    let outs = [
        (Some(&dx), "dx"),
        (dg.as_ref(), "dgamma"),
        (db.as_ref(), "dbeta"),
    ];
    if !expect.check(res, name) {
        for ((b, n), before) in outs.iter().zip(&before) {
            if let Some(b) = b {
                b.assert_unchanged(before, &format!("{name} {n}"));
            }
        }
        return;
    }
    for (b, n) in outs {
        if let Some(b) = b {
            b.assert_guards(&format!("{name} {n}"));
            b.assert_written(&format!("{name} {n}"));
        }
    }
    let body = |b: &Option<Buf>| b.as_ref().map_or(Vec::new(), |b| b.body().to_vec());
    check_norm_backward(
        name,
        [&x, &dy],
        &units(),
        gamma.as_deref(),
        [Some(&mean[..]), Some(&invstd[..])],
        [dx.body(), &body(&dg), &body(&db)],
        c,
        shape.batch,
    );
}

/// Instance norm's running statistics after one update: per channel
/// `(1 − f)·old + f·(mean over the batch of the instances' means)`, and the same with
/// their unbiased (or biased) variances; checked where every instance of the channel is.
fn check_instance_running(
    call: &str,
    x: &[f32],
    u: &Units,
    shape: Shape,
    update: Update,
    [rm0, rv0]: [&[f32]; 2],
    [rm1, rv1]: [&[f32]; 2],
) {
    let f = factor(update);
    // m/(m − 1) for the unbiased variance, 1 for the biased one.
    let bessel = |m: f64| match update.1 {
        batchnorm::Correction::Unbiased => m / (m - 1.0),
        batchnorm::Correction::Biased => 1.0,
    };
    let nb = shape.batch as f64;
    for c in 0..shape.channels {
        let what = |s: &str| format!("{call}: {s}, channel {c} of {shape:?}, factor {f:e}");
        let (mut sm, mut sv, mut tm, mut tv, mut ok, mut finite) = (0.0, 0.0, 0.0, 0.0, true, true);
        for n in 0..shape.batch {
            let r = ChanRef::of(u.units[n * shape.channels + c].iter().map(|&i| x[i]));
            finite &= r.finite;
            ok &= r.moderate;
            let m = r.n as f64;
            sm += r.mean;
            sv += r.var() * bessel(m);
            tm += tol_mean(&r) + U * r.mean.abs();
            tv += tol_m2(&r) / m * bessel(m);
        }
        if !finite {
            assert!(
                rv1[c].is_nan(),
                "{}: running_var {:e}",
                what("non-finite x"),
                rv1[c]
            );
            continue;
        }
        let (a, b) = (f64::from(rm0[c]), f64::from(rv0[c]));
        let (want_m, want_v) = ((1.0 - f) * a + f * sm / nb, (1.0 - f) * b + f * sv / nb);
        if !(ok && in_range(want_m) && in_range(want_v) && a.is_finite() && b.is_finite()) {
            continue;
        }
        let tol_m = f * tm / nb + 2.0 * U * ((1.0 - f) * a.abs() + f * (sm / nb).abs()) + TINY;
        let tol_v = f * tv / nb + 2.0 * U * ((1.0 - f) * b.abs() + f * sv / nb) + TINY;
        close(f64::from(rm1[c]), want_m, tol_m, || what("running_mean"));
        close(f64::from(rv1[c]), want_v, tol_v, || what("running_var"));
    }
}

/// The `clip` target: `clip_grad_value`, `clip_grad_norm` (L2 and max, both
/// `NonFinite` choices) and `total_norm` over up to 7 slices of lengths 0…4097 with
/// values from any generator (huge, subnormal, NaN and ±inf included).
///
/// Byte layout: `op` (bit 0 by norm, bit 1 max norm, bit 2 `NonFinite::Error`), the
/// limit, the number of slices, then per slice its length index and its generator.
pub fn run_clip(data: &[u8]) {
    use batchnorm::{clip_grad_norm, clip_grad_value, total_norm, GradNorm, NonFinite};
    const LENS: [usize; 16] = [
        0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 65, 100, 256, 1000, 4097,
    ];
    let mut d = Dec::new(data);
    let op = d.u8();
    let by_norm = op & 1 == 1;
    let norm = if op & 2 == 2 {
        GradNorm::Max
    } else {
        GradNorm::L2
    };
    let nonfinite = if op & 4 == 4 {
        NonFinite::Error
    } else {
        NonFinite::Scale
    };
    let limit = d.limit();
    let k = usize::from(d.u8() % 8);
    let grads: Vec<Vec<f32>> = (0..k)
        .map(|_| {
            let n = LENS[usize::from(d.u8()) % 16];
            d.values().fill(n)
        })
        .collect();
    let mut bufs: Vec<Buf> = grads.iter().map(|g| Buf::from(g)).collect();
    let before: Vec<Vec<u32>> = bufs.iter().map(Buf::bits).collect();
    let all = || grads.iter().flatten().map(|&v| f64::from(v));
    let arg = if by_norm { "max_norm" } else { "clip_value" };
    let bad_limit = limit.is_nan() || limit < 0.0;
    let unchanged = |bufs: &[Buf], call: &str| {
        for (b, before) in bufs.iter().zip(&before) {
            b.assert_unchanged(before, call);
        }
    };

    if !by_norm {
        let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(Buf::body_mut).collect();
        let res = clip_grad_value(&mut slices, limit);
        if bad_limit {
            assert!(
                matches!(res, Err(Error::Parameter { arg: a, value }) if a == arg && value.to_bits() == limit.to_bits()),
                "clip_grad_value({limit:e}) returned {res:?}"
            );
            unchanged(&bufs, "clip_grad_value");
            return;
        }
        assert_eq!(res, Ok(()), "clip_grad_value({limit:e})");
        for (b, g) in bufs.iter().zip(&grads) {
            b.assert_guards("clip_grad_value");
            for (i, (&v, &x)) in b.body().iter().zip(g).enumerate() {
                // A clamp: exact, NaN stays NaN.
                let want = if x.is_nan() {
                    x
                } else {
                    x.max(-limit).min(limit)
                };
                assert!(
                    (want.is_nan() && v.is_nan()) || v == want,
                    "clip_grad_value({limit:e})[{i}]: {x:e} gave {v:e}, want {want:e}"
                );
            }
        }
        return;
    }

    // The reference total in f64: exact up to f64 rounding for these counts.
    let nan = all().any(f64::is_nan);
    let inf = all().any(f64::is_infinite);
    let want = if nan {
        f64::NAN
    } else if inf {
        f64::INFINITY
    } else {
        match norm {
            GradNorm::L2 => all().map(|v| v * v).sum::<f64>().sqrt(),
            GradNorm::Max => all().map(f64::abs).fold(0.0, f64::max),
        }
    };
    let tol = match norm {
        GradNorm::L2 => 256.0 * U * want + TINY,
        GradNorm::Max => 0.0,
    };
    let refs: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let t = total_norm(&refs, norm);
    let what = format!("total_norm({norm:?}) of {k} slices");
    if want.is_nan() {
        assert!(t.is_nan(), "{what}: {t:e}, want NaN");
    } else if want.is_infinite() || want - tol - U * want > f64::from(f32::MAX) {
        assert_eq!(t, f32::INFINITY, "{what}: want {want:e}");
    } else if t.is_infinite() {
        // Rounds to f32's largest value or beyond.
        assert!(
            want + tol + U * want >= f64::from(f32::MAX),
            "{what}: inf, want {want:e}"
        );
    } else {
        close(f64::from(t), want, tol + U * want, || what.clone());
    }

    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(Buf::body_mut).collect();
    let res = clip_grad_norm(&mut slices, limit, norm, nonfinite);
    let call = format!("clip_grad_norm({limit:e}, {norm:?}, {nonfinite:?})");
    if bad_limit {
        assert!(
            matches!(res, Err(Error::Parameter { arg: a, value }) if a == arg && value.to_bits() == limit.to_bits()),
            "{call} returned {res:?}"
        );
        unchanged(&bufs, &call);
        return;
    }
    // A finite total beyond f32's range is infinite as f32: an error with
    // NonFinite::Error, as PyTorch's f32 total would be.
    let overflow = want.is_finite() && t.is_infinite();
    if nonfinite == NonFinite::Error && (!want.is_finite() || overflow) {
        assert!(
            matches!(res, Err(Error::NonFiniteNorm { norm }) if same_f32(norm, t)),
            "{call}: total {t:e} gave {res:?}"
        );
        unchanged(&bufs, &call);
        return;
    }
    let total = res.unwrap_or_else(|e| panic!("{call}: {e:?}"));
    assert!(
        same_f32(total, t),
        "{call} returned {total:e}, total_norm {t:e}"
    );
    // PyTorch's factor, clamped to 1, from the reference total.
    // The factor is an f32, as PyTorch's (a factor below f32's range is 0).
    let factor = f64::from(limit) / (want + 1e-6);
    let factor32 = f64::from(factor as f32);
    let rel = if want.is_finite() {
        tol / want.max(1e-300)
    } else {
        0.0
    };
    for (b, g) in bufs.iter().zip(&grads) {
        b.assert_guards(&call);
        for (i, (&v, &x)) in b.body().iter().zip(g).enumerate() {
            let at =
                || format!("{call}: [{i}] = {x:e} gave {v:e}, total {want:e}, factor {factor:e}");
            if factor.is_nan() {
                assert!(v.is_nan(), "{}", at());
            } else if factor * (1.0 - 2.0 * rel) > 1.0 {
                // No clipping: the values stay as they are.
                assert!(same_f32(v, x), "{}", at());
            } else if factor * (1.0 + 2.0 * rel) < 1.0 {
                if !x.is_finite() {
                    assert!(v.is_nan() || v.is_infinite(), "{}", at());
                    continue;
                }
                let w = f64::from(x) * factor32;
                let tol = f64::from(x).abs() * (factor * (2.0 * rel + 4.0 * U) + SUB) + SUB;
                close(f64::from(v), w, tol, at);
            }
        }
    }
}
