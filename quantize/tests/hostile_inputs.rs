//! Hostile and non-regular inputs and outputs of the converter (issue #12): pickle bombs in
//! PyTorch checkpoints, FIFOs and devices where files are expected, outputs that are not
//! regular files or are an input under another name, and `.partial` files left by killed runs.

use edgeact_quantize::gguf_writer::{GgufWriter, TensorDecl, TensorSink, WriteError};
use edgeact_quantize::{convert, Checkpoint, Mix, Options};
use edgeact_runtime::files::partial::{self, PartialFile, PARTIAL_SUFFIX};
use edgeact_runtime::quant::GgmlType;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PyTorch zip checkpoint whose `data.pkl` is `pickle` (plus the entries torch writes).
fn torch_zip(path: &Path, pickle: &[u8]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little".as_slice()),
    ] {
        zip.start_file(name, stored).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

fn open_error(pickle: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    torch_zip(&path, pickle);
    match Checkpoint::open_files(&[path]) {
        Ok(_) => panic!("a hostile pickle was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn pickle_bomb_in_a_checkpoint_is_a_clear_error() {
    // `]` then DUP APPEND 64 times: a list that doubles each round (2^64 nodes); the old
    // unpickler used memory until it aborted.
    let mut bomb = b"\x80\x02]".to_vec();
    for _ in 0..64 {
        bomb.extend_from_slice(b"2a");
    }
    bomb.push(b'.');
    let err = open_error(&bomb);
    assert!(err.contains("pickle bomb") && err.contains("data.pkl"), "{err}");
}

#[test]
fn deeply_nested_pickle_in_a_checkpoint_is_a_clear_error() {
    // One million nested 1-tuples overflowed the stack in the old unpickler.
    let mut nested = b"\x80\x02)".to_vec();
    nested.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    nested.push(b'.');
    let err = open_error(&nested);
    assert!(err.contains("nested more than"), "{err}");
}

#[test]
fn huge_memo_index_in_a_checkpoint_is_a_clear_error() {
    let err = open_error(b"\x80\x02}r\xff\xff\xff\x7f.");
    assert!(err.contains("memo index"), "{err}");
}

fn mkfifo(path: &Path) -> bool {
    match Command::new("mkfifo").arg(path).status() {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!("skipped: mkfifo is not available");
            false
        }
    }
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_tensor("t", &[4], GgmlType::F32).unwrap();
    w
}

fn fill(_: usize, t: &TensorDecl, s: &mut TensorSink<'_>) -> io::Result<()> {
    s.write_all(&vec![0u8; t.n_bytes() as usize])
}

#[test]
fn output_fifo_directory_and_links_to_them_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.gguf");
    if !mkfifo(&fifo) {
        return;
    }
    let w = sample_writer();
    // The old writer renamed its temporary file over the FIFO (as root, `-o /dev/null` would
    // have replaced the device the same way).
    let err = w.write_file(&fifo, &[], fill).unwrap_err();
    assert!(matches!(err, WriteError::BadOutput(_)), "{err}");
    assert!(err.to_string().contains("is a FIFO"), "{err}");
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );

    let link = dir.path().join("link.gguf");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let err = w.write_file(&link, &[], fill).unwrap_err();
    assert!(err.to_string().contains("is a FIFO"), "{err}");

    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let err = w.write_file(&sub, &[], fill).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");

    let dangling = dir.path().join("dangling.gguf");
    std::os::unix::fs::symlink(dir.path().join("missing/x"), &dangling).unwrap();
    assert!(w.write_file(&dangling, &[], fill).is_err());

    // The device itself: refused before anything is created (checked, never written).
    let err = w.write_file(Path::new("/dev/null"), &[], fill).unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");

    // Nothing was left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(PARTIAL_SUFFIX)), "{names:?}");
}

#[test]
fn output_symlink_to_a_regular_file_replaces_the_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.gguf");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.gguf");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let s = sample_writer().write_file(&link, &[], fill).unwrap();
    assert_eq!(s.path.as_deref(), Some(target.canonicalize().unwrap().as_path()));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::metadata(&target).unwrap().len(), s.file_size);
}

#[test]
fn output_hard_linked_to_an_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    std::fs::write(&input, b"original").unwrap();
    let alias = dir.path().join("alias.gguf");
    std::fs::hard_link(&input, &alias).unwrap();
    let err = sample_writer().write_file(&alias, &[&input], fill).unwrap_err();
    assert!(matches!(err, WriteError::WouldOverwriteInput(_)), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), b"original");
}

#[test]
fn fifo_inputs_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let opts = Options::new(Mix::F16);
    // A FIFO as the .gguf input: the old converter blocked in open() forever.
    let fifo = dir.path().join("model.gguf");
    if !mkfifo(&fifo) {
        return;
    }
    let err = convert(&fifo, &out, &opts, &mut edgeact_quantize::convert::Silent).unwrap_err();
    assert!(format!("{err:#}").contains("is a FIFO"), "{err:#}");

    // A FIFO as config.json, and as the checkpoint file of a model directory.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    assert!(mkfifo(&model.join("config.json")));
    let err = convert(&model, &out, &opts, &mut edgeact_quantize::convert::Silent).unwrap_err();
    assert!(format!("{err:#}").contains("FIFO"), "{err:#}");
    std::fs::remove_file(model.join("config.json")).unwrap();
    assert!(mkfifo(&model.join("weights.safetensors")));
    let err = Checkpoint::open_dir(&model)
        .err()
        .expect("a FIFO checkpoint was accepted");
    assert!(err.to_string().contains("FIFO"), "{err}");
    // A directory where the checkpoint file should be.
    std::fs::remove_file(model.join("weights.safetensors")).unwrap();
    std::fs::create_dir(model.join("model.safetensors")).unwrap();
    assert!(Checkpoint::open_files(&[model.join("model.safetensors")]).is_err());
    // A device as the .gguf input.
    let err = convert(
        Path::new("/dev/zero"),
        &out,
        &opts,
        &mut edgeact_quantize::convert::Silent,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("character device"), "{err:#}");
}

fn partials_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(PARTIAL_SUFFIX))
        .collect();
    v.sort();
    v
}

#[test]
fn stale_partial_files_are_removed_by_the_next_run_for_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");
    // What a SIGKILLed run leaves: an unlocked partial file named after its output.
    let stale = dir.path().join(format!(".model.gguf.abc123{PARTIAL_SUFFIX}"));
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    // Another output's partial file and an unrelated file are not touched.
    let other = dir.path().join(format!(".other.gguf.abc123{PARTIAL_SUFFIX}"));
    std::fs::write(&other, b"x").unwrap();
    // A live writer of the same output holds its lock: its file is kept.
    let live = PartialFile::create(&out).unwrap();
    assert!(live.path().exists());

    sample_writer().write_file(&out, &[], fill).unwrap();
    assert!(!stale.exists(), "the stale partial file was kept");
    assert!(other.exists());
    assert!(live.path().exists(), "a live writer's partial file was removed");
    let live_path = live.path().to_path_buf();
    drop(live);
    assert!(!live_path.exists());
    assert_eq!(partials_of(dir.path()), [other]);
}

/// Writers of one destination at once: each one's sweep runs while the others create their
/// partial files, and a file caught between its creation and its lock looked stale and was
/// removed under its writer, whose rename then failed. Every write succeeds now.
#[test]
fn concurrent_writers_of_one_output_never_remove_each_others_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");
    std::thread::scope(|s| {
        for t in 0..6 {
            let out = &out;
            s.spawn(move || {
                for i in 0..200 {
                    let p = PartialFile::create(out).unwrap_or_else(|e| panic!("writer {t}, write {i}: {e}"));
                    p.as_file().set_len(64).unwrap();
                    p.persist(out).unwrap_or_else(|e| panic!("writer {t}, write {i}: {e}"));
                }
            });
        }
    });
    assert!(partials_of(dir.path()).is_empty());
}

/// Run in a child process by [`sigterm_removes_the_partial_file`]: creates a partial file,
/// installs the handler, says where the file is, and waits to be killed.
#[test]
fn partial_file_child() {
    let Ok(dest) = std::env::var("EDGEACT_PARTIAL_CHILD") else {
        return; // only meaningful in the child
    };
    partial::remove_partial_files_on_signal().unwrap();
    let p = PartialFile::create(Path::new(&dest)).unwrap();
    p.as_file().set_len(1 << 20).unwrap();
    println!("PARTIAL {}", p.path().display());
    io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn sigterm_and_sigint_remove_the_partial_file() {
    use std::io::BufRead;
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.gguf");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "partial_file_child", "--nocapture", "--test-threads=1"])
            .env("EDGEACT_PARTIAL_CHILD", &dest)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut partial_path = None;
        for line in io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // libtest prints "test partial_file_child ... " before the child's own output.
            if let Some((_, p)) = line.split_once("PARTIAL ") {
                partial_path = Some(PathBuf::from(p));
                break;
            }
        }
        let Some(partial_path) = partial_path else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not start");
        };
        assert!(partial_path.exists());
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
        if !kill.is_ok_and(|s| s.success()) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("skipped: cannot send signals with kill(1)");
            return;
        }
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        let expected = if signal == "TERM" { 15 } else { 2 };
        assert_eq!(
            status.signal(),
            Some(expected),
            "the child must die by the signal itself"
        );
        assert!(!partial_path.exists(), "SIG{signal} left {}", partial_path.display());
        assert!(partials_of(dir.path()).is_empty());
    }
}

#[test]
fn outputs_get_a_new_files_mode_and_replacing_one_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // What any new file gets here (0666 less the umask), not a temporary file's 0600.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let out = dir.path().join("model.gguf");
    sample_writer().write_file(&out, &[], fill).unwrap();
    assert_eq!(mode(&out), mode(&plain));
    for kept in [0o644, 0o600, 0o640] {
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(kept)).unwrap();
        sample_writer().write_file(&out, &[], fill).unwrap();
        assert_eq!(mode(&out), kept);
    }
}
