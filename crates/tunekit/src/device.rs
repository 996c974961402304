//! *Where* it runs: the compute device, chosen once. Flex (pure-Rust CPU, SIMD + rayon) by
//! default; CUDA when built with `--features cuda` and asked for.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Devices tunekit can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// burn's Flex CPU backend.
    #[default]
    Cpu,
    /// burn's CUDA backend (GPU 0); needs the `cuda` feature.
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda),
            other => Err(Error::Config(format!(
                "unknown device `{other}` (cpu, cuda)"
            ))),
        }
    }
}

/// The burn device for `kind`.
pub fn device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(Error::Config(
            "--device cuda: this tunekit was built without CUDA; rebuild with `--features cuda` (nothing runs on the CPU instead)".into(),
        )),
    }
}
