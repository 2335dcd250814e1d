//! A minimal Hugging Face Hub client for `edgeact pull`: lists a repository's files at a
//! revision, picks the ones a conversion needs, and downloads them resumably into the cache
//! (`$HF_HOME/edgeact/{repo}/{revision}/`), verifying LFS sha256 digests.
//!
//! Only two endpoints are used: `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`
//! (file list with LFS metadata) and `GET {endpoint}/{repo}/resolve/{rev}/{file}` (contents).

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default Hub address; `HF_ENDPOINT` overrides it (mirrors, tests).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Largest model-info JSON accepted (big repositories list thousands of files).
const MAX_INFO_BYTES: u64 = 64 << 20;

/// The partial download of `file`: named after its digest where the listing gives one, so a
/// part of other contents (an earlier commit's) is never resumed into this file.
fn part_name(file: &RepoFile) -> String {
    match &file.sha256 {
        Some(sha) => format!("{}.{}.part", file.name, &sha[..sha.len().min(16)]),
        None => format!("{}.part", file.name),
    }
}

/// How many times one file download is attempted (each retry resumes from the `.part` file).
const MAX_ATTEMPTS: usize = 5;

/// Longest wait for the next bytes of a download before it counts as stalled and is retried.
/// `EDGEACT_PULL_STALL_SECS` overrides it (tests).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Files a checkpoint conversion uses besides the weights.
const AUX_FILES: &[&str] = &[
    "config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// One file of a repository, as the model-info API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    pub name: String,
    /// Size in bytes, when the API gave it.
    pub size: Option<u64>,
    /// Lower-case hex sha256 of the contents (LFS files only).
    pub sha256: Option<String>,
}

/// What `pull` will fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// A checkpoint to convert: `config.json`, tokenizer files and weights.
    Checkpoint(Vec<RepoFile>),
    /// A ready GGUF file, copied as is.
    Gguf(RepoFile),
}

/// Connection settings and the download cache.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    cache: PathBuf,
    agent: ureq::Agent,
    quiet: bool,
}

/// Checks `owner/name`: two non-empty components of `[A-Za-z0-9._-]`, neither `.`/`..`, so
/// the repository can be used in URLs and as a cache path.
pub fn validate_repo(repo: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() == 2 && parts.iter().all(|p| valid_component(p));
    if !ok {
        bail!("invalid repository {repo:?}: expected OWNER/NAME (letters, digits, '.', '_', '-')");
    }
    Ok(())
}

/// Checks a revision (branch, tag or commit); `/` is allowed (branches like `refs/pr/1`).
pub fn validate_revision(rev: &str) -> anyhow::Result<()> {
    if rev.is_empty() || !rev.split('/').all(valid_component) {
        bail!("invalid revision {rev:?}");
    }
    Ok(())
}

fn valid_component(p: &str) -> bool {
    !p.is_empty() && p != "." && p != ".." && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Parses the model-info JSON into the repository's file list.
pub fn parse_file_list(json: &str) -> anyhow::Result<Vec<RepoFile>> {
    let v: serde_json::Value = serde_json::from_str(json).context("the Hub's model info is not valid JSON")?;
    let siblings = v
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or_else(|| anyhow!("the Hub's model info has no \"siblings\" list"))?;
    siblings
        .iter()
        .map(|s| {
            let name = s
                .get("rfilename")
                .and_then(|n| n.as_str())
                .ok_or_else(|| anyhow!("a \"siblings\" entry has no \"rfilename\""))?
                .to_string();
            let lfs = s.get("lfs");
            let size = lfs
                .and_then(|l| l.get("size"))
                .or_else(|| s.get("size"))
                .and_then(|n| n.as_u64());
            let sha256 = match lfs.and_then(|l| l.get("sha256")) {
                None => None,
                Some(h) => {
                    let h = h.as_str().unwrap_or_default().to_ascii_lowercase();
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("file {name:?}: malformed LFS sha256 {h:?}");
                    }
                    Some(h)
                }
            };
            Ok(RepoFile { name, size, sha256 })
        })
        .collect()
}

/// Picks the files to fetch. `file` (`--file`) names a `.gguf` to take as is; otherwise the
/// checkpoint (safetensors preferred over PyTorch `.bin`), or the repository's only `.gguf`
/// when it has no weights.
pub fn select(files: &[RepoFile], file: Option<&str>) -> anyhow::Result<Selection> {
    // Only top-level files: the converter reads a flat directory, and sub-folders usually hold
    // other variants (e.g. `original/`).
    let top: Vec<&RepoFile> = files.iter().filter(|f| !f.name.contains('/')).collect();
    let ggufs: Vec<&RepoFile> = files.iter().filter(|f| f.name.ends_with(".gguf")).collect();
    if let Some(want) = file {
        if !want.ends_with(".gguf") {
            bail!("--file must name a .gguf file of the repository, not {want:?}");
        }
        let f = files.iter().find(|f| f.name == want).ok_or_else(|| {
            let names: Vec<&str> = ggufs.iter().map(|f| f.name.as_str()).collect();
            anyhow!(
                "the repository has no file {want:?} (.gguf files: {})",
                list_or_none(&names)
            )
        })?;
        validate_file_name(&f.name)?;
        return Ok(Selection::Gguf(f.clone()));
    }
    let weights = |pred: &dyn Fn(&str) -> bool| -> Vec<RepoFile> {
        top.iter().filter(|f| pred(&f.name)).map(|f| (*f).clone()).collect()
    };
    let mut chosen = weights(&|n| n.ends_with(".safetensors") || n == "model.safetensors.index.json");
    if !chosen.iter().any(|f| f.name.ends_with(".safetensors")) {
        chosen = weights(&|n| {
            (n.starts_with("pytorch_model") && n.ends_with(".bin")) || n == "pytorch_model.bin.index.json"
        });
        if !chosen.iter().any(|f| f.name.ends_with(".bin")) {
            chosen.clear();
        }
    }
    if chosen.is_empty() {
        return match ggufs.as_slice() {
            [one] => {
                validate_file_name(&one.name)?;
                Ok(Selection::Gguf((*one).clone()))
            }
            [] => {
                let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
                bail!(
                    "the repository has no safetensors, pytorch_model*.bin or .gguf weights (files: {})",
                    list_or_none(&names)
                )
            }
            many => {
                let names: Vec<&str> = many.iter().map(|f| f.name.as_str()).collect();
                bail!(
                    "the repository holds several .gguf files; pick one with --file: {}",
                    names.join(", ")
                )
            }
        };
    }
    if !top.iter().any(|f| f.name == "config.json") {
        bail!("the repository has weights but no config.json; it cannot be converted");
    }
    let mut out: Vec<RepoFile> = AUX_FILES
        .iter()
        .filter_map(|a| top.iter().find(|f| f.name == *a).map(|f| (*f).clone()))
        .collect();
    out.extend(chosen);
    for f in &out {
        validate_file_name(&f.name)?;
    }
    Ok(Selection::Checkpoint(out))
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A repository file name must stay inside the cache directory once joined to it.
fn validate_file_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.split('/').any(|c| c == ".." || c.is_empty())
    {
        bail!("refusing the repository file name {name:?}");
    }
    Ok(())
}

/// `$HF_HOME`, else `~/.cache/huggingface`.
fn hf_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither HF_HOME nor HOME is set; cannot place the download cache"))?;
    Ok(PathBuf::from(home).join(".cache/huggingface"))
}

impl Hub {
    /// Settings from the environment: `HF_ENDPOINT`, `HF_TOKEN` (else `$HF_HOME/token`), `HF_HOME`.
    pub fn from_env(quiet: bool) -> anyhow::Result<Hub> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            bail!("HF_ENDPOINT must be an http:// or https:// URL, not {endpoint:?}");
        }
        let home = hf_home()?;
        let token = match std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
            Some(t) => Some(t.trim().to_string()),
            None => match fs::read_to_string(home.join("token")) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => None,
            },
        };
        let config = ureq::Agent::config_builder()
            // Statuses are handled here, with messages that say what to do.
            .http_status_as_error(false)
            // The Hub redirects within huggingface.co (renamed repos, resolve-cache) where the
            // token is still needed, and to signed CDN URLs on other hosts where it must not go.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A body that stalls mid-download becomes a network error, which the download
            // retries from where it stopped (without it a stalled connection hung forever).
            .timeout_per_read(Some(
                std::env::var("EDGEACT_PULL_STALL_SECS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(STALL_TIMEOUT, Duration::from_secs),
            ))
            .build();
        Ok(Hub {
            endpoint,
            token,
            cache: home.join("edgeact"),
            agent: config.into(),
            quiet,
        })
    }

    /// Removes from the revision's cache `dir` the files the current `listing` does not name
    /// (left by an earlier commit of a moving branch: an old `model.safetensors.index.json`
    /// and its shards would be converted instead of the new weights) and partial downloads of
    /// other contents than the listed ones. Only regular files at the top level, where a
    /// checkpoint's files are; returns what was removed.
    pub fn prune(&self, dir: &Path, listing: &[RepoFile]) -> anyhow::Result<Vec<PathBuf>> {
        let mut keep: std::collections::HashSet<String> = listing.iter().map(|f| f.name.clone()).collect();
        keep.extend(listing.iter().map(part_name));
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && !keep.contains(&name) {
                fs::remove_file(e.path()).with_context(|| format!("cannot remove {}", e.path().display()))?;
                removed.push(e.path());
            }
        }
        Ok(removed)
    }

    /// The cache directory of one repository revision.
    pub fn cache_dir(&self, repo: &str, rev: &str) -> PathBuf {
        // A revision with '/' (refs/pr/1) becomes one directory level.
        self.cache.join(repo).join(rev.replace('/', "--"))
    }

    fn get(&self, url: &str, range_from: u64) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        req.call().map_err(|e| anyhow!("network error fetching {url}: {e}"))
    }

    /// Turns 401/403/404/other failures into errors that say what to do.
    fn check_status(&self, status: u16, what: &str, url: &str) -> anyhow::Result<()> {
        match status {
            200..=299 => Ok(()),
            401 | 403 => {
                let hint = if self.token.is_some() {
                    "the token in HF_TOKEN (or $HF_HOME/token) was refused: check that it is valid and that you accepted the model's licence on its Hub page"
                } else {
                    "the repository is gated or private: accept its licence on its Hub page and set HF_TOKEN to an access token"
                };
                bail!("HTTP {status} for {what} ({url}): {hint}")
            }
            404 => bail!("HTTP 404: {what} not found ({url}); check the repository name, --revision and --file"),
            429 => bail!("HTTP 429 for {what} ({url}): rate limited; wait and retry, or set HF_TOKEN"),
            _ => bail!("HTTP {status} for {what} ({url})"),
        }
    }

    /// The repository's files at `rev`.
    pub fn list_files(&self, repo: &str, rev: &str) -> anyhow::Result<Vec<RepoFile>> {
        let url = format!("{}/api/models/{repo}/revision/{rev}?blobs=true", self.endpoint);
        let resp = self.get(&url, 0)?;
        self.check_status(
            resp.status().as_u16(),
            &format!("repository {repo} at revision {rev}"),
            &url,
        )?;
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_INFO_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| anyhow!("network error reading {url}: {e}"))?;
        if body.len() as u64 > MAX_INFO_BYTES {
            bail!("the model info at {url} is larger than {MAX_INFO_BYTES} bytes");
        }
        let text = String::from_utf8(body).map_err(|_| anyhow!("the model info at {url} is not UTF-8"))?;
        parse_file_list(&text).with_context(|| format!("reading {url}"))
    }

    /// Downloads `file` into `dir` (resuming `dir/NAME.part`), verifies it and returns its path.
    /// A complete cached copy whose sha256 matches is reused; files without a known digest are
    /// fetched again (they are the small, non-LFS ones).
    pub fn download(&self, repo: &str, rev: &str, file: &RepoFile, dir: &Path) -> anyhow::Result<PathBuf> {
        validate_file_name(&file.name)?;
        let dest = dir.join(&file.name);
        let part = dir.join(part_name(file));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if let Some(want) = &file.sha256 {
            if dest.is_file() && &sha256_file(&dest)? == want {
                return Ok(dest);
            }
        }
        if file.sha256.is_none() && part.exists() {
            // Without a digest a leftover part (perhaps of an older revision of a moving branch)
            // cannot be checked; such files are small, so start over.
            fs::remove_file(&part).with_context(|| format!("cannot remove {}", part.display()))?;
        }
        let url = format!("{}/{repo}/resolve/{rev}/{}", self.endpoint, file.name);
        let bar = self.bar(&file.name, file.size);
        let mut last_err = None;
        for _ in 0..MAX_ATTEMPTS {
            match self.fetch_once(&url, file, &part, &bar) {
                Ok(true) => {
                    last_err = None;
                    break;
                }
                // The body ended early (the server closed the connection): resume.
                Ok(false) => last_err = Some(anyhow!("the download of {url} stopped early")),
                Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                    bar.abandon();
                    return Err(e);
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            bar.abandon();
            return Err(e.context(format!(
                "{} could not be downloaded after {MAX_ATTEMPTS} attempts; run `edgeact pull` again to resume from {}",
                file.name,
                part.display()
            )));
        }
        bar.finish_and_clear();
        let len = fs::metadata(&part)
            .with_context(|| format!("cannot read {}", part.display()))?
            .len();
        if let Some(size) = file.size {
            if len != size {
                let _ = fs::remove_file(&part);
                bail!(
                    "{}: downloaded {len} bytes, the Hub lists {size}; the partial file was deleted",
                    file.name
                );
            }
        }
        if let Some(want) = &file.sha256 {
            let got = sha256_file(&part)?;
            if &got != want {
                let _ = fs::remove_file(&part);
                bail!(
                    "{}: sha256 mismatch (expected {want}, got {got}); the corrupt download was deleted",
                    file.name
                );
            }
        }
        fs::rename(&part, &dest).with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
        Ok(dest)
    }

    /// One request: appends to `part` (or rewrites it if the server ignores `Range`). Returns
    /// whether the file is complete; `Err(Fatal)` for errors a retry cannot fix.
    fn fetch_once(&self, url: &str, file: &RepoFile, part: &Path, bar: &ProgressBar) -> anyhow::Result<bool> {
        let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = file.size {
            if have > size {
                // Longer than the real file: not ours to resume.
                fs::remove_file(part).with_context(|| format!("cannot remove {}", part.display()))?;
                have = 0;
            } else if have == size && size > 0 {
                return Ok(true);
            }
        }
        let resp = self.get(url, have)?;
        let status = resp.status().as_u16();
        if status == 416 {
            // Range not satisfiable: the part is stale or already complete; start over.
            fs::remove_file(part).with_context(|| format!("cannot remove {}", part.display()))?;
            return Ok(false);
        }
        self.check_status(status, &format!("file {}", file.name), url)
            .map_err(|e| anyhow::Error::new(Fatal(format!("{e:#}"))))?;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let resumed = status == 206 && have > 0 && {
            // `Content-Range: bytes START-END/TOTAL` must start where we asked.
            let cr = header("content-range").unwrap_or_default();
            cr.strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok())
                == Some(have)
        };
        if status == 206 && have > 0 && !resumed {
            // A range other than the one requested: discard and start from zero.
            fs::remove_file(part).with_context(|| format!("cannot remove {}", part.display()))?;
            return Ok(false);
        }
        let expected_end = header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .map(|l| if resumed { have + l } else { l })
            .or(file.size);
        let mut out = if resumed {
            OpenOptions::new().append(true).open(part)
        } else {
            // A 200 answers with the whole file, whether or not a Range was sent.
            have = 0;
            File::create(part)
        }
        .with_context(|| format!("cannot write {}", part.display()))
        .map_err(|e| anyhow::Error::new(Fatal(format!("{e:#}"))))?;
        if let (None, Some(end)) = (file.size, expected_end) {
            bar.set_length(end);
        }
        bar.set_position(have);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().ok();
                    return Err(anyhow!("network error reading {url} at byte {have}: {e}"));
                }
            };
            if file.size.is_some_and(|size| have + n as u64 > size) {
                // More than the Hub lists: a broken or hostile server, not a file to keep
                // filling the disk with.
                drop(out);
                let _ = fs::remove_file(part);
                return Err(anyhow::Error::new(Fatal(format!(
                    "{url} sent more than the {} bytes the Hub lists for {}; the partial file was deleted",
                    file.size.unwrap_or_default(),
                    file.name
                ))));
            }
            out.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", part.display()))
                .map_err(|e| anyhow::Error::new(Fatal(format!("{e:#}"))))?;
            have += n as u64;
            bar.set_position(have);
        }
        out.sync_all().ok();
        // Complete when the listed size is reached (a short 206 is resumed, not taken as the
        // whole file), else at the end the response announced.
        Ok(match file.size.or(expected_end) {
            Some(end) => have >= end,
            None => true,
        })
    }

    fn bar(&self, name: &str, size: Option<u64>) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new(size.unwrap_or(0));
        b.set_style(
            ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_message(name.to_string());
        b
    }
}

/// An error a retry cannot fix (HTTP status, local I/O).
#[derive(Debug)]
struct Fatal(String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> RepoFile {
        RepoFile {
            name: name.into(),
            size: None,
            sha256: None,
        }
    }

    fn names(s: &Selection) -> Vec<String> {
        match s {
            Selection::Checkpoint(v) => v.iter().map(|f| f.name.clone()).collect(),
            Selection::Gguf(f) => vec![f.name.clone()],
        }
    }

    #[test]
    fn repo_and_revision_names() {
        assert!(validate_repo("meta-llama/Llama-2-7b-hf").is_ok());
        for bad in ["x", "a/b/c", "../x", "a/..", "a/b c", "/a", "a/"] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
        assert!(validate_revision("refs/pr/1").is_ok());
        assert!(validate_revision("main/../x").is_err());
        assert!(validate_revision("").is_err());
    }

    #[test]
    fn picks_safetensors_over_bin_and_aux_files() {
        let files: Vec<RepoFile> = [
            "README.md",
            "config.json",
            "tokenizer.model",
            "tokenizer_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "original/consolidated.safetensors",
            "model.Q4_0.gguf",
        ]
        .map(f)
        .to_vec();
        let s = select(&files, None).unwrap();
        assert_eq!(
            names(&s),
            [
                "config.json",
                "tokenizer.model",
                "tokenizer_config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json"
            ]
        );
        assert_eq!(
            select(&files, Some("model.Q4_0.gguf")).unwrap(),
            Selection::Gguf(f("model.Q4_0.gguf"))
        );
        assert!(select(&files, Some("nope.gguf")).is_err());
        assert!(select(&files, Some("config.json")).is_err());
    }

    #[test]
    fn falls_back_to_bin_then_single_gguf() {
        let bin = ["config.json", "pytorch_model.bin", "tokenizer.json"].map(f).to_vec();
        assert_eq!(
            names(&select(&bin, None).unwrap()),
            ["config.json", "tokenizer.json", "pytorch_model.bin"]
        );
        let one = ["README.md", "m.gguf"].map(f).to_vec();
        assert_eq!(select(&one, None).unwrap(), Selection::Gguf(f("m.gguf")));
        let two = ["a.gguf", "b.gguf"].map(f).to_vec();
        assert!(format!("{:#}", select(&two, None).unwrap_err()).contains("--file"));
        assert!(select(&["README.md"].map(f), None).is_err());
        assert!(select(&["model.safetensors"].map(f), None).is_err(), "no config.json");
    }

    #[test]
    fn parses_model_info() {
        let sha = "a".repeat(64);
        let json = format!(
            r#"{{"siblings": [{{"rfilename": "config.json", "size": 12}},
            {{"rfilename": "model.safetensors", "size": 99, "lfs": {{"sha256": "{sha}", "size": 99}}}}]}}"#
        );
        let v = parse_file_list(&json).unwrap();
        assert_eq!(
            v[0],
            RepoFile {
                name: "config.json".into(),
                size: Some(12),
                sha256: None
            }
        );
        assert_eq!(v[1].sha256.as_deref(), Some(sha.as_str()));
        assert!(parse_file_list("{}").is_err());
        assert!(parse_file_list(r#"{"siblings":[{"rfilename":"x","lfs":{"sha256":"zz"}}]}"#).is_err());
        assert!(validate_file_name("../x").is_err());
        assert!(validate_file_name("a//b").is_err());
    }
}
