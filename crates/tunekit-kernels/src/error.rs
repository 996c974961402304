//! The kernels' own errors (the callers convert them into theirs).

/// What a kernel-level setting can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A precision name other than `f32` or `bf16`.
    #[error("unknown precision `{0}` (f32, bf16)")]
    UnknownPrecision(String),
    /// bf16 products asked for on a device without bf16 (e.g. a Vulkan device lacking it).
    #[error(
        "precision bf16: this device has no bf16 arithmetic; use f32 here (bf16 runs on the CPU and on CUDA)"
    )]
    Bf16NeedsCpu,
}

/// Result of the kernels' fallible settings.
pub type Result<T> = std::result::Result<T, Error>;
