#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![forbid(missing_docs)]

mod error;
pub mod fold;
mod shape;

pub use error::Error;
pub use shape::{Layout, Shape};
