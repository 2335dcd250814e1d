//! NVRTC compiles every CUDA kernel module (no GPU needed, only libnvrtc).
//!
//! Finds NVRTC on the loader's path or in `EDGEACT_NVRTC_PATH` (set it to the directory
//! `scripts/fetch-nvrtc.sh` prints; when unset, the script's default install directory
//! `target/nvrtc` is used if it exists); skips with a printed reason otherwise.
//! Compiles for several architectures, from Volta (sm_70) to Hopper (sm_90), with the disk
//! cache pointed at a fresh directory so the test runs the real compiler, then checks the
//! cache files it wrote and the in-process cache.

use crate::support::{cache_dir, setup};
use edgeact_runtime::kernels::cuda::{self, compile_all, compile_module, SOURCES};

/// Kernel entry points every module must export (the launchers look these names up).
fn expected_entries(module: &str) -> Vec<String> {
    let types = ["f32", "f16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"];
    match module {
        "matvec" | "matmul" => types.iter().map(|t| format!("{module}_{t}")).collect(),
        "ops" => ["rms_norm", "rope", "swiglu", "add_inplace", "softmax", "kv_store"]
            .map(String::from)
            .to_vec(),
        "attention" => vec!["attention".into()],
        other => panic!("unexpected module {other}"),
    }
}

#[test]
fn every_kernel_module_compiles_with_nvrtc() {
    let _one_at_a_time = crate::support::one_at_a_time();
    setup();
    let version = match cuda::nvrtc_version() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    eprintln!("NVRTC {}.{}", version.0, version.1);

    for arch in [70, 75, 80, 86, 89, 90] {
        let modules = compile_all(arch).unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
        assert_eq!(modules.len(), SOURCES.len());
        for m in &modules {
            assert!(!m.from_disk, "{} for sm_{arch} came from a stale cache", m.name);
            assert!(
                m.ptx.contains(&format!(".target sm_{arch}")),
                "{}: wrong target",
                m.name
            );
            for entry in expected_entries(&m.name) {
                assert!(
                    m.ptx.contains(&format!(".entry {entry}(")),
                    "{} for sm_{arch} lacks kernel {entry}",
                    m.name
                );
            }
        }
    }
    // The PTX went to disk, one file per module and architecture.
    // (A GPU test of this binary may have added its own GPU's architecture.)
    let archs = ["sm70.ptx", "sm75.ptx", "sm80.ptx", "sm86.ptx", "sm89.ptx", "sm90.ptx"];
    let files = std::fs::read_dir(cache_dir().join("cuda"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            archs.iter().any(|a| name.ends_with(&format!("-{a}")))
        })
        .count();
    assert_eq!(files, SOURCES.len() * 6);
    // In-process cache: the same Arc comes back without recompiling.
    let a = compile_module("ops", 86).unwrap();
    let b = compile_module("ops", 86).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let _ = std::fs::remove_dir_all(cache_dir());
}

#[test]
fn unknown_module_and_bad_arch_are_errors() {
    let _one_at_a_time = crate::support::one_at_a_time();
    setup();
    if let Err(e) = cuda::nvrtc_version() {
        eprintln!("skipped: {e}");
        return;
    }
    assert!(compile_module("no_such_module", 80).is_err());
    // sm_20 predates anything NVRTC 12 can target: a clean error, not a panic.
    let e = compile_module("ops", 20).unwrap_err();
    assert!(e.to_string().contains("sm_20"), "{e}");
}
