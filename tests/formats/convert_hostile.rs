//! `edgeact quantize` on hostile inputs and flags (issue #12): configs the runtime would refuse,
//! absurd thread counts, outputs that are not regular files. The converter's library-level
//! hostile-input tests (pickle bombs, FIFOs, partial files) are in `quantize/tests/`.

use std::path::Path;
use std::process::{Command, Output};

use crate::convert_support;
use convert_support::*;

fn quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

/// A tiny checkpoint, or None (with the reason printed) when the shared tokenizer is missing.
fn checkpoint(dir: &Path) -> Option<()> {
    if !shared_tokenizer().is_file() {
        eprintln!(
            "skipped: {} is missing (run scripts/setup.sh)",
            shared_tokenizer().display()
        );
        return None;
    }
    write_checkpoint(dir, false, None);
    Some(())
}

fn set_config(dir: &Path, key: &str, value: &str) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = serde_json::from_str(value).unwrap();
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn configs_the_runtime_refuses_are_refused_before_converting() {
    let dir = tempfile::tempdir().unwrap();
    if checkpoint(dir.path()).is_none() {
        return;
    }
    let out = dir.path().join("out.gguf");
    let (d, o) = (dir.path().to_str().unwrap(), out.to_str().unwrap());
    for (key, value, expect) in [
        ("vocab_size", "4294967295", "vocab_size 4294967295"),
        // Within range but not the embedding's row count: the runtime refuses the mismatch.
        ("vocab_size", "32001", "embedding has 32000 rows"),
        (
            "rope_scaling",
            r#"{"type": "linear", "factor": 0}"#,
            "rope_scaling factor 0",
        ),
        ("rms_norm_eps", "-1e-5", "rms_norm_eps -0.00001"),
    ] {
        write_checkpoint(dir.path(), false, None);
        set_config(dir.path(), key, value);
        let r = quantize(&[d, "-o", o, "-t", "f16", "-q"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(expect), "{key}={value}: {err}");
        assert!(!out.exists(), "{key}={value} produced a file");
    }
}

#[test]
fn absurd_thread_counts_and_non_file_outputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    if checkpoint(dir.path()).is_none() {
        return;
    }
    let d = dir.path().to_str().unwrap();
    let out = dir.path().join("out.gguf");
    let r = quantize(&[d, "-o", out.to_str().unwrap(), "-t", "f16", "-q", "--threads", "100000"]);
    let err = String::from_utf8_lossy(&r.stderr);
    // Clamped to the CPU count with a note, as every model command does.
    assert!(
        r.status.success() && err.contains("note: --threads 100000 is more than"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let fifo = dir.path().join("fifo.gguf");
    if !Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        eprintln!("skipped the FIFO case: mkfifo is not available");
        return;
    }
    let r = quantize(&[d, "-o", fifo.to_str().unwrap(), "-t", "f16", "-q"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("is a FIFO"), "{err}");
    assert!(std::fs::symlink_metadata(&fifo).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_fifo()
    }));
    // `-o` naming a file the conversion reads besides the weights (config, tokenizer).
    for name in ["config.json", "tokenizer.model"] {
        let target = dir.path().join(name);
        let before = std::fs::read(&target).unwrap();
        let r = quantize(&[d, "-o", target.to_str().unwrap(), "-t", "f16", "-q"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains("refusing to overwrite the input"),
            "{name}: {err}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), before, "{name} was overwritten");
    }
    // The FIFO as the input: refused at once instead of blocking in open().
    let r = quantize(&[fifo.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("is a FIFO"), "{err}");
}

#[test]
fn an_output_matrix_of_another_vocabulary_is_refused_before_converting() {
    let dir = tempfile::tempdir().unwrap();
    if checkpoint(dir.path()).is_none() {
        return;
    }
    // lm_head scores one token more than the embedding and config.json know.
    let mut tensors = checkpoint_tensors(false);
    let head = tensors.iter_mut().find(|t| t.0 == "lm_head.weight").unwrap();
    head.1 = vec![VOCAB + 1, HIDDEN];
    head.2 = weights(99, (VOCAB + 1) * HIDDEN);
    let st: Vec<(&str, edgeact_quantize::DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), edgeact_quantize::DType::F16, s.clone(), f16_bytes(v)))
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors"),
        edgeact_quantize::safetensors::to_bytes(&st),
    )
    .unwrap();
    let out = dir.path().join("out.gguf");
    let r = quantize(&[
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "f16",
        "-q",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("has 32001 rows, but the vocabulary"),
        "{err}"
    );
    assert!(!out.exists());
}
