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
use batchnorm::{Error, Layout, Shape};

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
