//! `--repack`: a model whose repackable weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) are
//! repacked must compute what the same model computes from the file mapping: the same logits up
//! to float summation order, the same greedy tokens. The kernels are the process-wide path's: AVX-512
//! VNNI where present, AVX2 otherwise (run it also with `EDGEACT_KERNELS=avx2` on a VNNI
//! machine to cover both). Models: stories260K quantized to Q4_0 (Q4_0 blocks and a Q8_0
//! `output.weight`) and to Q8_0 by `edgeact quantize`, and with every 2-D weight in Q4_1, Q5_0
//! or Q5_1; the converter tests' tiny random checkpoint (256 wide) converted to Q4_K_M (Q4_K and
//! Q6_K tensors) and with every 2-D weight in Q5_K. `RepackChoice::All` repacks all of them.

use crate::convert_support;
use crate::stories_support;

use edgeact_quantize::{convert, Mix, Options};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::kernels::cpu::repack_supported;
use edgeact_runtime::model::{LlamaModel, RepackChoice, Session, SessionOptions};
use edgeact_runtime::quant::GgmlType;
use edgeact_runtime::sampler::greedy_token;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const STORIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/stories260K/stories260K-f32-v3.gguf"
);

/// stories260K quantized to Q4_0 by `edgeact quantize`, in `dir`.
fn stories_q4_0(dir: &Path) -> std::path::PathBuf {
    stories_quantized(dir, "q4_0")
}

/// stories260K quantized to the mix `ty` (`edgeact quantize --type`), in `dir`.
fn stories_quantized(dir: &Path, ty: &str) -> std::path::PathBuf {
    let out = dir.join(format!("stories260K-{ty}.gguf"));
    let res = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(["quantize", STORIES, "-o"])
        .arg(&out)
        .args(["--type", ty, "-q"])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    out
}

fn load(path: &Path, repack: bool) -> (Arc<LlamaModel>, usize) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut model = LlamaModel::load(file).unwrap();
    let bytes = if repack {
        model.repack(RepackChoice::All, 2, &mut |_, _| {}).unwrap().bytes
    } else {
        0
    };
    (Arc::new(model), bytes as usize)
}

/// The model at `path` from the mapping and repacked, or `None` (with the reason printed)
/// where this CPU has no kernel for repacked weights, after checking nothing was repacked.
fn mapped_and_repacked(path: &Path) -> Option<(Arc<LlamaModel>, Arc<LlamaModel>)> {
    let (plain, _) = load(path, false);
    let (packed, bytes) = load(path, true);
    if !repack_supported() {
        assert_eq!(bytes, 0, "nothing may be repacked without a kernel for it");
        eprintln!("skipped the comparison: this CPU has no kernel for repacked weights (AVX2 or NEON)");
        return None;
    }
    assert!(bytes > 0, "no weights were repacked");
    Some((plain, packed))
}

#[test]
fn repacked_q4_0_model_matches_the_mapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let q4 = stories_q4_0(dir.path());

    // 5 layers of Q4_0 matrices of 64-wide rows and the Q8_0 `output.weight`; the embeddings
    // stay in the mapping.
    if let Some((plain, packed)) = mapped_and_repacked(&q4) {
        compare(&plain, &packed, prefill_bound());
    }
}

#[test]
fn repacked_q8_0_model_matches_the_mapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = stories_quantized(dir.path(), "q8_0");
    // Every matrix Q8_0 (the 32-element panels with their + 128 bias). The bound is the one
    // for different float summation orders (see `prefill_bound`) on every path: the repacked
    // Q8_0 kernels apply the + 128 exactly in integers and in the decode kernel's order (so
    // prefill and decode agree bit for bit), the mapped model's tiles and panels in their own
    // orders, and this model amplifies a flipped activation quant (measured: 0.17 for the
    // 5-token prompt on AVX-512 VNNI). A wrong kernel moves the logits by whole units, and the
    // greedy tokens must agree too.
    if let Some((plain, packed)) = mapped_and_repacked(&q8) {
        compare(&plain, &packed, 0.5);
    }
}

/// stories260K with every 2-D weight whose rows are whole 32-blocks in `ty`, in `dir`.
fn stories_all(dir: &Path, ty: GgmlType) -> std::path::PathBuf {
    let out = dir.join(format!("stories260K-all-{ty}.gguf"));
    stories_support::stories_all(Path::new(STORIES), ty, &out);
    out
}

#[test]
fn repacked_q5_models_match_the_mapped_ones() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q5_0, GgmlType::Q5_1] {
        let path = stories_all(dir.path(), ty);
        // As for Q8_0: the repacked Q5 kernels sum in their own float order (the offset of
        // Q5_0 exactly in integers), so the bound for different orders.
        if let Some((plain, packed)) = mapped_and_repacked(&path) {
            compare(&plain, &packed, 0.5);
        }
    }
}

#[test]
fn repacked_q4_1_model_matches_the_mapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = stories_all(dir.path(), GgmlType::Q4_1);
    // As Q5_1 without the fifth bits: the repacked kernels sum in their own float order (the
    // min through Q8_1's `s`, as the file layout's kernels), so the bound for different orders.
    if let Some((plain, packed)) = mapped_and_repacked(&path) {
        compare(&plain, &packed, 0.5);
    }
}

/// The logit bound for stories260K's prompt: 1e-3 where both models' prefill runs the same
/// VNNI panels (AVX-512 VNNI: bit-identical unpacked panels), 0.5 where the mapped model runs
/// the file-layout tiles with another float summation order (AVX2). There a last-bit
/// difference can flip one Q8_0 activation quant, and this model amplifies that: measured,
/// the mapped model alone differs between EDGEACT_KERNELS=scalar and avx2 by 0.21 (tokens 21
/// on, 2e-6 before), while the repacked AVX2 model stays within 2e-6 of scalar. A wrong
/// kernel moves every token's logits by whole units (range about +-16); the kernels' exact
/// agreement with the scalar specification is tested per matmul in `kernels::cpu::repack`.
fn prefill_bound() -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use edgeact_runtime::kernels::cpu::{backend, Backend};
        if backend() == Backend::Avx512 && is_x86_feature_detected!("avx512vnni") {
            return 1e-3;
        }
    }
    0.5
}

/// The converter tests' tiny random checkpoint converted to Q4_K_M in `dir` (Q4_K and Q6_K
/// tensors).
pub(crate) fn tiny_q4_k_m(dir: &Path) -> std::path::PathBuf {
    let ck = dir.join("ck");
    std::fs::create_dir(&ck).unwrap();
    convert_support::write_checkpoint(&ck, false, None);
    let path = dir.join("tiny-q4_k_m.gguf");
    let mut opts = Options::new(Mix::Q4KM);
    opts.threads = 2;
    convert(&ck, &path, &opts, &mut edgeact_quantize::convert::Silent).unwrap();
    path
}

#[test]
fn repacked_q4_k_m_model_matches_the_mapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q4_k_m(dir.path());
    // This model's logits are small (about +-0.07), so the bound is absolute and tight.
    if let Some((plain, packed)) = mapped_and_repacked(&path) {
        compare(&plain, &packed, 1e-5);
    }
}

#[test]
fn repacked_q5_k_model_matches_the_mapped_one() {
    // The tiny checkpoint (256-wide rows) as F32, then every 2-D weight in Q5_K: Q5_K panels
    // in every matrix (the converter has no Q5_K mix).
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    convert_support::write_checkpoint(&ck, false, None);
    let f32_path = dir.path().join("tiny-f32.gguf");
    convert(
        &ck,
        &f32_path,
        &Options::new(Mix::F32),
        &mut edgeact_quantize::convert::Silent,
    )
    .unwrap();
    let path = dir.path().join("tiny-q5_k.gguf");
    stories_support::stories_all(&f32_path, GgmlType::Q5_K, &path);
    let file = GgufFile::open(&path).unwrap();
    assert!(file.tensors().iter().filter(|t| t.ty == GgmlType::Q5_K).count() >= 7);
    if let Some((plain, packed)) = mapped_and_repacked(&path) {
        compare(&plain, &packed, 1e-5);
    }
}

/// Greedy steps that must agree before a near-tie may end the comparison.
const MIN_AGREED: usize = 16;
/// How close two candidates' logits are for a flipped argmax to count as a near-tie: decode
/// logits of the mapped and the repacked Q4_0 stories260K differ by up to ~0.25 (logits ~ +-10).
const DECODE_NEAR_TIE: f32 = 0.5;

/// Logits of prompts of 40 tokens (prefill panels) and 5 tokens (small batch) and then 64
/// greedy decode steps agree between the two models.
fn compare(plain: &Arc<LlamaModel>, packed: &Arc<LlamaModel>, bound: f32) {
    let prompt: Vec<u32> = std::iter::once(1).chain((0..39).map(|i| 20 + (i * 37) % 400)).collect();
    for prefix in [&prompt[..], &prompt[..5]] {
        let mut a = Session::new(plain.clone(), SessionOptions::default()).unwrap();
        let mut b = Session::new(packed.clone(), SessionOptions::default()).unwrap();
        let la = a.eval_all_logits(prefix).unwrap();
        let lb = b.eval_all_logits(prefix).unwrap();
        let max_diff = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        // Same integer block sums; only the order of float additions differs (logits ~ +-10).
        assert!(
            max_diff < bound,
            "prompt of {}: logits differ by {max_diff}",
            prefix.len()
        );
        let n_vocab = plain.config().vocab_size;
        let (mut ra, mut rb) = (la[la.len() - n_vocab..].to_vec(), lb[lb.len() - n_vocab..].to_vec());
        for step in 0..64 {
            let (ta, tb) = (greedy_token(&ra), greedy_token(&rb));
            if ta != tb {
                // Float sums in another order may only flip a near-tie, after a good run of
                // agreeing steps: both models must see the two candidates close together; the
                // sequences part there, so the comparison ends.
                let gap = |r: &[f32]| (r[ta as usize] - r[tb as usize]).abs();
                assert!(
                    step >= MIN_AGREED && gap(&ra) < DECODE_NEAR_TIE && gap(&rb) < DECODE_NEAR_TIE,
                    "greedy step {step} after a prompt of {}: {ta} vs {tb} with gaps {} and {}",
                    prefix.len(),
                    gap(&ra),
                    gap(&rb)
                );
                eprintln!("prompt of {}: near-tie at step {step} ({ta} vs {tb})", prefix.len());
                break;
            }
            ra = a.eval(&[ta]).unwrap();
            rb = b.eval(&[tb]).unwrap();
        }
    }
}

/// The default choice repacks exactly the matrices `repack_by_default` names for this CPU's
/// kernel path (Q4_K_M: Q4_K and Q6_K tensors), `All` every repackable one; progress reports
/// climb to the total of the repacked matrices' file bytes, once per matrix.
#[test]
fn default_repacking_follows_the_measured_table_and_reports_progress() {
    use edgeact_runtime::kernels::cpu::{backend, repack_by_default, repackable};
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q4_k_m(dir.path());
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let measured: fn(GgmlType) -> bool = |ty| repack_by_default(backend(), ty);
    for (which, wanted) in [(RepackChoice::Measured, measured), (RepackChoice::All, repackable)] {
        let mut model = LlamaModel::load(Arc::clone(&file)).unwrap();
        let expected: Vec<(String, u64)> = file
            .tensors()
            .iter()
            .filter(|t| (t.name.starts_with("blk.") || t.name == "output.weight") && t.dims.len() == 2)
            .filter(|t| repack_supported() && wanted(t.ty))
            .map(|t| (t.name.clone(), t.n_bytes()))
            .collect();
        let total: u64 = expected.iter().map(|(_, n)| n).sum();
        let mut seen = Vec::new();
        let report = model
            .repack(which, 2, &mut |done, todo| seen.push((done, todo)))
            .unwrap();
        assert_eq!(report.tensors, expected.len(), "{which:?}");
        assert_eq!(seen.len(), expected.len(), "{which:?}: one report per matrix");
        assert!(seen.iter().all(|&(_, todo)| todo == total), "{which:?}: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{which:?}: {seen:?}");
        assert_eq!(seen.last().map(|s| s.0), (!seen.is_empty()).then_some(total));
        // The panels hold the same quants and scales as the file: about its size.
        assert!(
            report.bytes >= total && report.bytes < total + total / 4 + 4096,
            "{which:?}: {report:?}"
        );
    }
}

/// The CLI's choice: by default the measured table's types are repacked (stories260K Q4_0:
/// its Q4_0 matrices and its Q8_0 `output.weight`, each where its type is repacked by default
/// on this CPU's path), `--no-repack` repacks nothing, `--repack` everything repackable, both
/// flags together are refused; `-v` and `bench --json` report it.
#[test]
fn cli_repacks_by_default_where_measured_and_reports_the_load() {
    use edgeact_runtime::kernels::cpu::{backend, repack_by_default, repackable};
    let dir = tempfile::tempdir().unwrap();
    let q4 = stories_q4_0(dir.path());
    let q4 = q4.to_str().unwrap();
    let cache = dir.path().join("cache");
    let edgeact = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeact"))
            .args(args)
            .env("EDGEACT_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let file = GgufFile::open(Path::new(q4)).unwrap();
    // The matrices `LlamaModel::repack` considers (as in the test above) of types `wanted`.
    let matrices = |wanted: &dyn Fn(GgmlType) -> bool| {
        file.tensors()
            .iter()
            .filter(|t| (t.name.starts_with("blk.") || t.name == "output.weight") && t.dims.len() == 2)
            .filter(|t| repack_supported() && wanted(t.ty))
            .count()
    };
    assert!(matrices(&|ty| ty == GgmlType::Q4_0) > 0);
    let n_default = matrices(&|ty| repack_by_default(backend(), ty));
    let n_all = matrices(&repackable);
    let run = ["run", "-m", q4, "-p", "Once", "-n", "2", "--device", "cpu", "-v"];
    for (flag, repacked) in [(None, n_default), (Some("--no-repack"), 0), (Some("--repack"), n_all)] {
        let out = edgeact(&[&run[..], flag.as_slice()].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flag:?}: {err}");
        let line = err.lines().find(|l| l.starts_with("load: ")).expect("a load line");
        let want = if repacked > 0 {
            format!("repacked {repacked} matrices")
        } else {
            "nothing repacked".to_string()
        };
        assert!(line.contains(&want), "{flag:?}: {line}");
        assert!(!cfg!(target_os = "linux") || line.contains("peak RSS"), "{line}");
        assert!(line.contains("CPU kernels "), "{line}");
        // Without `--repack-cache` nothing is cached.
        assert!(!line.contains("cache"), "{flag:?}: {line}");
        if repacked > 0 {
            // With it: the first run writes the cache, the next maps the same matrices.
            let cached = [&run[..], flag.as_slice(), &["--repack-cache"]].concat();
            for want_cache in ["repack cache miss", "mapped from the repack cache"] {
                let out = edgeact(&cached);
                let err = String::from_utf8_lossy(&out.stderr);
                let line = err.lines().find(|l| l.starts_with("load: ")).expect("a load line");
                assert!(out.status.success() && line.contains(want_cache), "{flag:?}: {line}");
                assert!(line.contains(&want), "{flag:?} with the cache: {line}");
            }
        }
    }
    let out = edgeact(&[&run[..], &["--repack", "--no-repack"]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));

    let out = edgeact(&[
        "bench", "-m", q4, "-p", "4", "-n", "2", "-r", "1", "--json", "--device", "cpu",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in rows.as_array().unwrap() {
        let load = &r["load"];
        assert_eq!(load["repacked_tensors"], n_default, "{r}");
        assert!(load["load_seconds"].as_f64().unwrap() >= 0.0, "{r}");
        assert_eq!(load["repack_seconds"].as_f64().unwrap() > 0.0, n_default > 0, "{r}");
        assert!(
            !cfg!(target_os = "linux") || load["peak_rss_bytes"].as_u64().unwrap() > 0,
            "{r}"
        );
        // Absent facts are null, not empty strings: no cache was asked for; the CPU ran it.
        assert!(load["repack_cache"].is_null(), "{r}");
        assert!(!load["cpu_kernels"].as_str().unwrap().is_empty(), "{r}");
    }
}

/// Where the decode kernels prefetch (`EDGEACT_PREFETCH`, by CPU vendor otherwise) changes no
/// bit: each policy's code runs on any x86 CPU when forced, so both are run here whatever this
/// CPU's vendor, from the mapping (the file-layout tiles, which prefetch under `l2` only) and
/// repacked (the panel kernels, which prefetch under both), on the 32-element formats (Q4_0
/// with a Q8_0 `output.weight`, Q5_1's min kernels), the k-quants (Q4_K_M: Q4_K and Q6_K) and
/// float weights (F32, F16).
#[cfg(target_arch = "x86_64")]
#[test]
fn prefetch_policies_generate_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let models = [
        stories_q4_0(dir.path()),
        stories_all(dir.path(), GgmlType::Q5_1),
        tiny_q4_k_m(dir.path()),
        Path::new(STORIES).to_path_buf(),
        stories_quantized(dir.path(), "f16"),
    ];
    for model in &models {
        for layout in ["--no-repack", "--repack"] {
            let generate = |policy: &str| {
                let out = Command::new(env!("CARGO_BIN_EXE_edgeact"))
                    .args(["run", "-m"])
                    .arg(model)
                    .args([
                        "-p",
                        "Once upon",
                        "-n",
                        "24",
                        "--temp",
                        "0",
                        "-t",
                        "2",
                        "--device",
                        "cpu",
                        "-v",
                        layout,
                    ])
                    .env("EDGEACT_PREFETCH", policy)
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{policy} {layout}: {err}");
                // The load line names the policy that ran (on the x86 SIMD paths).
                let load = err.lines().find(|l| l.starts_with("load: ")).expect("a load line");
                let simd = !load.contains("CPU kernels scalar");
                assert!(
                    !simd || load.contains(&format!("prefetch {policy}")),
                    "{policy} not taken: {load}"
                );
                out.stdout
            };
            let l1 = generate("l1");
            assert!(!l1.is_empty(), "{} {layout}: no output", model.display());
            assert_eq!(l1, generate("l2"), "{} {layout}", model.display());
        }
    }
}
