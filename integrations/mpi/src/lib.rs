//! Synchronized batch norm (PyTorch's `SyncBatchNorm`) over MPI: every rank holds a
//! part of the global batch and normalizes it with the statistics of the whole batch,
//! by batchnorm's [`distributed`](batchnorm::distributed) building blocks and two MPI
//! collectives per pass.
//!
//! | pass | local | collective (all ranks) | then |
//! |---|---|---|---|
//! | forward | checks, [`moments`](batchnorm::moments) | allgather of a 4-value header, then of `2C + 1` f64 per rank: count, (mean, M2) per channel | merge in rank order, [`train_with_moments`](batchnorm::BatchNorm::train_with_moments) |
//! | backward | checks, [`backward_sums`](batchnorm::distributed::backward_sums) | allgather of a header, then of `3C` f64 per rank: (Σdy, Σdy·(x − mean), Σ(x − mean)) per channel | sum in rank order, [`backward_with_sums`](batchnorm::BatchNorm::backward_with_sums) |
//!
//! **Deterministic**: every rank merges all ranks' parts itself, in rank order, so the
//! result is bit-identical on every rank and on every run, whatever the network
//! delivers first. An allgather moves `P·n` values into each rank (`n = 2C + 1`
//! forward, `3C` backward) where a ring allreduce moves about `2n`; for the few ranks
//! and the `C ≤ 2048` of a BN layer it is a few hundred kilobytes at most (see
//! docs/scaling.md in the repository for the cost at scale).
//!
//! **Errors on every rank**: each rank checks its own input before anything is
//! reduced and the header carries the outcome, its channel count, its values per
//! channel and whether it updates running statistics; a rank with bad input gets its
//! own [`batchnorm::Error`], every other rank [`SyncError::Remote`] naming it, and
//! ranks that disagree on `C` (or on running statistics, or on the backward's count)
//! all get the same error. No rank is left waiting in a collective.
#![forbid(missing_docs)]

use std::fmt;

use batchnorm::distributed::{backward_sums, BackwardSums};
use batchnorm::{
    moments, BatchNorm, Correction, Error, Grads, Moments, Running, Saved, SavedMut, Shape,
};
use mpi::traits::{Communicator, CommunicatorCollectives};

/// Why a synchronized call failed; every rank gets an error when any rank fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SyncError {
    /// This rank's own input is invalid (or, for the global count, every rank's).
    Local(Error),
    /// Rank `rank`'s input is invalid (it reports which argument).
    Remote {
        /// The first rank that failed.
        rank: i32,
    },
    /// Rank `rank` has `channels` channels, rank 0 has `expected`.
    Channels {
        /// The first rank that disagrees with rank 0.
        rank: i32,
        /// Its channel count.
        channels: u64,
        /// Rank 0's.
        expected: u64,
    },
    /// Ranks disagree on whether running statistics are updated, or with which
    /// [`Correction`] (rank `rank` differs from rank 0).
    Running {
        /// The first rank that disagrees with rank 0.
        rank: i32,
    },
    /// Ranks disagree on the global count the backward was given.
    Count {
        /// The first rank that disagrees with rank 0.
        rank: i32,
        /// Its count.
        count: u64,
        /// Rank 0's.
        expected: u64,
    },
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SyncError::Local(e) => write!(f, "{e}"),
            SyncError::Remote { rank } => write!(f, "rank {rank} was given invalid input"),
            SyncError::Channels {
                rank,
                channels,
                expected,
            } => write!(
                f,
                "rank {rank} has {channels} channels, rank 0 has {expected}"
            ),
            SyncError::Running { rank } => write!(
                f,
                "rank {rank} and rank 0 disagree on updating running statistics (or on their correction)"
            ),
            SyncError::Count {
                rank,
                count,
                expected,
            } => write!(
                f,
                "rank {rank} was given a global count of {count}, rank 0 {expected}"
            ),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        SyncError::Local(e)
    }
}

/// Header of a pass: [failed, channels, a, b].
const HEADER: usize = 4;

/// Batch norm synchronized over the ranks of `comm`: the layer `bn` on every rank,
/// each with its own part of the batch (same channels and spatial size, any number of
/// samples but at least one value per channel).
pub struct SyncBatchNorm<'a, C: Communicator> {
    /// The ranks that share the batch.
    pub comm: &'a C,
    /// The layer (the same γ, β and eps on every rank).
    pub bn: BatchNorm<'a>,
}

impl<C: Communicator> SyncBatchNorm<'_, C> {
    /// Exchanges the header of a pass: this rank's `[failed, channels, a, b]`; returns
    /// every rank's, or the error every rank reports when one failed.
    fn headers(&self, own: Result<(), Error>, header: [u64; 3]) -> Result<Vec<u64>, SyncError> {
        let size = self.comm.size() as usize;
        let mine = [u64::from(own.is_err()), header[0], header[1], header[2]];
        let mut all = vec![0u64; HEADER * size];
        self.comm.all_gather_into(&mine[..], &mut all[..]);
        own?;
        if let Some(rank) = all.chunks(HEADER).position(|h| h[0] != 0) {
            return Err(SyncError::Remote { rank: rank as i32 });
        }
        let expected = all[1];
        if let Some(rank) = all.chunks(HEADER).position(|h| h[1] != expected) {
            return Err(SyncError::Channels {
                rank: rank as i32,
                channels: all[HEADER * rank + 1],
                expected,
            });
        }
        Ok(all)
    }

    /// Every rank's `values`, concatenated in rank order (the same length on each).
    fn gather(&self, values: &[f64]) -> Vec<f64> {
        let mut all = vec![0.0; values.len() * self.comm.size() as usize];
        self.comm.all_gather_into(values, &mut all[..]);
        all
    }

    /// Train forward of this rank's part `x` with the statistics of the whole batch:
    /// as [`BatchNorm::train`] on the concatenation of every rank's part (in rank
    /// order), this rank's slice of it. Returns the global count of values per
    /// channel, which [`backward`](Self::backward) needs.
    ///
    /// Collective: every rank of `comm` must call it (with its own part).
    ///
    /// # Errors
    /// On every rank when any rank's input is invalid (see [`SyncError`]), or when the
    /// global batch has too few values ([`Error::TooFewValues`]).
    pub fn train(
        &self,
        x: &[f32],
        y: &mut [f32],
        shape: Shape,
        saved: SavedMut<'_>,
        running: Option<&mut Running<'_>>,
    ) -> Result<u64, SyncError> {
        let cs = shape.channels;
        let mut local = vec![Moments::EMPTY; cs];
        let own = self
            .bn
            .check_train_part(x, y, shape, saved.as_saved(), running.as_deref())
            .and_then(|()| moments(x, shape, &mut local));
        let m = shape.batch.saturating_mul(shape.spatial) as u64;
        // None, unbiased or biased running variance: the same on every rank.
        let flag = match running.as_deref().map(|r| r.correction) {
            None => 0,
            Some(Correction::Unbiased) => 1,
            Some(Correction::Biased) => 2,
        };
        let headers = self.headers(own, [cs as u64, m, flag])?;
        if let Some(rank) = headers.chunks(HEADER).position(|h| h[3] != headers[3]) {
            return Err(SyncError::Running { rank: rank as i32 });
        }
        // count, then (mean, M2) per channel: the count is the part's m for all.
        let mut mine = Vec::with_capacity(2 * cs + 1);
        mine.push(m as f64);
        for l in &local {
            mine.extend([l.mean, l.m2]);
        }
        let all = self.gather(&mine);
        let mut global = vec![Moments::EMPTY; cs];
        for (rank, part) in all.chunks(2 * cs + 1).enumerate() {
            // The header's count is exact where the f64 one might not be.
            let count = headers[HEADER * rank + 2];
            for (g, mm) in global.iter_mut().zip(part[1..].chunks(2)) {
                let p = Moments {
                    count,
                    mean: mm[0],
                    m2: mm[1],
                };
                *g = g.merge(p);
            }
        }
        let count = headers.chunks(HEADER).map(|h| h[2]).sum();
        self.bn
            .train_with_moments(x, y, shape, &global, saved, running)?;
        Ok(count)
    }

    /// Train backward of this rank's part: as [`BatchNorm::backward`] on the whole
    /// batch, this rank's slice of `dx`, and the whole batch's `dγ` and `dβ` (the
    /// same on every rank: do not reduce them again). `count` is what
    /// [`train`](Self::train) returned.
    ///
    /// Collective: every rank of `comm` must call it.
    ///
    /// # Errors
    /// On every rank when any rank's input is invalid or the ranks disagree on
    /// `count` or the channels (see [`SyncError`]).
    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        shape: Shape,
        saved: Saved<'_>,
        count: u64,
        grads: Grads<'_>,
    ) -> Result<(), SyncError> {
        let cs = shape.channels;
        let mut local = vec![BackwardSums::ZERO; cs];
        let own = self
            .bn
            .check_backward_part(x, dy, shape, saved, &grads)
            .and_then(|()| backward_sums(x, dy, shape, saved.mean, &mut local));
        let headers = self.headers(own, [cs as u64, count, 0])?;
        if let Some(rank) = headers.chunks(HEADER).position(|h| h[2] != headers[2]) {
            return Err(SyncError::Count {
                rank: rank as i32,
                count: headers[HEADER * rank + 2],
                expected: headers[2],
            });
        }
        let mine: Vec<f64> = local
            .iter()
            .flat_map(|s| [s.dy, s.dy_xmu, s.x_mu])
            .collect();
        let all = self.gather(&mine);
        let mut global = vec![BackwardSums::ZERO; cs];
        for part in all.chunks(3 * cs.max(1)) {
            for (g, s) in global.iter_mut().zip(part.chunks(3)) {
                *g = g.merge(BackwardSums {
                    dy: s[0],
                    dy_xmu: s[1],
                    x_mu: s[2],
                });
            }
        }
        self.bn
            .backward_with_sums(x, dy, shape, saved, &global, count, grads)?;
        Ok(())
    }
}

/// Replaces `values` on every rank by their sum over ranks, added in rank order in
/// f64 (so bit-identical on every rank and run): a data-parallel gradient allreduce
/// that does not depend on the network's order. Collective; the same length on every
/// rank.
pub fn sum_in_rank_order<C: Communicator>(comm: &C, values: &mut [f32]) {
    let mut all = vec![0.0f32; values.len() * comm.size() as usize];
    comm.all_gather_into(&values[..], &mut all[..]);
    let mut sums = vec![0.0f64; values.len()];
    for part in all.chunks(values.len().max(1)) {
        for (s, v) in sums.iter_mut().zip(part) {
            *s += f64::from(*v);
        }
    }
    for (v, s) in values.iter_mut().zip(sums) {
        *v = s as f32;
    }
}
