#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/corpus/<target>/ (run from fuzz/).

The byte layouts follow the decoders in src/lib.rs and fuzz_targets/*.rs: every
read past the end of the input gives 0, and 0 means "valid, exact length".
"""
import random
import struct

random.seed(4)


def gen(kind, off, spread, specials=()):
    """A value generator: seed, kind, offset index, spread index, specials."""
    b = struct.pack('<Q', random.getrandbits(64)) + bytes([kind, off, spread])
    if specials:
        b += bytes([192 + len(specials)])
        for pos, which in specials:
            b += struct.pack('<H', pos) + bytes([which])
    else:
        b += bytes([0])
    return b


def shape(b, c, s, last=False, mode=0):
    return bytes([mode, int(last), b, c, s])


def w(t, name, data):
    with open(f'corpus/{t}/{name}', 'wb') as f:
        f.write(data)


# moments: shape, x values, x length, out length, split, merge parts
w('moments', 'nchw_uniform', shape(3, 5, 7) + gen(0, 1, 0) + bytes([0, 0, 2]))
w('moments', 'nhwc_ties_offset1e4', shape(4, 3, 16, True) + gen(3, 9, 0) + bytes([0, 0, 1]))
w('moments', 'long_channel_offset1e6', shape(255, 1, 228, False, 240) + gen(0, 11, 11) + bytes([0, 0, 7]))
w('moments', 'nhwc_tiled70_specials', shape(2, 70, 3, True) + gen(6, 0, 4, [(5, 0), (77, 3)]) + bytes([0, 0, 0]))
w('moments', 'rows_len_off_merge_max', shape(5, 9, 1) + gen(0, 0, 0)
  + bytes([244, 0, 3, 0, 4, 0, 0, 4, 0]))
w('moments', 'huge_overflow', shape(10, 2, 9, False, 255) + bytes([0] * 15))


def fwd(op, sh, eps, xg, pg, gamma=True, beta=True, rest=b''):
    """op bit 0: in place, bit 1: train."""
    b = bytes([op]) + sh + bytes([eps]) + xg + pg
    b += bytes([1, 0]) if gamma else bytes([0])
    b += bytes([1, 0]) if beta else bytes([0])
    b += bytes([0]) if op & 1 else bytes([0, 0])
    return b + rest


w('forward', 'eval_nchw', fwd(0, shape(2, 3, 5), 0, gen(0, 1, 0), gen(0, 0, 0), rest=bytes([0, 0, 0])))
w('forward', 'eval_inplace_nhwc_noaffine',
  fwd(1, shape(3, 4, 6, True), 2, gen(0, 7, 2), gen(0, 1, 0), False, False, bytes([0, 0, 0])))
# train: save_mean len, save_invstd len, running, momentum kind, factor/count, rm, rv, abs
w('forward', 'train_nchw_running_exp',
  fwd(2, shape(4, 3, 9), 0, gen(0, 9, 0), gen(0, 1, 0), rest=bytes([0, 0, 1, 0, 0, 0, 0, 0])))
w('forward', 'train_inplace_nhwc_cumulative',
  fwd(3, shape(5, 9, 4, True), 0, gen(3, 0, 0), gen(0, 3, 1), rest=bytes([0, 0, 1, 1, 3, 0, 0, 0])))
w('forward', 'train_constant_eps0', fwd(2, shape(3, 2, 4), 1, gen(4, 4, 0), gen(0, 1, 0), rest=bytes([0, 0, 0])))
w('forward', 'train_rows_specials',
  fwd(2, shape(6, 5, 1), 0, gen(0, 0, 0, [(3, 0), (9, 3)]), gen(0, 1, 0), rest=bytes([0, 0, 1, 0, 2, 0, 0, 0])))


def bwd(op, sh, eps, xg, dg, pg, flags=(1, 1, 1, 1), stats=0):
    """op bit 0: eval. flags: gamma, beta, dgamma, dbeta present."""
    b = bytes([op]) + sh + bytes([eps]) + xg + dg + pg
    for f in flags:
        b += bytes([f, 0]) if f else bytes([0])
    return b + bytes([0, 0, 0, 0, 0, stats])


w('backward', 'train_nchw', bwd(0, shape(3, 4, 7), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0)))
w('backward', 'eval_nhwc', bwd(1, shape(2, 6, 5, True), 0, gen(0, 9, 0), gen(0, 0, 4), gen(0, 1, 0)))
w('backward', 'train_rows_nograds', bwd(0, shape(8, 17, 1), 0, gen(3, 0, 0), gen(0, 0, 0), gen(0, 1, 0), (0, 0, 0, 0)))
w('backward', 'eval_nchw_arbitrary_stats',
  bwd(1, shape(2, 3, 33), 0, gen(0, 0, 0), gen(6, 0, 0), gen(0, 0, 0), (1, 0, 1, 0), 200))
w('backward', 'train_long_channel', bwd(0, shape(255, 2, 228, False, 240), 0, gen(0, 11, 11), gen(0, 0, 0), gen(0, 1, 0)))


def fold(following, layout, g, ig, og, kernel_idx, pad=False, rest=b''):
    """layout 0..3 = Oihw, Ohwi, Hwio, Iohw; kernel_idx into [1, 1, 2, 3, 4, 9, 27, 0]."""
    b = bytes([int(following), layout, 0, g - 1, ig, og, kernel_idx, 0, 0])  # mode, g, Ig, Og, K, fault, eps
    b += gen(0, 1, 0) + gen(0, 0, 0)
    b += bytes([0, 0, 0, 0, 1, 0, 1, 0])  # weight, bias, mean, var, gamma, beta lengths
    if following:
        b += bytes([1 if pad else 0, 0])
    return b + rest


w('fold', 'preceding_linear_oihw', fold(False, 0, 1, 3, 2, 0))
w('fold', 'preceding_conv2d_grouped_hwio', fold(False, 2, 2, 3, 2, 5))
w('fold', 'preceding_transposed_iohw', fold(False, 3, 2, 2, 3, 4))
w('fold', 'following_conv_ohwi_pad', fold(True, 1, 1, 4, 3, 3, True))
w('fold', 'following_depthwise_oihw', fold(True, 0, 3, 1, 2, 5, True))


# Fused and renorm (new fields after the plain call's; see fuzz_targets/forward.rs):
# op bits 2-3 = 1 ReLU, 2 Add + ReLU (then z: generator, length), 3 renorm (train only:
# then rmax, dmax table indices and the lengths of r and d).
w('forward', 'eval_relu_nchw', fwd(4, shape(2, 3, 5), 0, gen(0, 1, 0), gen(0, 0, 0), rest=bytes([0, 0, 0])))
w('forward', 'eval_add_relu_nhwc',
  fwd(8, shape(3, 4, 6, True), 0, gen(0, 7, 2), gen(0, 1, 0), rest=bytes([0, 0, 0]) + gen(0, 0, 0) + bytes([0])))
w('forward', 'train_relu_nchw_running_exp',
  fwd(6, shape(4, 3, 9), 0, gen(0, 0, 0), gen(0, 1, 0), rest=bytes([0, 0, 1, 0, 0, 0, 0, 0])))
w('forward', 'train_add_relu_nhwc_cumulative',
  fwd(10, shape(5, 9, 4, True), 0, gen(3, 0, 0), gen(0, 3, 1),
      rest=bytes([0, 0, 1, 1, 3, 0, 0, 0]) + gen(3, 0, 0) + bytes([0])))
w('forward', 'train_add_relu_rows_specials',
  fwd(10, shape(6, 5, 1), 0, gen(0, 0, 0, [(3, 0), (9, 3)]), gen(0, 1, 0),
      rest=bytes([0, 0, 0]) + gen(0, 0, 0, [(4, 11), (7, 1)]) + bytes([0])))
# renorm: sm, si, running (forced), momentum kind, factor, rm, rv, abs, rmax, dmax, r, d
w('forward', 'renorm_nchw_paper_limits',
  fwd(14, shape(4, 3, 9), 0, gen(0, 9, 0), gen(0, 1, 0), rest=bytes([0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0])))
w('forward', 'renorm_nhwc_clipping',
  fwd(14, shape(5, 9, 4, True), 0, gen(0, 0, 0), gen(0, 3, 1), rest=bytes([0, 0, 1, 0, 3, 0, 0, 0, 2, 2, 0, 0])))
w('forward', 'renorm_plain_bn_limits',
  fwd(14, shape(3, 6, 1), 0, gen(4, 4, 0), gen(0, 1, 0), rest=bytes([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])))
w('forward', 'renorm_long_channel_offset1e6',
  fwd(14, shape(255, 2, 228, False, 240), 0, gen(0, 11, 11), gen(0, 11, 0),
      rest=bytes([0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0])))

# backward: op bit 0 eval, bits 1-2 = 1 ReLU, 2 Add + ReLU (then y: generator, length,
# and dz's length), 3 renorm (train only: then the lengths of r, d and "typical" < 160).
w('backward', 'fused_relu_train_nchw', bwd(2, shape(3, 4, 7), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0))
  + gen(3, 0, 0) + bytes([0]))
w('backward', 'fused_add_relu_train_nhwc', bwd(4, shape(2, 6, 5, True), 0, gen(0, 9, 0), gen(0, 0, 4), gen(0, 1, 0))
  + gen(0, 0, 0) + bytes([0, 0]))
w('backward', 'fused_relu_eval_rows', bwd(3, shape(8, 17, 1), 0, gen(0, 0, 0), gen(0, 0, 0), gen(0, 1, 0))
  + gen(0, 0, 0, [(2, 0), (5, 11)]) + bytes([0]))
w('backward', 'fused_add_relu_eval_no_grads',
  bwd(5, shape(2, 3, 33), 0, gen(0, 0, 0), gen(0, 0, 0), gen(0, 1, 0), (1, 1, 0, 0)) + gen(3, 0, 0) + bytes([0, 0]))
w('backward', 'renorm_nchw_typical', bwd(6, shape(3, 4, 7), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0))
  + bytes([0, 0, 0]))
w('backward', 'renorm_nhwc_arbitrary_rd', bwd(6, shape(4, 8, 16, True), 0, gen(0, 0, 0), gen(0, 0, 0), gen(0, 3, 1))
  + bytes([0, 0, 200]))

# Regression: a channels-last eval of batch 2⁶⁴ − 2, 2 channels and spatial 0 (no
# elements): batch·channels overflows where batch·spatial·channels does not.
w('forward', 'regression_empty_huge_batch', bytes([0x21, 0xf8, 0xc7, 0x6d, 0x02]))
