#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![forbid(missing_docs)]

mod backward;
pub mod distributed;
mod engine;
mod error;
pub mod fold;
mod forward;
mod fused;
mod kernels;
mod lanes;
mod moments;
#[cfg(feature = "rayon")]
pub mod parallel;
mod renorm;
mod shape;

pub use backward::Grads;
pub use error::Error;
pub use forward::{BatchNorm, Momentum, Running};
pub use fused::{Fusion, FusionGrad};
pub use moments::{moments, Moments};
pub use renorm::{Renorm, RenormSaved};
pub use shape::{Layout, Shape};
