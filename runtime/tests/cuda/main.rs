//! CUDA tests, one binary: NVRTC compilation of every kernel (runs without a GPU when libnvrtc
//! is found), kernels against the CPU path and the offloaded model (skip without a GPU).

mod compile;
mod kernels;
mod model;

mod support {
    use edgeact_runtime::kernels::cuda::probe;
    use std::path::{Path, PathBuf};
    use std::sync::Once;

    /// Where this test binary's PTX cache goes (fresh per process).
    pub fn cache_dir() -> PathBuf {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-compile-{}", std::process::id()))
    }

    /// Sets the environment once, before any test reads it (tests run on parallel threads, and
    /// the NVRTC lookup is cached for the process): `EDGEACT_NVRTC_PATH` defaults to
    /// `scripts/fetch-nvrtc.sh`'s install directory when that exists.
    pub fn setup() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("EDGEACT_NVRTC_PATH").is_none() {
                let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nvrtc/nvidia/cuda_nvrtc/lib");
                if default.is_dir() {
                    std::env::set_var("EDGEACT_NVRTC_PATH", default);
                }
            }
            let _ = std::fs::remove_dir_all(cache_dir());
            std::env::set_var("EDGEACT_CACHE_DIR", cache_dir());
        });
    }

    /// Held by every test of this binary: the compile test counts the files of the process's
    /// one PTX cache and expects its modules freshly compiled, which GPU tests compiling into
    /// the same cache at the same time would upset.
    pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a GPU test can run; prints why not. With `EDGEACT_REQUIRE_GPU` set (a device
    /// check), no usable GPU fails the test instead of skipping it.
    pub fn usable_gpu() -> bool {
        setup();
        let a = probe();
        if a.usable() {
            return true;
        }
        assert!(
            std::env::var_os("EDGEACT_REQUIRE_GPU").is_none(),
            "EDGEACT_REQUIRE_GPU is set, but no usable CUDA GPU: {}",
            a.summary()
        );
        eprintln!("skipped: no usable CUDA GPU ({})", a.summary());
        false
    }
}
