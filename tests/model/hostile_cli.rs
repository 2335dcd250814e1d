//! The model flags against bad input, run as the built binary: `-m` naming a FIFO or a
//! directory, absurd `--threads` and `--ctx`, and a line of invalid UTF-8 typed into `chat`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/stories260K/stories260K-f32-v3.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not there", p.display());
        None
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for `child`, killing it if it is still running after a minute: a hang is the failure
/// these tests look for, so it must end the test rather than the CI job.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("poll edgeact").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("edgeact hung; stderr so far: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn edgeact(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgeact");
    finish(child)
}

/// `edgeact run -m MODEL -p Once -n 4 --temp 0 --device cpu EXTRA...`: a four-token greedy run.
fn run_short(model: &std::path::Path, extra: &[&str]) -> Output {
    let model = model.to_str().unwrap();
    let mut args = vec![
        "run", "-m", model, "-p", "Once", "-n", "4", "--temp", "0", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    edgeact(&args)
}

#[cfg(unix)]
#[test]
fn fifo_as_model_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("skipped: cannot create a FIFO here (mkfifo: {other:?})");
            return;
        }
    }
    // Nobody ever writes the FIFO: opening it for reading used to block forever.
    let out = edgeact(&["run", "-m", fifo.to_str().unwrap(), "-p", "x", "--device", "cpu"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("FIFO") && err.contains("not a regular file"), "{err}");
}

#[test]
fn directory_as_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgeact(&["run", "-m", dir.path().to_str().unwrap(), "-p", "x", "--device", "cpu"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is a directory"), "{err}");
    assert!(!err.contains("No such device"), "{err}");
}

#[cfg(unix)]
#[test]
fn device_as_model_is_refused() {
    let out = edgeact(&["run", "-m", "/dev/zero", "-p", "x", "--device", "cpu"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("character device"), "{err}");
}

#[test]
fn symlink_to_a_model_still_works() {
    let Some(model) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.gguf");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&model, &link).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&model, &link).unwrap();
    let out = run_short(&link, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn huge_thread_count_is_clamped_with_a_note() {
    let Some(model) = model_path() else { return };
    let out = run_short(&model, &["--threads", "100000"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--threads 100000") && err.contains("CPUs"), "{err}");
}

#[test]
fn huge_context_flag_is_capped_or_refused_never_an_abort() {
    let Some(model) = model_path() else { return };
    for ctx in ["4000000000", "18446744073709551615"] {
        let out = run_short(&model, &["--ctx", ctx]);
        let err = text(&out.stderr);
        // The model's own maximum caps it, with a note; what must never happen is a signal.
        assert!(out.status.code().is_some(), "killed by a signal: {err}");
        assert!(out.status.success(), "{err}");
        assert!(err.contains("above the model's maximum"), "{err}");
    }
    // Not a number at all: a flag error, not a crash.
    let out = edgeact(&["run", "-m", model.to_str().unwrap(), "--ctx", "4e9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn chat_survives_a_line_of_invalid_utf8() {
    let Some(model) = model_path() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args([
            "chat",
            "-m",
            model.to_str().unwrap(),
            "-n",
            "4",
            "--temp",
            "0",
            "--device",
            "cpu",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A Latin-1 "café", then a normal line: the bad line is reported and skipped, the good
    // one is answered (it used to end the chat with "stream did not contain valid UTF-8").
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"caf\xe9\nTell me a story\n/exit\n")
        .unwrap();
    let out = finish(child);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("prompt:")).count(), 1, "{err}");
}

#[test]
fn bench_with_an_absurd_prompt_length_is_an_error() {
    let Some(model) = model_path() else { return };
    // p + n used to overflow (wrapping to a tiny size in release builds, then allocating for
    // the real length).
    let out = edgeact(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "18446744073709551615",
        "-n",
        "1",
        "--device",
        "cpu",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("positions"), "{err}");
}

/// Values that would make a command useless are refused at parsing: `serve --max-body 0`
/// answered every POST with 413, and `sandbox --index N` without `--task` was ignored.
#[test]
fn useless_flag_values_are_refused() {
    let Some(m) = model_path() else { return };
    let m = m.to_str().unwrap();
    for args in [
        &["serve", "-m", m, "--max-body", "0"][..],
        &["serve", "-m", m, "--max-best-of", "0"],
        &["sandbox", "--index", "3", "--", "echo", "hi"],
    ] {
        let out = edgeact(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}
