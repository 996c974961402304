//! tunekit's CPU kernels: the fused ops of the Flex (CPU) backend as burn backend extensions
//! with their own backward ([`fused`], [`attention`]), bf16 products on AMX ([`bf16`]), int8
//! linear layers ([`int8`]), the fused AdamW update ([`adamw`]), the allocator setting of
//! the binaries ([`alloc`]) and the cores' measured FMA peak ([`peak`]).
//!
//! All of the workspace's `unsafe` code lives in this crate (SIMD intrinsics, inline AMX
//! assembly, disjoint writes from rayon tasks through raw pointers, the mimalloc option
//! setter); every other crate is `#![forbid(unsafe_code)]`. Each `unsafe` block states why it
//! is sound in a `// SAFETY:` comment. x86-only code sits behind `cfg(target_arch = "x86_64")`
//! and is picked at run time by CPU feature; every kernel has a portable path with the same
//! results, so the crate builds and runs on other architectures.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod adamw;
pub mod alloc;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod amx;
pub mod attention;
pub mod bf16;
mod error;
pub mod fused;
pub mod int8;
pub mod peak;

pub use bf16::Precision;
pub use error::{Error, Result};
