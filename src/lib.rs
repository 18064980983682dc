#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![forbid(missing_docs)]

mod backward;
mod clip;
pub mod distributed;
mod engine;
mod error;
pub mod fold;
mod forward;
mod fused;
mod group_norm;
mod kernels;
mod lanes;
mod layer_norm;
mod moments;
#[cfg(feature = "rayon")]
pub mod parallel;
mod renorm;
mod running;
mod saved;
mod shape;

pub use backward::Grads;
pub use clip::{clip_grad_norm, clip_grad_value, total_norm, GradNorm, NonFinite};
pub use error::Error;
pub use forward::BatchNorm;
pub use fused::{Fusion, FusionGrad};
pub use group_norm::{GroupNorm, InstanceNorm};
pub use layer_norm::{LayerNorm, RmsNorm, Rows};
pub use moments::{moments, Moments};
pub use renorm::{Renorm, RenormSaved, RenormSavedMut};
pub use running::{Correction, Momentum, Running, RunningStats};
pub use saved::{Saved, SavedMut};
pub use shape::{Layout, Shape};
