//! Which device runs the model: probing for CUDA and resolving `--device auto|cpu|cuda[:N]`.
//!
//! Compiled with or without the `cuda` feature so the CLI can always offer the flag; without
//! the feature [`probe`] reports "not compiled in" and `cuda` choices are an error.

use super::CudaError;
use std::fmt;
use std::str::FromStr;

/// The `--device` flag's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA GPU if one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (device 0) or `cuda:N`.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = CudaError;
    fn from_str(s: &str) -> Result<DeviceChoice, CudaError> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => l
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| CudaError::BadChoice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where the forward pass runs, as decided by [`select_device`].
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    Cpu,
    /// A CUDA GPU (open it with `GpuContext::open(info.ordinal)`).
    Cuda(GpuInfo),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cpu => f.write_str("cpu"),
            Backend::Cuda(g) => write!(f, "{g}"),
        }
    }
}

/// One CUDA device as the driver reports it (no context is created to find this out).
#[derive(Clone, Debug, PartialEq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    /// Total device memory in bytes.
    pub total_mem: usize,
    /// Compute capability (major, minor), e.g. (8, 6).
    pub compute_capability: (u32, u32),
}

impl GpuInfo {
    /// Architecture number for NVRTC, e.g. 86.
    pub fn arch(&self) -> u32 {
        self.compute_capability.0 * 10 + self.compute_capability.1
    }
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cuda:{} ({}, {:.1} GiB, sm_{})",
            self.ordinal,
            self.name,
            self.total_mem as f64 / (1u64 << 30) as f64,
            self.arch()
        )
    }
}

/// What [`probe`] found.
#[derive(Clone, Debug, Default)]
pub struct CudaAvailability {
    /// Built with the `cuda` feature.
    pub compiled_in: bool,
    /// `cuDriverGetVersion`, e.g. 12040, when libcuda loaded.
    pub driver_version: Option<i32>,
    /// NVRTC (major, minor) when libnvrtc loaded.
    pub nvrtc_version: Option<(i32, i32)>,
    pub devices: Vec<GpuInfo>,
    /// Why CUDA is not usable (the first problem found), `None` when it is.
    pub problem: Option<String>,
}

impl CudaAvailability {
    /// True when a GPU can run the kernels (driver, NVRTC and at least one device).
    pub fn usable(&self) -> bool {
        self.problem.is_none() && !self.devices.is_empty()
    }

    /// One line for logs and `--help`-style diagnostics.
    pub fn summary(&self) -> String {
        let ver = |v: Option<String>| v.unwrap_or_else(|| "missing".into());
        let driver = ver(self.driver_version.map(|v| format!("{}.{}", v / 1000, v % 1000 / 10)));
        let nvrtc = ver(self.nvrtc_version.map(|(a, b)| format!("{a}.{b}")));
        let devs: Vec<String> = self.devices.iter().map(|d| d.to_string()).collect();
        let mut s = format!(
            "CUDA driver {driver}, NVRTC {nvrtc}, {} device(s){}{}",
            self.devices.len(),
            if devs.is_empty() { "" } else { ": " },
            devs.join(", ")
        );
        if let Some(p) = &self.problem {
            s.push_str(&format!(" — unusable: {p}"));
        }
        s
    }
}

/// Looks for the CUDA driver, NVRTC and GPUs without creating a context. Never panics: a
/// missing library is reported in [`CudaAvailability::problem`].
pub fn probe() -> CudaAvailability {
    #[cfg(feature = "cuda")]
    {
        probe_cuda()
    }
    #[cfg(not(feature = "cuda"))]
    {
        CudaAvailability {
            problem: Some(CudaError::NotCompiled.to_string()),
            ..Default::default()
        }
    }
}

#[cfg(feature = "cuda")]
fn probe_cuda() -> CudaAvailability {
    use cudarc::driver::{result, sys};
    let mut a = CudaAvailability {
        compiled_in: true,
        ..Default::default()
    };
    let mut problem: Option<String> = None;
    match super::ensure_driver() {
        Ok(v) => a.driver_version = Some(v),
        Err(e) => problem = Some(e.to_string()),
    }
    match super::ensure_nvrtc() {
        Ok(v) => a.nvrtc_version = Some(v),
        Err(e) => problem = problem.or(Some(e.to_string())),
    }
    if let (Some(driver), Some(nvrtc)) = (a.driver_version, a.nvrtc_version) {
        if let Err(e) = super::nvrtc_readable_by(driver, nvrtc) {
            problem = problem.or(Some(e.to_string()));
        }
    }
    if a.driver_version.is_some() {
        let list = || -> Result<Vec<GpuInfo>, cudarc::driver::DriverError> {
            result::init()?;
            let n = result::device::get_count()?;
            let mut out = Vec::new();
            for ordinal in 0..n.max(0) {
                let dev = result::device::get(ordinal)?;
                let attr = |x| {
                    // SAFETY: `dev` is a valid device handle from cuDeviceGet.
                    unsafe { result::device::get_attribute(dev, x) }
                };
                let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
                let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
                out.push(GpuInfo {
                    ordinal: ordinal as usize,
                    name: result::device::get_name(dev)?,
                    // SAFETY: as above.
                    total_mem: unsafe { result::device::total_mem(dev) }?,
                    compute_capability: (major.max(0) as u32, minor.max(0) as u32),
                });
            }
            Ok(out)
        };
        match list() {
            Ok(d) => a.devices = d,
            Err(e) => problem = problem.or(Some(format!("CUDA driver: {e}"))),
        }
        if a.devices.is_empty() && problem.is_none() {
            problem = Some(CudaError::NoDevice(String::new()).to_string());
        }
    }
    a.problem = problem;
    a
}

/// Resolves `--device` into a [`Backend`] and logs the decision on one stderr line, e.g.
/// `edgeact: device cuda:0 (NVIDIA GeForce RTX 4090, 24.0 GiB, sm_89)` or
/// `edgeact: device cpu (auto: no CUDA driver ...)`.
///
/// `auto` never fails (it falls back to the CPU and says why); `cuda[:N]` fails with the reason
/// when that GPU cannot be used.
pub fn select_device(choice: DeviceChoice) -> Result<Backend, CudaError> {
    let backend = match choice {
        DeviceChoice::Cpu => {
            eprintln!("edgeact: device cpu (requested)");
            return Ok(Backend::Cpu);
        }
        DeviceChoice::Auto => {
            let a = probe();
            match (a.usable(), a.devices.first()) {
                (true, Some(d)) => Backend::Cuda(d.clone()),
                _ => {
                    let why = a.problem.unwrap_or_else(|| "no CUDA device".into());
                    eprintln!("edgeact: device cpu (auto: {why})");
                    return Ok(Backend::Cpu);
                }
            }
        }
        DeviceChoice::Cuda(n) => {
            let a = probe();
            #[cfg(feature = "cuda")]
            {
                // Report the precise cause (driver, NVRTC, none found) rather than the summary.
                super::ensure_toolchain()?;
            }
            if let Some(p) = a.problem {
                return Err(if a.compiled_in {
                    CudaError::NoDevice(format!(": {p}"))
                } else {
                    CudaError::NotCompiled
                });
            }
            match a.devices.get(n) {
                Some(d) => Backend::Cuda(d.clone()),
                None => {
                    return Err(CudaError::BadOrdinal {
                        ordinal: n,
                        count: a.devices.len(),
                    })
                }
            }
        }
    };
    eprintln!("edgeact: device {backend} ({choice})");
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_choices() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        for bad in ["", "cuda:", "cuda:x", "cuda:-1", "tpu"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_is_always_selectable_and_probe_never_panics() {
        assert_eq!(select_device(DeviceChoice::Cpu).unwrap(), Backend::Cpu);
        let a = probe();
        // Either a usable GPU, or a stated reason.
        assert!(a.usable() || a.problem.is_some(), "{}", a.summary());
        let auto = select_device(DeviceChoice::Auto).unwrap();
        assert_eq!(matches!(auto, Backend::Cuda(_)), a.usable());
    }

    #[test]
    fn cuda_without_gpu_is_a_clean_error() {
        if probe().usable() {
            eprintln!("skipped: a usable GPU is present");
            return;
        }
        let e = select_device(DeviceChoice::Cuda(0)).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}
