//! Whole-model check of the GPU forward: greedy generation on stories260K (F32, 5 blocks,
//! GQA 8/4) must produce the same tokens on the GPU, on a GPU/CPU split, and on the CPU.
//! Needs a CUDA GPU and NVRTC; skips with the reason otherwise.

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::kernels::cuda::{select_device, DeviceChoice};
use edgeact_runtime::model::cuda::{GpuForward, GpuOptions};
use edgeact_runtime::model::{Activations, KvType, LlamaModel, Session, SessionOptions};
use edgeact_runtime::sampler::greedy_token;
use std::path::PathBuf;
use std::sync::Arc;

const STEPS: usize = 48;

fn model() -> Arc<LlamaModel> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K/stories260K-f32-v3.gguf");
    let file = GgufFile::open(p).expect("open stories260K");
    Arc::new(LlamaModel::load(Arc::new(file)).expect("load stories260K"))
}

/// Greedy tokens from a 3-token prompt (prefill through the batched kernels, then decode).
fn greedy(mut eval: impl FnMut(&[u32], usize) -> Vec<f32>) -> Vec<u32> {
    let mut toks = vec![1u32, 403, 407];
    let mut logits = eval(&toks, 0);
    for _ in 0..STEPS {
        let next = greedy_token(&logits);
        toks.push(next);
        logits = eval(&[next], toks.len() - 1);
    }
    toks
}

#[test]
fn greedy_generation_matches_cpu() {
    let _one_at_a_time = crate::support::one_at_a_time();
    if !crate::support::usable_gpu() {
        return;
    }
    let m = model();
    let n_ctx = 256;
    let mut cpu = Session::new(
        Arc::clone(&m),
        SessionOptions {
            n_ctx,
            kv_type: KvType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    let want = greedy(|t, _| cpu.eval(t).unwrap());
    for gpu_layers in [None, Some(2), Some(0)] {
        let opts = GpuOptions {
            ordinal: 0,
            gpu_layers,
            n_ctx,
            max_batch: 64,
            threads: 2,
            cpu_activations: Activations::Quantized,
            cpu_kv_type: KvType::F16,
        };
        let mut g = GpuForward::new(Arc::clone(&m), &opts).unwrap();
        let got = greedy(|t, pos| g.eval(t, pos).unwrap());
        assert_eq!(got, want, "gpu_layers {gpu_layers:?}");
    }
    // The same through `Session` on the selected backend (what the CLI does).
    let backend = select_device(DeviceChoice::Cuda(0)).unwrap();
    for gpu_layers in [None, Some(3)] {
        let opts = SessionOptions {
            n_ctx,
            batch_size: 2,
            ..Default::default()
        };
        let mut s = Session::with_backend(Arc::clone(&m), opts, &backend, gpu_layers).unwrap();
        assert_eq!(s.gpu_layers(), gpu_layers.unwrap_or(5));
        let got = greedy(|t, _| s.eval(t).unwrap());
        assert_eq!(got, want, "Session on {backend}, gpu_layers {gpu_layers:?}");
    }
}

#[test]
fn gpu_forward_rejects_bad_input() {
    let _one_at_a_time = crate::support::one_at_a_time();
    if !crate::support::usable_gpu() {
        return;
    }
    let m = model();
    let opts = GpuOptions {
        ordinal: 0,
        gpu_layers: None,
        n_ctx: 8,
        max_batch: 4,
        threads: 1,
        cpu_activations: Activations::Quantized,
        cpu_kv_type: KvType::F16,
    };
    let mut g = GpuForward::new(Arc::clone(&m), &opts).unwrap();
    assert!(g.eval(&[], 0).is_err());
    assert!(g.eval(&[1_000_000], 0).is_err());
    assert!(g.eval(&[1; 9], 0).is_err(), "context overflow accepted");
    let too_many = GpuOptions {
        gpu_layers: Some(99),
        ..opts
    };
    // More blocks than the model has is capped, not an error.
    assert_eq!(GpuForward::new(m, &too_many).unwrap().gpu_layers(), 5);
}
