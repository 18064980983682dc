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


# ---------------------------------------------------------------- the neighbours
# (decoders: run_row_norm, run_group_norm, run_clip in src/lib.rs)

def rows(r, l, mode=0):
    """l: 0..127 -> l % 20, 128..191 -> l % 100, else [1, 3, 17, 4097, 16, 64, 65, 256][l % 8]."""
    return bytes([mode, r, l])


def flag(present):
    return bytes([1, 0]) if present else bytes([0])


def row_norm(op, rs, eps, xg, dg, pg, rms=False, gamma=True, beta=True, grads=(True, True), stats=0):
    """op bit 0: backward, bit 1: in place."""
    b = bytes([op]) + rs + bytes([eps]) + xg + dg + pg + flag(gamma)
    if not rms:
        b += flag(beta)
    if op & 1:
        b += flag(grads[0]) + flag(grads[1])
    b += bytes([0])  # x
    if op & 1 or not op & 2:
        b += bytes([0])  # y or dy
    if op & 1:
        b += bytes([0])  # dx
    if not rms:
        b += bytes([0])  # save_mean
    return b + bytes([0, stats])  # save_invstd, stats of x


for t, rms in (('layer_norm', False), ('rms_norm', True)):
    w(t, 'forward_inner17', row_norm(0, rows(12, 17), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0), rms))
    w(t, 'forward_inner1_constant', row_norm(0, rows(9, 1), 1, gen(0, 3, 0), gen(0, 0, 0), gen(0, 1, 0), rms))
    w(t, 'forward_inplace_inner3_offset1e4', row_norm(2, rows(20, 3), 0, gen(0, 9, 0), gen(0, 0, 0), gen(0, 1, 0), rms,
                                                      gamma=False))
    w(t, 'forward_inner4097_specials', row_norm(0, rows(3, 195, 240), 0, gen(0, 0, 0, [(5, 0), (5000, 3)]), gen(0, 0, 0),
                                                gen(0, 1, 0), rms))
    w(t, 'forward_many_rows_ties', row_norm(0, rows(200, 197, 240), 2, gen(3, 7, 0), gen(0, 0, 0), gen(0, 1, 0), rms,
                                            beta=False))
    w(t, 'backward_inner17_stats_of_x', row_norm(1, rows(12, 17), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0), rms))
    w(t, 'backward_inner3_arbitrary_stats', row_norm(1, rows(30, 3), 0, gen(0, 0, 0), gen(6, 0, 0), gen(0, 1, 0), rms,
                                                     grads=(True, False), stats=200))
    w(t, 'backward_inner4097_noaffine', row_norm(1, rows(2, 195, 240), 0, gen(0, 9, 0), gen(0, 0, 0), gen(0, 1, 0), rms,
                                                 gamma=False, beta=False))
    w(t, 'huge_rows_empty', row_norm(0, rows(10, 0, 255), 0, gen(0, 0, 0), gen(0, 0, 0), gen(0, 0, 0), rms))


def group_norm(op, sh, eps, xg, dg, pg, groups=None, gamma=True, beta=True, grads=(True, True), running=None,
               stats=0):
    """groups: (selector byte, pick byte) for group norm, None for instance norm.
    running (instance forward): None, or (cumulative, factor index or count)."""
    b = bytes([op]) + sh + (bytes(groups) if groups else b'') + bytes([eps]) + xg + dg + pg
    b += flag(gamma) + flag(beta)
    if op & 1:
        b += flag(grads[0]) + flag(grads[1])
    b += bytes([0])  # x
    if op & 1 or not op & 2:
        b += bytes([0])  # y or dy
    if op & 1:
        b += bytes([0])  # dx
    b += bytes([0, 0])  # save_mean, save_invstd
    if groups is None and not op & 1:
        if running is None:
            b += bytes([0])
        else:
            b += bytes([1, int(running[0]), running[1], 0, 0])
    if op & 1:
        b += bytes([stats])
    return b


# groups(): selector <= 215 picks divisor number `pick` (ascending) of C.
w('group_norm', 'forward_nchw_g1', group_norm(0, shape(3, 6, 176), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0), (0, 0)))
w('group_norm', 'forward_nhwc_g32_c64', group_norm(0, shape(2, 208, 9, True), 0, gen(0, 0, 0), gen(0, 0, 0),
                                                   gen(0, 1, 0), (0, 5)))
w('group_norm', 'forward_inplace_nchw_gc_odd', group_norm(2, shape(2, 9, 7), 0, gen(0, 9, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0), (0, 2), gamma=False, beta=False))
w('group_norm', 'forward_nhwc_constant_group', group_norm(0, shape(2, 6, 5, True), 1, gen(4, 4, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0), (0, 1)))
w('group_norm', 'backward_nchw_g2_stats_of_x', group_norm(1, shape(3, 4, 9), 0, gen(0, 1, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0), (0, 1)))
w('group_norm', 'backward_nhwc_arbitrary_stats', group_norm(1, shape(2, 8, 6, True), 0, gen(0, 0, 0), gen(6, 0, 0),
                                                            gen(0, 1, 0), (0, 2), grads=(True, False), stats=200))
w('group_norm', 'backward_wide_group_long', group_norm(1, shape(255, 4, 200, False, 240), 0, gen(0, 11, 11),
                                                       gen(0, 0, 0), gen(0, 1, 0), (0, 0)))
w('group_norm', 'backward_group_of_71_channels', group_norm(1, shape(4, 215, 9), 0, gen(0, 1, 0), gen(0, 0, 0),
                                                            gen(0, 1, 0), (0, 0)))
w('group_norm', 'groups_not_dividing', group_norm(0, shape(2, 6, 4), 0, gen(0, 0, 0), gen(0, 0, 0), gen(0, 0, 0),
                                                  (240, 3)))
w('instance_norm', 'forward_nchw_affine', group_norm(0, shape(3, 4, 185), 0, gen(0, 1, 0), gen(0, 0, 0), gen(0, 1, 0)))
w('instance_norm', 'forward_nhwc_running_exp', group_norm(0, shape(2, 6, 176, True), 0, gen(0, 9, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0), running=(False, 0)))
w('instance_norm', 'forward_inplace_nchw_running_cumulative',
  group_norm(2, shape(4, 3, 177), 0, gen(3, 0, 0), gen(0, 0, 0), gen(0, 3, 1), gamma=False, beta=False,
             running=(True, 3)))
w('instance_norm', 'forward_running_spatial1', group_norm(0, shape(4, 3, 1), 0, gen(0, 0, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0), running=(False, 0)))
w('instance_norm', 'backward_nhwc_stats_of_x', group_norm(1, shape(2, 5, 9, True), 0, gen(0, 1, 0), gen(0, 0, 0),
                                                          gen(0, 1, 0)))
w('instance_norm', 'backward_nchw_arbitrary_stats', group_norm(1, shape(3, 7, 6), 0, gen(0, 0, 0), gen(6, 0, 0),
                                                               gen(0, 1, 0), grads=(False, True), stats=200))


def clip(op, limit, slices):
    """op bit 0: by norm, bit 1: max norm, bit 2: NonFinite::Error; slices: (length index, generator)."""
    b = bytes([op, limit, len(slices)])
    for n, g in slices:
        b += bytes([n]) + g
    return b


# lengths [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 65, 100, 256, 1000, 4097]; limits [1, 0.5, 0, inf, 1e-3, ...]
w('clip', 'value_three_slices', clip(0, 1, [(8, gen(0, 0, 4)), (3, gen(0, 0, 0)), (15, gen(0, 0, 0))]))
w('clip', 'value_specials', clip(0, 0, [(6, gen(0, 0, 0, [(1, 0), (3, 3), (5, 4)])), (0, gen(0, 0, 0))]))
w('clip', 'norm_l2_several', clip(1, 0, [(4, gen(0, 0, 0)), (8, gen(0, 0, 0)), (1, gen(0, 0, 0))]))
w('clip', 'norm_l2_huge_values', clip(1, 0, [(10, gen(8, 0, 0)), (7, gen(0, 0, 0))]))
w('clip', 'norm_l2_tiny_values', clip(1, 7, [(12, gen(7, 0, 0)), (3, gen(0, 14, 0))]))
w('clip', 'norm_max_error_nonfinite', clip(7, 0, [(5, gen(0, 0, 0, [(2, 3)])), (9, gen(0, 0, 0))]))
w('clip', 'norm_l2_long', clip(1, 5, [(15, gen(0, 0, 4)), (14, gen(0, 0, 0)), (13, gen(6, 0, 0))]))
