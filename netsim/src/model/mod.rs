//! The pure model: topology files in, a resolved [`Plan`] out. Never touches the kernel.

pub mod plan;

pub use plan::Plan;
