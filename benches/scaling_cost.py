#!/usr/bin/env python3
"""Communication of synchronized batch norm on paper, for docs/scaling.md:
bytes and messages per step of ResNet-50's BN layers (counted from its architecture)
on 8, 64 and 512 ranks, beside the allreduce of its weight gradients.

    python3 benches/scaling_cost.py

Per BN layer of C channels and per step: forward 2C + 1 values (count, then mean and M2
per channel), backward 3C (Σdy, Σdy·(x − mean), Σ(x − mean)), in f64. Per rank, for an
allreduce of n bytes on P ranks: ring 2(P−1)/P·n bytes in 2(P−1) sequential messages; a
recursive-doubling tree log2(P)·n bytes in log2(P) messages; an allgather (what
integrations/mpi does, for an exact rank-order merge) (P−1)·n bytes received. The
weight gradients: 25.6 M f32 values, ring allreduce, in 25 MB buckets.
"""

import math

# ResNet-50 (He et al. 2016, torchvision): the stem's BN, then bottleneck stages.
STAGES = [(3, 64), (4, 128), (6, 256), (3, 512)]  # (blocks, width); output 4·width


def resnet50_bn_channels():
    layers = [64]
    for blocks, w in STAGES:
        for b in range(blocks):
            layers += [w, w, 4 * w]
            if b == 0:
                layers.append(4 * w)  # the downsample branch's BN
    return layers


WEIGHTS = 25_557_032  # torchvision resnet50 parameters
BUCKET = 25 << 20  # PyTorch DDP's default bucket, bytes


def mb(b):
    return f"{b / 1e6:.2f} MB"


def main():
    layers = resnet50_bn_channels()
    total_c = sum(layers)
    fwd_values = sum(2 * c + 1 for c in layers)
    bwd_values = sum(3 * c for c in layers)
    n = (fwd_values + bwd_values) * 8  # bytes to reduce per step, f64
    collectives = 2 * len(layers)
    grad = WEIGHTS * 4
    buckets = math.ceil(grad / BUCKET)
    print(
        f"ResNet-50: {len(layers)} BN layers, {total_c} channels (C from {min(layers)} to "
        f"{max(layers)}); per step {fwd_values} values forward + {bwd_values} backward = "
        f"{mb(n)} in f64, in {collectives} collectives (one per layer and pass, each on "
        f"the critical path). Weight gradients: {WEIGHTS / 1e6:.1f} M f32 = {mb(grad)}, "
        f"{buckets} bucketed allreduces that overlap the backward."
    )
    print()
    print("| ranks | SyncBN ring: bytes, messages | SyncBN tree: bytes, messages | "
          "SyncBN allgather: bytes in | gradients ring: bytes, messages | SyncBN / gradients (ring bytes) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p in (8, 64, 512):
        ring_b = 2 * (p - 1) / p * n
        ring_m = collectives * 2 * (p - 1)
        tree_b = math.log2(p) * n
        tree_m = collectives * int(math.log2(p))
        gather_b = (p - 1) * n
        grad_b = 2 * (p - 1) / p * grad
        grad_m = buckets * 2 * (p - 1)
        print(
            f"| {p} | {mb(ring_b)}, {ring_m} | {mb(tree_b)}, {tree_m} | {mb(gather_b)} | "
            f"{mb(grad_b)}, {grad_m} | {100 * ring_b / grad_b:.2f} % |"
        )


if __name__ == "__main__":
    main()
