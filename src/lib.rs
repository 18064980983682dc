#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![forbid(missing_docs)]

mod backward;
mod error;
pub mod fold;
mod forward;
mod lanes;
mod moments;
mod shape;
mod walk;

pub use backward::Grads;
pub use error::Error;
pub use forward::{BatchNorm, Momentum, Running};
pub use moments::{moments, Moments};
pub use shape::{Layout, Shape};
