//! Greedy parity with llama.cpp on AgentLM's larger shapes: the 13B shape (dim 5120, 40 heads,
//! no GQA, FFN 13824) and the 70B shape (dim 8192, 64 heads over 8 KV heads, FFN 28672, vocab
//! 32256 with padding tokens), each cut to 2 layers so the files stay small (~0.6 and ~1.3 GB),
//! in Q4_0 and Q4_K_M, random weights from `scripts/make-bench-models.py`.
//!
//! Both engines decode 16 tokens greedily after the same short prompt; every token must be the
//! same, and at every step llama.cpp's top 5 must be ours in the same order (random weights
//! tend to repeat one token, so the argmax alone says little). Random weights can leave two logits nearly tied, and then a float difference between
//! two correct implementations picks either: a divergence is accepted only where llama.cpp's
//! own top two logits are closer than [`NEAR_TIE`], it is printed, the comparison stops there
//! (the contexts differ afterwards), and at least [`MIN_AGREED`] tokens must have agreed first.
//!
//! The files are written under `$EDGEACT_BENCH_SHAPES_DIR`, else `/dev/shm` (RAM, where the
//! disk is small), else the temporary directory, and removed afterwards.
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --release --features oracle --test oracle bench_shapes::`
//! (release: the 70B cut's layers are 0.5 GB each).
#![cfg(feature = "oracle")]

use edgeact_oracle as oracle;
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Tokens generated after the prompt.
const N_GEN: usize = 16;
/// A divergence is a near-tie when llama.cpp's top-1 and our pick differ by less than this in
/// llama.cpp's logits (their spread here is a few units; float differences are ~1e-3).
const NEAR_TIE: f32 = 0.05;
/// Tokens that must agree before a near-tie may end the comparison.
const MIN_AGREED: usize = 8;

/// The scratch directories' name prefix; the process id and a random suffix follow.
const SCRATCH_PREFIX: &str = "edgeact-bench-shapes-";

/// A fresh directory of its own for each test (they run in parallel), removed on drop (also
/// when an assertion fails). A killed run never drops it, and in /dev/shm its gigabytes stay in
/// RAM: those of processes that are gone are removed first.
fn scratch_dir() -> tempfile::TempDir {
    let base = match std::env::var_os("EDGEACT_BENCH_SHAPES_DIR") {
        Some(d) => PathBuf::from(d),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    remove_dead_scratch_dirs(&base);
    tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
        .tempdir_in(base)
        .unwrap()
}

/// Removes the scratch directories in `base` whose process no longer runs (Linux: no
/// `/proc/PID`); elsewhere, or for names without a process id, nothing.
fn remove_dead_scratch_dirs(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Writes `<shape>-<scheme>.gguf` with the bench-model script and returns its path.
fn make_model(dir: &Path, shape: &str, scheme: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-bench-models.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .args(["--shapes", shape, "--types", scheme])
        .status()
        .expect("python3 runs");
    assert!(status.success(), "{} failed for {shape} {scheme}", script.display());
    dir.join(format!("{shape}-{scheme}.gguf"))
}

/// The two largest values of `x` and the index of the first.
fn top2(x: &[f32]) -> (u32, f32, f32) {
    let best = oracle::argmax(x);
    let second = x
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best as usize)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    (best, x[best as usize], second)
}

/// Indices of the `k` largest values, largest first (the first index on ties).
fn top_k(x: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..x.len() as u32).collect();
    idx.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Decodes greedily in both engines and checks the rule of the module doc; returns how many
/// tokens agreed.
fn compare(path: &Path, expect_vocab: usize, expect_layers: usize) -> usize {
    let theirs_model = oracle::Model::load(path).unwrap();
    assert_eq!(theirs_model.n_vocab(), expect_vocab);
    let prompt = theirs_model
        .tokenize("Act: bash\n\n```bash\nls /etc | wc -l\n```", true, false)
        .unwrap();
    assert!(prompt.len() >= 8, "{prompt:?}");
    let mut theirs = oracle::Context::new(&theirs_model, prompt.len() + N_GEN + 1, 2).unwrap();

    let file = Arc::new(GgufFile::open(path).unwrap());
    let model = Arc::new(LlamaModel::load(file).unwrap());
    assert_eq!(model.config().vocab_size, expect_vocab);
    assert_eq!(model.config().n_layers, expect_layers);
    let opts = SessionOptions {
        threads: 2,
        ..Default::default()
    };
    let mut ours = Session::new(model, opts).unwrap();

    let (mut their_logits, mut our_logits) = (theirs.eval(&prompt).unwrap(), ours.eval(&prompt).unwrap());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (mut margins, mut generated, mut max_diff) = (Vec::new(), Vec::new(), 0f32);
    for step in 0..N_GEN {
        let (their_tok, their_top, their_second) = top2(&their_logits);
        let our_tok = oracle::argmax(&our_logits);
        margins.push(their_top - their_second);
        // The whole ranking's head, not only the argmax (random weights tend to repeat one
        // token): llama.cpp's top 5 must be ours, in order, down to the first near-tie.
        let (their_top5, our_top5) = (top_k(&their_logits, 5), top_k(&our_logits, 5));
        for r in 0..5 {
            if r > 0 && their_logits[their_top5[r - 1] as usize] - their_logits[their_top5[r] as usize] < NEAR_TIE {
                break;
            }
            assert_eq!(
                their_top5[r], our_top5[r],
                "{name}: step {step}: top-5 {their_top5:?} vs ours {our_top5:?}"
            );
        }
        let diff = their_logits
            .iter()
            .zip(&our_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        max_diff = max_diff.max(diff);
        if our_tok != their_tok {
            let gap = their_top - their_logits[our_tok as usize];
            assert!(
                gap < NEAR_TIE && step >= MIN_AGREED,
                "{name}: step {step}: ours {our_tok}, llama.cpp {their_tok}, {gap} apart in llama.cpp's logits"
            );
            eprintln!("{name}: near-tie at step {step} ({gap} apart); {step} tokens agreed");
            return step;
        }
        generated.push(their_tok);
        their_logits = theirs.eval(&[their_tok]).unwrap();
        our_logits = ours.eval(&[our_tok]).unwrap();
    }
    let least = margins.iter().copied().fold(f32::INFINITY, f32::min);
    eprintln!(
        "{name}: {N_GEN}/{N_GEN} tokens identical {generated:?}; smallest top-2 margin {least:.4}; \
         largest logit difference {max_diff:.4}"
    );
    N_GEN
}

fn check_shape(shape: &str, vocab: usize, layers: usize) {
    let dir = scratch_dir();
    for scheme in ["q4_0", "q4_k_m"] {
        let path = make_model(dir.path(), shape, scheme);
        let agreed = compare(&path, vocab, layers);
        assert!(agreed >= MIN_AGREED, "{shape} {scheme}: {agreed}");
        // One file at a time: the 70B cut is 1.3 GB.
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn agentlm_13b_shape_cut_to_2_layers_decodes_like_llama_cpp() {
    check_shape("13b-2l", 32000, 2);
}

#[test]
fn agentlm_70b_shape_cut_to_2_layers_decodes_like_llama_cpp() {
    check_shape("70b-2l", 32256, 2);
}

/// Only the scratch directories of processes that are gone are removed: not this process's,
/// not names without a process id, not other files.
#[test]
fn dead_processes_scratch_dirs_are_removed() {
    let base = tempfile::tempdir().unwrap();
    // Above the largest pid_max Linux allows (2^22): never a running process.
    let dead = base.path().join(format!("{SCRATCH_PREFIX}4194305-abc"));
    let mine = base.path().join(format!("{SCRATCH_PREFIX}{}-def", std::process::id()));
    let old_style = base.path().join(format!("{SCRATCH_PREFIX}57gNhZ"));
    let other = base.path().join("unrelated-4194305-abc");
    for d in [&dead, &mine, &old_style, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("model.gguf"), b"x").unwrap();
    }
    remove_dead_scratch_dirs(base.path());
    let on_linux = Path::new("/proc/self").exists();
    assert_eq!(dead.exists(), !on_linux, "the dead process's directory");
    assert!(mine.exists() && old_style.exists() && other.exists());
}
