//! The repack cache (`LlamaModel::repack_cached`): a miss repacks and writes the cache file, the
//! next load maps the same panels from it and computes bit for bit what the freshly repacked
//! model computes; the default and `--repack` keep a file each; another version of the model
//! file, a damaged, foreign or group-writable cache file are misses (rewritten), never errors;
//! a cache that cannot be written leaves the model repacked (and says why). Models: stories260K in Q4_0 (Q4_0 and Q8_0 panels, 32-element
//! scales) and the tiny checkpoint in Q4_K_M (Q4_K and Q6_K panels).

use crate::stories_support;

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::kernels::cpu::repack_supported;
use edgeact_runtime::model::{repack_cache, CacheUse, LlamaModel, RepackChoice, RepackReport, Session, SessionOptions};
use edgeact_runtime::quant::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const STORIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/stories260K/stories260K-f32-v3.gguf"
);

fn models(dir: &Path) -> Vec<PathBuf> {
    let q4_0 = dir.join("stories-q4_0.gguf");
    stories_support::stories_all(Path::new(STORIES), GgmlType::Q4_0, &q4_0);
    let q4_k_m = crate::repack::tiny_q4_k_m(dir);
    vec![q4_0, q4_k_m]
}

/// The model at `path` repacked through the cache in `cache`, and the outcome of the cache
/// write a miss starts (complete on return).
fn load_and_write(
    path: &Path,
    which: RepackChoice,
    cache: &Path,
) -> (Arc<LlamaModel>, RepackReport, Option<Result<u64, String>>) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut model = LlamaModel::load(file).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let written = Box::new(move |r: Result<u64, String>| tx.send(r).unwrap());
    let report = model.repack_cached(which, 2, cache, &mut |_, _| {}, written).unwrap();
    model.finish_cache_write();
    (Arc::new(model), report, rx.try_recv().ok())
}

/// [`load_and_write`] where a started cache write must succeed.
fn load(path: &Path, which: RepackChoice, cache: &Path) -> (Arc<LlamaModel>, RepackReport) {
    let (model, report, written) = load_and_write(path, which, cache);
    assert_eq!(matches!(report.cache, CacheUse::Writing { .. }), written.is_some());
    if let Some(w) = written {
        let bytes = w.expect("the cache write");
        assert!(
            bytes >= report.bytes,
            "{bytes} bytes written for {} repacked",
            report.bytes
        );
    }
    (model, report)
}

/// Logits of a 12-token prompt and 8 greedy steps.
fn logits(model: &Arc<LlamaModel>) -> Vec<f32> {
    let mut s = Session::new(model.clone(), SessionOptions::default()).unwrap();
    let prompt: Vec<u32> = std::iter::once(1).chain((0..11).map(|i| 20 + i * 7)).collect();
    let mut all = s.eval_all_logits(&prompt).unwrap();
    let n_vocab = model.config().vocab_size;
    for _ in 0..8 {
        let last = &all[all.len() - n_vocab..];
        let next = edgeact_runtime::sampler::greedy_token(last);
        all.extend(s.eval(&[next]).unwrap());
    }
    all
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn a_miss_writes_the_cache_and_the_next_load_maps_the_same_panels() {
    if !repack_supported() {
        eprintln!("skipped: this CPU has no kernel for repacked weights");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for path in models(dir.path()) {
        let (fresh, report) = load(&path, RepackChoice::All, &cache);
        let written = match &report.cache {
            CacheUse::Writing { path, miss } => {
                assert_eq!(miss, "no cache file yet");
                path.clone()
            }
            other => panic!("{}: {other:?}", path.display()),
        };
        assert!(report.tensors > 0);
        assert_eq!(written, repack_cache::cache_path(&cache, &path, RepackChoice::All));
        let (mapped, again) = load(&path, RepackChoice::All, &cache);
        assert_eq!(again.cache, CacheUse::Loaded(written.clone()), "{}", path.display());
        assert_eq!((again.tensors, again.bytes), (report.tensors, report.bytes));
        assert!(same_bits(&logits(&fresh), &logits(&mapped)), "{}", path.display());

        // The default choice keeps a file of its own: a miss, then a hit; `All` still hits.
        let (_, measured) = load(&path, RepackChoice::Measured, &cache);
        if measured.tensors > 0 {
            assert!(
                matches!(measured.cache, CacheUse::Writing { .. }),
                "{:?}",
                measured.cache
            );
            let (_, hit) = load(&path, RepackChoice::Measured, &cache);
            assert!(matches!(hit.cache, CacheUse::Loaded(_)), "{:?}", hit.cache);
        }
        assert!(matches!(
            load(&path, RepackChoice::All, &cache).1.cache,
            CacheUse::Loaded(_)
        ));
    }
}

#[test]
fn damaged_foreign_or_stale_caches_are_misses_not_errors() {
    if !repack_supported() {
        eprintln!("skipped: this CPU has no kernel for repacked weights");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let path = &models(dir.path())[1];
    let (fresh, first) = load(path, RepackChoice::All, &cache);
    let want = logits(&fresh);
    let file = repack_cache::cache_path(&cache, path, RepackChoice::All);
    let bytes = std::fs::read(&file).unwrap();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damage: [(&str, Damage); 5] = [
        ("truncated", Box::new(|b| b.truncate(b.len() / 2))),
        ("header only", Box::new(|b| b.truncate(64))),
        ("empty", Box::new(|b| b.clear())),
        ("foreign", Box::new(|b| b[..16].copy_from_slice(b"not-a-cache-file"))),
        (
            "huge table",
            Box::new(|b| b[56..64].copy_from_slice(&u64::MAX.to_le_bytes())),
        ),
    ];
    for (what, damage) in damage {
        let mut b = bytes.clone();
        damage(&mut b);
        std::fs::write(&file, &b).unwrap();
        let (model, report) = load(path, RepackChoice::All, &cache);
        assert!(
            matches!(report.cache, CacheUse::Writing { .. }),
            "{what}: {:?}",
            report.cache
        );
        assert!(same_bits(&logits(&model), &want), "{what}");
        // Rewritten: the next load is a hit again.
        assert!(
            matches!(load(path, RepackChoice::All, &cache).1.cache, CacheUse::Loaded(_)),
            "{what}"
        );
    }
    // Writable by others: anyone could have put weights there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (_, report) = load(path, RepackChoice::All, &cache);
        match &report.cache {
            CacheUse::Writing { miss, .. } => assert!(miss.contains("writable by others"), "{miss}"),
            other => panic!("{other:?}"),
        }
    }
    // A garbage entry table: names that do not parse, offsets beyond the file.
    let mut b = bytes.clone();
    for x in &mut b[64..200] {
        *x = 0xff;
    }
    std::fs::write(&file, &b).unwrap();
    let (_, report) = load(path, RepackChoice::All, &cache);
    assert!(matches!(report.cache, CacheUse::Writing { .. }), "{:?}", report.cache);

    // The model file rewritten (same bytes, new modification time): another version.
    let copy = dir.path().join("copy.gguf");
    std::fs::copy(path, &copy).unwrap();
    let (_, a) = load(&copy, RepackChoice::All, &cache);
    assert!(matches!(a.cache, CacheUse::Writing { .. }));
    let f = std::fs::File::options().write(true).open(&copy).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let (_, b) = load(&copy, RepackChoice::All, &cache);
    match &b.cache {
        CacheUse::Writing { miss, .. } => assert!(miss.contains("another version"), "{miss}"),
        other => panic!("{other:?}"),
    }

    // A cache folder that cannot be made (a file stands in its place): repacked, not written.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"a file").unwrap();
    let (model, report, written) = load_and_write(path, RepackChoice::All, &blocked);
    assert!(matches!(report.cache, CacheUse::Writing { .. }), "{:?}", report.cache);
    let error = written.expect("an outcome").expect_err("the write must fail");
    assert!(error.contains("cannot create"), "{error}");
    assert_eq!(report.tensors, first.tensors);
    assert!(same_bits(&logits(&model), &want));
}

/// A umask of 002 (user-private groups: Debian, Ubuntu, Fedora login shells) made the cache
/// file 0664, which the next start refused as "writable by others" and wrote again: the file
/// gets 0644 whatever the umask. (Through the CLI, so the umask is the child's alone.)
#[test]
fn the_cache_is_used_whatever_the_umask() {
    if !repack_supported() {
        eprintln!("skipped: this CPU has no kernel for repacked weights");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let path = models(dir.path()).remove(0);
    let run = |want: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 002 && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_edgeact"))
            .args([
                "run",
                "-m",
                path.to_str().unwrap(),
                "-p",
                "Once",
                "-n",
                "1",
                "--device",
                "cpu",
            ])
            .args(["--repack", "--repack-cache", "-v"])
            .env("EDGEACT_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = err
            .lines()
            .find(|l| l.starts_with("load: "))
            .unwrap_or_default()
            .to_string();
        assert!(out.status.success() && line.contains(want), "{err}");
    };
    run("repack cache miss");
    run("mapped from the repack cache");
    use std::os::unix::fs::PermissionsExt;
    let files: Vec<_> = walk(&cache);
    assert!(!files.is_empty());
    for f in files {
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644,
            "{}",
            f.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
