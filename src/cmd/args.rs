//! The flags every model command shares (model file and context, device, activations,
//! repacking, LoRA adapters, threads, sampling) and the helpers built on them: every session `run`, `chat`,
//! `bench`, `perplexity`, `agent` and `eval` open goes through [`DeviceArgs::session`].

use anyhow::{bail, Context};
use edgeact_runtime::generate::Generation;
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::kernels::cuda::{select_device, Backend, DeviceChoice};
use edgeact_runtime::model::{
    repack_cache, Activations, CacheUse, KvType, LlamaModel, LoraAdapter, RepackChoice, Session, SessionOptions,
};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--ctx` default of `run` and `chat` (Llama-2's training context).
pub const DEFAULT_CTX: usize = 4096;

/// `--device` and `--gpu-layers`, shared by every command that runs the model.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Compute device: auto (the first usable CUDA GPU, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Transformer blocks to run on the GPU, the rest on the CPU (default: as many as fit).
    #[arg(long, value_name = "N")]
    pub gpu_layers: Option<usize>,
}

impl DeviceArgs {
    /// Picks the backend (`select_device` logs the choice, and for `auto` on the CPU the reason,
    /// on one stderr line). Fails when an explicitly requested GPU cannot be used.
    pub fn resolve(&self) -> anyhow::Result<Backend> {
        if self.device == DeviceChoice::Cpu && self.gpu_layers.is_some_and(|n| n > 0) {
            bail!(
                "--gpu-layers {} needs a GPU, but --device cpu was given (use --device auto or cuda[:N])",
                self.gpu_layers.unwrap_or(0)
            );
        }
        let backend = select_device(self.device).with_context(|| format!("--device {}", self.device))?;
        if backend == Backend::Cpu && self.device == DeviceChoice::Auto && self.gpu_layers.is_some_and(|n| n > 0) {
            // `auto` means "a GPU if there is one": a script written for a GPU machine still runs.
            eprintln!("edgeact: --gpu-layers ignored: running on the CPU");
        }
        Ok(backend)
    }

    /// Opens a session on `backend` (from [`DeviceArgs::resolve`]) with `--gpu-layers`. Under
    /// `--device auto`, a GPU that cannot take the model (out of memory, a context beyond its
    /// attention kernel, a kernel that does not load) leaves it to the CPU, saying why.
    pub fn session(&self, backend: &Backend, model: Arc<LlamaModel>, opts: SessionOptions) -> anyhow::Result<Session> {
        match self.exact_session(backend, Arc::clone(&model), opts.clone()) {
            Err(e) if self.device == DeviceChoice::Auto && *backend != Backend::Cpu => {
                eprintln!("edgeact: device cpu (auto: {e:#})");
                Ok(Session::new(model, opts)?)
            }
            r => r,
        }
    }

    /// [`DeviceArgs::session`] without the fallback (`bench` measures the device it names).
    pub fn exact_session(
        &self,
        backend: &Backend,
        model: Arc<LlamaModel>,
        opts: SessionOptions,
    ) -> anyhow::Result<Session> {
        Session::with_backend(model, opts, backend, self.gpu_layers)
            .with_context(|| format!("opening a session on {backend}"))
    }
}

/// Model, context and thread flags shared by `run`, `chat` and `perplexity`.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Context length in tokens [default: 4096 (`perplexity`: 512), capped at the model's
    /// maximum].
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// The context without `--ctx` ([`DEFAULT_CTX`] unless a command sets its own).
    #[arg(skip)]
    pub default_ctx: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    #[command(flatten)]
    pub activations: ActivationsArg,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub repack: RepackArg,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Print what loading took (mapping, repacking, peak resident memory) on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// `--lora FILE[:SCALE]`, shared by every command that runs the model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LoraArgs {
    /// LoRA adapter (llama.cpp's GGUF adapter format) applied at load, the model file untouched;
    /// repeatable, the adapters add up. SCALE (default 1.0) multiplies the adapter's alpha/r.
    /// See docs/model.md (LoRA adapters at load).
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    pub lora: Vec<LoraSpec>,
}

impl LoraArgs {
    /// The adapter files, inputs of the run (its outputs may not overwrite them).
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.lora.iter().map(|l| l.path.as_path())
    }
}

/// One `--lora` value: an adapter file and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl std::str::FromStr for LoraSpec {
    type Err = String;
    /// `FILE` or `FILE:SCALE`. Paths may hold ':' themselves, so the text after the last ':'
    /// is a scale only when it parses as a number (`a:b.gguf` is a path; `a:b.gguf:1` is the
    /// same path at scale 1).
    fn from_str(s: &str) -> Result<LoraSpec, String> {
        let (path, scale) = match s.rsplit_once(':') {
            Some((path, scale)) => match scale.trim().parse::<f32>() {
                Ok(v) if !v.is_finite() => return Err(format!("scale {scale:?} of {path:?} is not a finite number")),
                Ok(v) => (path, v),
                Err(_) => (s, 1.0),
            },
            None => (s, 1.0),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: no adapter file before the scale"));
        }
        Ok(LoraSpec {
            path: PathBuf::from(path),
            scale,
        })
    }
}

/// Opens each adapter of `specs` and attaches it to `model`, with one stderr line each.
pub fn apply_loras(model: &mut LlamaModel, specs: &[LoraSpec]) -> anyhow::Result<()> {
    for spec in specs {
        let adapter = LoraAdapter::open(&spec.path).with_context(|| format!("--lora {}", spec.path.display()))?;
        let n = model
            .apply_lora(&adapter, spec.scale)
            .with_context(|| format!("--lora {}", spec.path.display()))?;
        let (r_min, r_max) = adapter.rank_range();
        let rank = if r_min == r_max {
            format!("{r_min}")
        } else {
            format!("{r_min}..{r_max}")
        };
        let alpha = if adapter.alpha() == 0.0 {
            "none".to_string()
        } else {
            format!("{}", adapter.alpha())
        };
        eprintln!(
            "edgeact: LoRA adapter {}: {n} matrices, rank {rank}, alpha {alpha}, scale {} (x alpha/r = {})",
            spec.path.display(),
            spec.scale,
            adapter.scale_for(r_max, spec.scale)
        );
    }
    Ok(())
}

/// `--activations`, shared by every command that runs the model.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct ActivationsArg {
    /// CPU matmul arithmetic: `quantized` rounds each matmul's input to 8 bits and uses integer
    /// dot products (ggml's arithmetic, fast); `f32` multiplies f32 inputs with dequantized
    /// weights (full precision, as the GPU kernels do; slower).
    #[arg(long = "activations", default_value = "quantized")]
    pub activations: Activations,
}

/// `--repack` / `--no-repack`, shared by every command that runs the model. Without either,
/// the weight types whose repacked kernels measured faster on this CPU are repacked when the
/// model runs on the CPU (docs/kernels.md "Default path").
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct RepackArg {
    /// Repack every matrix of a type with a panel form (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
    /// Q5_K, Q6_K) into 16-row panels for the AVX2, AVX-512 VNNI and NEON panel kernels, also where
    /// the default would not (on NEON the default keeps the file layout: not yet measured on
    /// ARM hardware; no effect on the scalar path).
    #[arg(long, conflicts_with = "no_repack")]
    pub repack: bool,
    /// Use every weight in place from the file mapping: zero-copy (pages shared with other
    /// processes and the page cache) and the fastest start, but slower x86 decode.
    #[arg(long)]
    pub no_repack: bool,
    /// Write the repacked weights once to the repack cache ($EDGEACT_CACHE_DIR/panels, else
    /// $XDG_CACHE_HOME/edgeact/panels, else ~/.cache/edgeact/panels; about the model's size) and
    /// map them from there at later starts: a start then costs what `--no-repack` costs, but
    /// decode from the page cache measured ~10 % slower than from repacked memory on our test
    /// VM (docs/kernels.md "Repack cache").
    #[arg(long, conflicts_with = "no_repack")]
    pub repack_cache: bool,
}

impl RepackArg {
    /// What to repack at load: `None` for nothing.
    fn choice(self, on_cpu: bool) -> Option<RepackChoice> {
        match (self.repack, self.no_repack) {
            (true, _) => Some(RepackChoice::All),
            (false, true) => None,
            // A model offloaded to a GPU keeps its CPU copy in the mapping.
            (false, false) => on_cpu.then_some(RepackChoice::Measured),
        }
    }
}

/// What loading a model took (`-v`, `bench --json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadStats {
    /// Mapping and checking the file and attaching adapters.
    pub load_seconds: f64,
    pub repack_seconds: f64,
    pub repacked_tensors: usize,
    pub repacked_bytes: u64,
    /// What the repack cache did, in words (`None` when unused).
    pub repack_cache: Option<String>,
    /// The process's peak resident memory after loading (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// The CPU kernels in words (`kernels::cpu::describe`); `None` when the model runs on a GPU.
    pub cpu_kernels: Option<String>,
}

impl LoadStats {
    /// One line for stderr.
    pub fn summary(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let repacked = if self.repacked_tensors == 0 {
            "nothing repacked".to_string()
        } else {
            let cache = self.repack_cache.as_ref().map(|c| format!(", {c}")).unwrap_or_default();
            format!(
                "repacked {} matrices ({:.2} GiB) in {:.2} s{cache}",
                self.repacked_tensors,
                gib(self.repacked_bytes),
                self.repack_seconds
            )
        };
        let rss = self
            .peak_rss_bytes
            .map(|b| format!(", peak RSS {:.2} GiB", gib(b)))
            .unwrap_or_default();
        let kernels = self
            .cpu_kernels
            .as_ref()
            .map(|k| format!("; CPU kernels {k}"))
            .unwrap_or_default();
        format!(
            "load: {:.2} s mapping and checking, {repacked}{rss}{kernels}",
            self.load_seconds
        )
    }
}

/// The process's peak resident set size (`VmHWM` of /proc/self/status), where the OS says.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A repacking progress line on stderr when it is a terminal and the repacking has taken more
/// than a second (a 7B model takes a few on two cores), redrawn at most ten times a second
/// and erased at the end.
struct RepackProgress {
    start: std::time::Instant,
    last: Option<std::time::Instant>,
    tty: bool,
}

impl RepackProgress {
    fn new() -> RepackProgress {
        use std::io::IsTerminal;
        RepackProgress {
            start: std::time::Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64, todo: u64) {
        let now = std::time::Instant::now();
        let due = self.last.is_none_or(|t| now.duration_since(t).as_millis() >= 100);
        if !self.tty || now.duration_since(self.start).as_secs_f64() < 1.0 || !due || todo == 0 {
            return;
        }
        self.last = Some(now);
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        eprint!(
            "\rrepacking weights: {:3.0}% ({:.2} of {:.2} GiB)",
            100.0 * done as f64 / todo as f64,
            gib(done),
            gib(todo)
        );
    }

    fn finish(&self) {
        if self.last.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `--threads` as used: `None` or 0 means every core; a request above the CPU count is
/// clamped to it with a note on stderr (more workers than CPUs only slow the matmuls down, and
/// tens of thousands fail to spawn).
pub fn thread_count(requested: Option<usize>) -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match requested {
        None | Some(0) => cpus,
        Some(n) if n > cpus => {
            eprintln!("note: --threads {n} is more than the {cpus} CPUs available; using {cpus}");
            cpus
        }
        Some(n) => n,
    }
}

/// Opens and checks a model file, attaches the `--lora` adapters, and repacks the weights as
/// `repack` and the device say (with `threads` threads, default all physical cores).
pub fn load_model_with(
    path: &Path,
    repack: RepackArg,
    lora: &LoraArgs,
    threads: Option<usize>,
    on_cpu: bool,
) -> anyhow::Result<(Arc<GgufFile>, Arc<LlamaModel>, LoadStats)> {
    let start = std::time::Instant::now();
    let file = Arc::new(GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut model = LlamaModel::load(Arc::clone(&file)).with_context(|| format!("loading {}", path.display()))?;
    apply_loras(&mut model, &lora.lora)?;
    let mut stats = LoadStats {
        load_seconds: start.elapsed().as_secs_f64(),
        ..LoadStats::default()
    };
    if let Some(which) = repack.choice(on_cpu) {
        let threads = match threads {
            None | Some(0) => edgeact_runtime::kernels::cpu::physical_cores(),
            Some(_) => thread_count(threads),
        };
        let mut progress = RepackProgress::new();
        let mut update = |done, todo| progress.update(done, todo);
        let report = match repack_cache::default_dir().filter(|_| repack.repack_cache) {
            Some(dir) => {
                let written = Box::new(|result: Result<u64, String>| {
                    if let Err(e) = result {
                        eprintln!("edgeact: repack cache not written: {e}");
                    }
                });
                model.repack_cached(which, threads, &dir, &mut update, written)
            }
            None => model.repack(which, threads, &mut update),
        }
        .with_context(|| format!("repacking {}", path.display()));
        progress.finish();
        let report = report?;
        stats.repack_cache = match &report.cache {
            CacheUse::Unused => None,
            CacheUse::Loaded(path) => Some(format!("mapped from the repack cache {}", path.display())),
            CacheUse::Writing { path, miss } => Some(format!(
                "repack cache miss ({miss}): writing {} in the background",
                path.display()
            )),
            CacheUse::NotWritten { miss, error } => {
                eprintln!("edgeact: repack cache not written: {error}");
                Some(format!("repack cache miss ({miss}), not written"))
            }
        };
        if report.tensors == 0 && which == RepackChoice::All {
            let types: Vec<String> = edgeact_runtime::kernels::cpu::KERNEL_TYPES
                .iter()
                .filter(|k| k.repack)
                .map(|k| k.ty.to_string())
                .collect();
            eprintln!(
                "edgeact: --repack: nothing repacked (needs {} weights and an x86-64 CPU with AVX2)",
                types.join("/")
            );
        }
        stats.repack_seconds = report.seconds;
        stats.repacked_tensors = report.tensors;
        stats.repacked_bytes = report.bytes;
    }
    stats.peak_rss_bytes = peak_rss_bytes();
    if on_cpu {
        stats.cpu_kernels = Some(edgeact_runtime::kernels::cpu::describe());
    }
    Ok((file, Arc::new(model), stats))
}

impl ModelArgs {
    /// Maps and checks the model file, repacked as `--repack`/`--no-repack` and the device
    /// (`on_cpu`) say; with `-v`, prints what it took.
    pub fn load_model(&self, on_cpu: bool) -> anyhow::Result<(Arc<GgufFile>, Arc<LlamaModel>)> {
        let (file, model, stats) = load_model_with(&self.model, self.repack, &self.lora, self.threads, on_cpu)?;
        if self.verbose {
            eprintln!("{}", stats.summary());
        }
        Ok((file, model))
    }

    /// Loads the model and opens a session with these flags, warning when the context is capped.
    pub fn open(&self) -> anyhow::Result<(Arc<GgufFile>, Arc<LlamaModel>, Session)> {
        // The device first: a GPU that cannot be used fails before the model is mapped.
        let backend = self.device.resolve()?;
        let (file, model) = self.load_model(backend == Backend::Cpu)?;
        let opts = self.session_options(&model)?;
        let session = self.device.session(&backend, Arc::clone(&model), opts)?;
        Ok((file, model, session))
    }

    /// The context length for `model`: `--ctx` or [`DEFAULT_CTX`], capped at the model's
    /// maximum (with a note when `--ctx` named more).
    pub fn n_ctx(&self, model: &LlamaModel) -> anyhow::Result<usize> {
        let max = model.config().max_context;
        Ok(match self.ctx {
            Some(0) => bail!("--ctx 0 is not a context length"),
            Some(n) if n > max => {
                eprintln!("note: --ctx {n} is above the model's maximum; using {max}");
                max
            }
            Some(n) => n,
            // The default quietly shrinks to small models.
            None => self.default_ctx.unwrap_or(DEFAULT_CTX).min(max),
        })
    }

    /// The session settings of these flags for `model`, warning when the context is capped.
    pub fn session_options(&self, model: &LlamaModel) -> anyhow::Result<SessionOptions> {
        Ok(SessionOptions {
            n_ctx: self.n_ctx(model)?,
            threads: thread_count(self.threads),
            kv_type: self.kv_type,
            activations: self.activations.activations,
            ..Default::default()
        })
    }
}

/// Sampling flags shared by `run` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k truncation (0 disables).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) truncation (1.0 disables).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p truncation (0.0 disables).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling mass (1.0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub typical_p: f32,
    /// Repetition penalty (1.0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens of history the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the output contains this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn sampler(&self) -> anyhow::Result<Sampler> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let cfg = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("invalid sampling flags: {e}"))?;
        Ok(Sampler::new(cfg))
    }
}

/// Prints the speed line llama.cpp users expect, on stderr.
pub fn print_timings(g: &Generation) {
    eprintln!();
    eprintln!(
        "prompt: {} tokens ({} evaluated) in {:.2} s = {:.2} t/s | generation: {} tokens in {:.2} s = {:.2} t/s | stop: {}",
        g.n_prompt,
        g.n_prompt_evaluated,
        g.prompt_time.as_secs_f64(),
        g.prompt_tps(),
        g.n_generated,
        g.gen_time.as_secs_f64(),
        g.gen_tps(),
        g.stop
    );
}

#[cfg(test)]
mod tests {
    use super::{DeviceArgs, LoraSpec};
    use edgeact_runtime::gguf::GgufFile;
    use edgeact_runtime::kernels::cuda::{Backend, DeviceChoice, GpuInfo};
    use edgeact_runtime::model::{LlamaModel, SessionOptions};
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A GPU that cannot take the model (here: no driver at all, or a build without CUDA, as
    /// out of memory or a kernel that does not load would) is left for the CPU under `auto`;
    /// a named device and `bench`'s exact session fail with the reason.
    #[test]
    fn auto_leaves_the_model_to_the_cpu_when_the_gpu_cannot_take_it() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/stories260K/stories260K-f32-v3.gguf");
        let model = Arc::new(LlamaModel::load(Arc::new(GgufFile::open(&path).unwrap())).unwrap());
        // An ordinal no machine has, so that the GPU fails also where a real one exists.
        let gpu = Backend::Cuda(GpuInfo {
            ordinal: 9999,
            name: "absent GPU".into(),
            total_mem: 1 << 30,
            compute_capability: (8, 0),
        });
        let opts = || SessionOptions {
            n_ctx: 32,
            ..Default::default()
        };
        let args = |device| DeviceArgs {
            device,
            gpu_layers: None,
        };
        let auto = args(DeviceChoice::Auto);
        let mut s = auto.session(&gpu, Arc::clone(&model), opts()).unwrap();
        assert_eq!(s.gpu_layers(), 0);
        assert!(s.eval(&[1, 2, 3]).is_ok());
        assert!(auto.exact_session(&gpu, Arc::clone(&model), opts()).is_err());
        assert!(args(DeviceChoice::Cuda(0)).session(&gpu, model, opts()).is_err());
    }

    fn spec(s: &str) -> Result<(PathBuf, f32), String> {
        s.parse::<LoraSpec>().map(|l| (l.path, l.scale))
    }

    #[test]
    fn lora_spec_takes_the_scale_after_the_last_colon_only_when_it_is_a_number() {
        assert_eq!(spec("a.gguf"), Ok(("a.gguf".into(), 1.0)));
        assert_eq!(spec("a.gguf:0.5"), Ok(("a.gguf".into(), 0.5)));
        assert_eq!(spec("a.gguf:-1"), Ok(("a.gguf".into(), -1.0)));
        assert_eq!(spec("my:adapter.gguf"), Ok(("my:adapter.gguf".into(), 1.0)));
        assert_eq!(spec("my:adapter.gguf:2"), Ok(("my:adapter.gguf".into(), 2.0)));
        assert_eq!(spec("/x/a.gguf:"), Ok(("/x/a.gguf:".into(), 1.0)));
        assert!(spec(":0.5").is_err());
        assert!(spec("a.gguf:nan").is_err());
        assert!(spec("a.gguf:inf").is_err());
    }
}
