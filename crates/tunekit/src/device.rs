//! *Where* it runs: the compute device, chosen once. Flex (pure-Rust CPU, SIMD + rayon) by
//! default; the GPU backends are cargo features of burn's, each behind the same
//! [`burn::tensor::Device`]:
//!
//! | `--device`            | cargo feature | burn backend                                      |
//! |-----------------------|---------------|---------------------------------------------------|
//! | `cpu`                 | (always)      | Flex                                              |
//! | `cuda`, `cuda:N`      | `cuda`        | CubeCL CUDA, kernels compiled by NVRTC            |
//! | `vulkan`              | `vulkan`      | CubeCL wgpu pinned to Vulkan (SPIR-V)             |
//! | `wgpu`                | `wgpu`        | CubeCL wgpu, graphics API picked by wgpu          |
//!
//! A device whose feature is not built in is an error naming the feature: nothing runs on
//! the CPU instead.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Devices tunekit can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// burn's Flex CPU backend.
    #[default]
    Cpu,
    /// burn's CUDA backend, GPU `N` (`cuda:N`; `cuda` is GPU 0); needs the `cuda` feature.
    Cuda(usize),
    /// burn's wgpu backend on Vulkan (the default adapter: a GPU, or lavapipe on a machine
    /// without one); needs the `vulkan` feature.
    Vulkan,
    /// burn's wgpu backend on whichever graphics API wgpu picks; needs the `wgpu` feature.
    Wgpu,
}

impl DeviceKind {
    /// The cargo feature a build needs for this device (`None` for the CPU).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda(_) => Some("cuda"),
            DeviceKind::Vulkan => Some("vulkan"),
            DeviceKind::Wgpu => Some("wgpu"),
        }
    }

    /// Whether this build can run on this device kind (its feature is compiled in).
    pub fn is_built(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda(_) => cfg!(feature = "cuda"),
            DeviceKind::Vulkan => cfg!(feature = "vulkan"),
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceKind::Vulkan => write!(f, "vulkan"),
            DeviceKind::Wgpu => write!(f, "wgpu"),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => {
                let i = index.parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "device `{s}`: `{index}` is not a device index (cuda:0, cuda:1, …)"
                    ))
                })?;
                (name, Some(i))
            }
            None => (s, None),
        };
        let kind = match name {
            "cpu" => DeviceKind::Cpu,
            "cuda" | "gpu" => DeviceKind::Cuda(index.unwrap_or(0)),
            "vulkan" => DeviceKind::Vulkan,
            "wgpu" => DeviceKind::Wgpu,
            other => {
                return Err(Error::Config(format!(
                    "unknown device `{other}` (cpu, cuda, cuda:N, vulkan, wgpu)"
                )));
            }
        };
        if index.is_some() && !matches!(kind, DeviceKind::Cuda(_)) {
            return Err(Error::Config(format!(
                "device `{s}`: only cuda takes an index (cuda:N)"
            )));
        }
        Ok(kind)
    }
}

/// Parses a device list (`--devices cuda:0,cuda:1`, `train.devices`): comma-separated
/// [`DeviceKind`]s, all of one backend, none twice.
///
/// # Errors
/// [`Error::Config`] for an empty list, an unknown device, a repeated one, or backends mixed.
pub fn parse_devices(list: &str) -> Result<Vec<DeviceKind>> {
    let kinds = list
        .split(',')
        .map(str::parse::<DeviceKind>)
        .collect::<Result<Vec<_>>>()?;
    check_devices(&kinds)?;
    Ok(kinds)
}

/// Checks a device list: not empty, no device twice, one backend.
///
/// # Errors
/// [`Error::Config`] naming the problem.
pub fn check_devices(kinds: &[DeviceKind]) -> Result<()> {
    let Some(first) = kinds.first() else {
        return Err(Error::Config("the device list is empty".into()));
    };
    for (i, k) in kinds.iter().enumerate() {
        if kinds[..i].contains(k) && !matches!(k, DeviceKind::Cpu) {
            return Err(Error::Config(format!(
                "device `{k}` is listed twice (each GPU can be used once)"
            )));
        }
        if std::mem::discriminant(k) != std::mem::discriminant(first) {
            return Err(Error::Config(format!(
                "devices `{first}` and `{k}` are of different backends; data-parallel training \
                 needs devices of one kind"
            )));
        }
    }
    Ok(())
}

/// The burn device for `kind`.
///
/// # Errors
/// [`Error::Config`] when this build lacks the device's cargo feature.
pub fn device(kind: DeviceKind) -> Result<Device> {
    if !kind.is_built() {
        let feature = kind.feature().unwrap_or("?");
        return Err(Error::Config(format!(
            "--device {kind}: this tunekit was built without {}; rebuild with `--features \
             {feature}` (see README, \"GPUs\"; nothing runs on the CPU instead)",
            feature.to_uppercase()
        )));
    }
    Ok(match kind {
        DeviceKind::Cpu => Device::flex(),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda(i) => Device::cuda(i),
        #[cfg(feature = "vulkan")]
        DeviceKind::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[allow(unreachable_patterns)]
        _ => unreachable!("is_built checked the feature"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (s, k) in [
            ("cpu", DeviceKind::Cpu),
            ("cuda", DeviceKind::Cuda(0)),
            ("gpu", DeviceKind::Cuda(0)),
            ("cuda:3", DeviceKind::Cuda(3)),
            ("vulkan", DeviceKind::Vulkan),
            ("wgpu", DeviceKind::Wgpu),
        ] {
            assert_eq!(s.parse::<DeviceKind>().unwrap(), k, "{s}");
        }
        assert_eq!(DeviceKind::Cuda(1).to_string(), "cuda:1");
        for bad in ["tpu", "cuda:x", "vulkan:1", "cuda:", ""] {
            assert!(bad.parse::<DeviceKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_lists_are_one_backend_without_repeats() {
        assert_eq!(
            parse_devices("cuda:0,cuda:1").unwrap(),
            vec![DeviceKind::Cuda(0), DeviceKind::Cuda(1)]
        );
        // Several CPU devices are the same CPU: allowed (burn's gather-to-main strategy on
        // one machine, the tested stand-in for several GPUs).
        assert_eq!(parse_devices("cpu,cpu").unwrap().len(), 2);
        let twice = parse_devices("cuda:0,cuda:0").unwrap_err().to_string();
        assert!(twice.contains("twice"), "{twice}");
        let mixed = parse_devices("cpu,cuda:0").unwrap_err().to_string();
        assert!(mixed.contains("different backends"), "{mixed}");
        assert!(parse_devices("cuda:0,").is_err());
    }

    #[test]
    fn a_device_not_built_in_names_its_feature() {
        for kind in [DeviceKind::Cuda(0), DeviceKind::Vulkan, DeviceKind::Wgpu] {
            if kind.is_built() {
                continue;
            }
            let e = device(kind).unwrap_err().to_string();
            let feature = kind.feature().unwrap();
            assert!(e.contains(&format!("--features {feature}")), "{e}");
        }
    }
}
