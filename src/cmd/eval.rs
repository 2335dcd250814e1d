//! `edgeact eval os|db`: run AgentBench task files with judging and report the success rate
//! per task type, as the AgentBench harness computes it, over one or several sampling seeds.
//!
//! Defaults reproduce the published setup: no system prompt, T = 0.7 sampling, 128 new
//! tokens, prompts left-truncated to 3968 tokens, unconstrained decoding. `--greedy` gives
//! a deterministic run; `--seeds N` runs every task N times and reports mean and spread.
//! `--scripted FILE` replays fixed replies instead of a model (tests).
//!
//! `--jobs N` runs N tasks at once. With a model on the CPU they are N sequences of ONE
//! continuous-batching engine ([`edgeact_runtime::batching`]: one weight pass per step for all
//! of them, shared-prefix reuse across tasks), whatever N is; on a GPU each job has its own
//! session. `--endpoint URL[,URL...]` drives running TGI-compatible servers instead of a local
//! model, AgentBench-style (job `j` talks to `URL[j % n]`).

use super::args::{ActivationsArg, DeviceArgs, LoraArgs, ModelArgs, RepackArg};
use crate::cmd::agent_model::LoadedModel;
use anyhow::{bail, Context};
use edgeact_agent::judge::{judge_db_answer, judge_db_hash};
use edgeact_agent::os::{Backend, MachineOptions, RootfsChoice};
use edgeact_agent::remote::{parse_endpoints, RemoteConfig, RemoteModel};
use edgeact_agent::render::{db_initial_history, os_initial_history};
use edgeact_agent::scripted;
use edgeact_agent::sql::{SqlEngine, SqlTool};
use edgeact_agent::tasks::load_os_tasks;
use edgeact_agent::tasks::{load_db_tasks, DbTask, OsTask};
use edgeact_agent::transcript::{RecordingModel, RunEnd, RunStart, Transcript};
use edgeact_agent::{
    run_db, BatchedModel, ChatTemplate, EngineConfig, EngineModel, Event, FormatChoice, LanguageModel, LoopLimits,
    PromptFormat, Protocol, Run, ScriptedModel, Status,
};
use edgeact_runtime::batching::Scheduler;
use edgeact_runtime::model::KvType;
use edgeact_runtime::speculate::SpeculateConfig;
use edgeact_tools::os::task::default_scripts_dir;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(clap::Subcommand)]
enum Kind {
    /// OS interaction tasks (AgentBench `os_interaction` JSON).
    Os(EvalArgs),
    /// DB tasks (AgentBench `dbbench` JSONL).
    Db(EvalArgs),
}

#[derive(clap::Args, Clone)]
struct EvalArgs {
    /// GGUF model file (not needed with --scripted or --endpoint).
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,
    /// Running TGI-compatible servers (TGI, `edgeact serve`) to ask instead of a local model:
    /// `URL[,URL...]`; each job uses one of them in turn (job j: URL number j mod count).
    /// The local model's flags (and `--constrain`, which needs the local sampler) conflict
    /// with it rather than being silently ignored.
    #[arg(long, conflicts_with_all = [
        "model", "scripted", "constrain", "ctx", "threads", "kv_type", "lora", "device", "gpu_layers",
        "activations", "repack", "no_repack", "repack_cache", "no_speculate",
    ])]
    endpoint: Option<String>,
    /// Task file: OS `.json`/`.jsonl`, DB `.jsonl`.
    #[arg(long)]
    tasks: PathBuf,
    /// OS: directory the task's script `file`s are relative to (default: AgentBench's layouts,
    /// `data/<set>.json` → `scripts/<set>/` and `data/<N>/<name>.json` → `scripts/<N>/`).
    /// Script files must stay inside it (no absolute paths, `..` or links out).
    #[arg(long)]
    scripts: Option<PathBuf>,
    /// Tasks run in parallel. CPU: as sequences of one shared batching engine (all threads),
    /// --jobs 1: the single-sequence engine; both speculate unless --no-speculate. GPU: one
    /// session each; --endpoint: concurrent requests.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Only the first N tasks.
    #[arg(long)]
    limit: Option<usize>,
    /// Greedy decoding (one deterministic run) instead of T = 0.7 sampling.
    #[arg(long, conflicts_with = "seeds")]
    greedy: bool,
    /// Sampled runs per task (seeds 0..N); mean and spread are reported.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every run's transcript as JSON Lines.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Replay fixed replies (JSONL `{"index": N, "replies": [...]}`) instead of a model.
    #[arg(long, conflicts_with = "model")]
    scripted: Option<PathBuf>,
    /// System prompt: `eval` (none, as published) or `agent` (AgentLM's model card).
    #[arg(long, default_value = "eval")]
    template: String,
    /// Prompt format: `llama2` (as AgentBench rendered AgentLM), `gguf` (the model's
    /// `tokenizer.chat_template`) or `auto` (llama2 unless the model has a non-Llama-2 template).
    #[arg(long, default_value = "auto", value_parser = FormatChoice::NAMES)]
    chat_template: String,
    /// Protocol-constrained decoding (off by default to reproduce the published setup).
    #[arg(long)]
    constrain: bool,
    /// Turn off prompt-lookup speculative decoding (on by default, on one sequence and on the
    /// batched engine of --jobs N>1) and jump-forward of forced tokens (one sequence only).
    #[arg(long)]
    no_speculate: bool,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Context length in tokens [default: 4096, capped at the model's maximum].
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    /// CPU threads in all (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    #[arg(long, default_value = "f16")]
    kv_type: KvType,
    #[command(flatten)]
    activations: ActivationsArg,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    repack: RepackArg,
    #[command(flatten)]
    lora: LoraArgs,
    /// OS: root file system of the sandboxes: `built` (default: the Debian root of `edgeact
    /// rootfs build`, built and cached on first use), `host` (the host's files read-only,
    /// private places masked) or a root directory.
    #[arg(long, default_value = "built")]
    rootfs: RootfsChoice,
    /// OS: strip terminal escapes and the prompt from observations.
    #[arg(long)]
    clean_output: bool,
    /// OS: isolation of the task machines: namespace sandbox (default), docker or podman.
    #[arg(long, default_value = "namespace", value_parser = super::agent::backend_parser())]
    backend: Backend,
    /// OS: container image for --backend docker|podman (default edgeact/os-default).
    #[arg(long)]
    image: Option<String>,
    /// DB: use a MySQL/MariaDB server (`mysql://user:pass@host:port`) instead of SQLite.
    #[arg(long)]
    mysql: Option<String>,
}

/// One task run's outcome.
#[derive(Clone, Debug, Serialize)]
struct TaskResult {
    index: usize,
    seed: u64,
    kind: String,
    status: Option<Status>,
    answer: Option<String>,
    correct: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    model_calls: usize,
    prefilled_tokens: usize,
    generated_tokens: usize,
    /// Decode time and forward passes of the replies (passes: 0 where not counted).
    gen_seconds: f64,
    forward_passes: usize,
    draft_accepted: usize,
    forced_tokens: usize,
    seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Acc {
    total: usize,
    pass: usize,
    acc: f64,
}

/// Success rates of one seed's runs.
#[derive(Clone, Debug, Serialize)]
struct SeedSummary {
    seed: u64,
    by_type: BTreeMap<String, Acc>,
    /// OS: overall accuracy; DB: mean of SELECT, INSERT and UPDATE accuracies.
    score: f64,
}

#[derive(Serialize)]
struct Report {
    protocol: &'static str,
    tasks_file: String,
    model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    jobs: usize,
    /// Wall time of all runs, and runs finished per minute.
    seconds: f64,
    tasks_per_minute: f64,
    scripted: Option<String>,
    greedy: bool,
    template: String,
    /// The prompt format used (`llama2`/`gguf`; the `--chat-template` choice when scripted).
    chat_template: String,
    constrained: bool,
    /// Speculative decoding and jump-forward were on.
    speculate: bool,
    decode: DecodeSummary,
    seeds: Vec<SeedSummary>,
    score_mean: f64,
    score_std: f64,
    results: Vec<TaskResult>,
}

/// Decode figures over all runs: generated tokens per second of decode time, forward passes
/// per generated token, draft tokens accepted and tokens forced by the constraint. On the
/// batched engine a run's forward passes are the engine steps that evaluated its generated
/// tokens (a step shared by several runs counts for each); `engine_steps` is the engine's
/// own count of steps (prefill included) and `draft_tokens` the drafts it verified.
#[derive(Clone, Debug, Default, Serialize)]
struct DecodeSummary {
    generated_tokens: usize,
    gen_seconds: f64,
    tokens_per_second: f64,
    forward_passes: usize,
    passes_per_token: f64,
    draft_accepted: usize,
    forced_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_steps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draft_tokens: Option<u64>,
}

impl DecodeSummary {
    fn of(results: &[TaskResult]) -> DecodeSummary {
        let mut d = DecodeSummary::default();
        for r in results {
            d.generated_tokens += r.generated_tokens;
            d.gen_seconds += r.gen_seconds;
            d.forward_passes += r.forward_passes;
            d.draft_accepted += r.draft_accepted;
            d.forced_tokens += r.forced_tokens;
        }
        d.tokens_per_second = d.generated_tokens as f64 / d.gen_seconds.max(1e-9);
        d.passes_per_token = d.forward_passes as f64 / d.generated_tokens.max(1) as f64;
        d
    }
}

/// A sum over the replies of a run (0 without one).
fn reply_sum(run: &Option<Run>, f: impl Fn(&edgeact_agent::TurnStats) -> f64) -> f64 {
    run.as_ref()
        .map_or(0.0, |r| r.steps.iter().map(|s| f(&s.reply.stats)).sum())
}

/// Where replies come from.
enum Source {
    /// A local model: one batching engine on the CPU, a session per job on a GPU.
    Engine(Box<LoadedModel>, Option<Scheduler>),
    /// TGI-compatible servers.
    Remote(Vec<String>),
    Scripted(HashMap<usize, Vec<String>>),
}

/// A job's model: answers calls and is reseeded per task.
trait JobModel: LanguageModel + Send {
    fn reseed(&mut self, seed: u64);
}

impl JobModel for EngineModel {
    fn reseed(&mut self, seed: u64) {
        EngineModel::reseed(self, seed);
    }
}

impl JobModel for BatchedModel {
    fn reseed(&mut self, seed: u64) {
        BatchedModel::reseed(self, seed);
    }
}

impl JobModel for RemoteModel {
    fn reseed(&mut self, seed: u64) {
        RemoteModel::reseed(self, seed);
    }
}

enum Tasks {
    Os(Vec<OsTask>),
    Db(Vec<DbTask>),
}

impl Tasks {
    fn len(&self) -> usize {
        match self {
            Tasks::Os(t) => t.len(),
            Tasks::Db(t) => t.len(),
        }
    }
    fn kind(&self, i: usize) -> String {
        match self {
            Tasks::Os(_) => "os".into(),
            Tasks::Db(t) => t[i].kind().to_string(),
        }
    }
}

impl EvalArgs {
    /// The files the run reads, which its outputs may not overwrite.
    fn inputs(&self) -> Vec<&std::path::Path> {
        let mut v: Vec<&std::path::Path> = vec![&self.tasks];
        v.extend(self.model.as_deref());
        v.extend(self.scripted.as_deref());
        v.extend(self.lora.files());
        v
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (protocol, a) = match args.kind {
        Kind::Os(a) => ("os", a),
        Kind::Db(a) => ("db", a),
    };
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    // The outputs may not name an input (nor each other): refused now, not after the run.
    let inputs = a.inputs();
    let mut report_inputs = inputs.clone();
    report_inputs.extend(a.log.as_deref());
    if let Some(json) = &a.json {
        let report = edgeact_runtime::files::partial::output_target(json, &report_inputs)?;
        if let Some(log) = &a.log {
            if edgeact_runtime::files::partial::output_target(log, &[])? == report {
                bail!("--json and --log name the same file ({})", json.display());
            }
        }
    }
    let template = ChatTemplate::from_name(&a.template)
        .with_context(|| format!("unknown template {:?} (eval or agent)", a.template))?;
    let mut tasks = match protocol {
        "os" => {
            let dir = match &a.scripts {
                Some(d) => d.clone(),
                None => default_scripts_dir(&a.tasks),
            };
            Tasks::Os(load_os_tasks(&a.tasks, &dir)?)
        }
        _ => Tasks::Db(load_db_tasks(&a.tasks)?),
    };
    if let Some(n) = a.limit {
        match &mut tasks {
            Tasks::Os(t) => t.truncate(n),
            Tasks::Db(t) => t.truncate(n),
        }
    }
    // The OS sandboxes' root is settled (built on first use) once, before any model loads or
    // task starts, so parallel jobs never race to build it.
    let rootfs = match protocol {
        "os" => a.rootfs.prepare(a.backend)?,
        _ => a.rootfs.clone(),
    };
    let seeds: Vec<u64> = if a.greedy || a.scripted.is_some() {
        vec![0]
    } else {
        (0..a.seeds).collect()
    };
    let n_items = seeds.len() * tasks.len();
    let n_jobs = a.jobs.min(n_items.max(1));
    let source = match (&a.scripted, &a.model, &a.endpoint) {
        (Some(path), _, _) => Source::Scripted(scripted::load(path)?),
        (None, _, Some(list)) => Source::Remote(parse_endpoints(list)?),
        (None, Some(model), None) => {
            let m = LoadedModel::load(&ModelArgs {
                model: model.clone(),
                ctx: a.ctx,
                default_ctx: None,
                threads: a.threads,
                kv_type: a.kv_type,
                activations: a.activations,
                device: a.device.clone(),
                repack: a.repack,
                lora: a.lora.clone(),
                verbose: false,
            })?;
            // The batching engine runs on the CPU; on a GPU each job keeps its own session.
            // One job runs the single-sequence engine. Both speculate unless told not to.
            let scheduler = if m.on_cpu() && n_jobs > 1 {
                let speculate = if a.no_speculate {
                    SpeculateConfig::off()
                } else {
                    SpeculateConfig::default()
                };
                Some(m.scheduler(n_jobs, speculate)?)
            } else {
                None
            };
            Source::Engine(Box::new(m), scheduler)
        }
        (None, None, None) => bail!("give a model with -m (or --endpoint URL, or --scripted FILE)"),
    };
    let mut config = EngineConfig::eval(0);
    config.template = template;
    let choice = FormatChoice::from_name(&a.chat_template).unwrap_or_default();
    let format_name = match &source {
        Source::Engine(m, _) => {
            config.format = m.prompt_format(choice)?;
            eprintln!(
                "edgeact: prompt format {} (--chat-template {})",
                config.format.name(),
                choice.name()
            );
            config.format.name()
        }
        Source::Remote(urls) => {
            // AgentBench's TGI client rendered FastChat's llama-2 template; the server
            // tokenizes it.
            if choice == FormatChoice::Gguf {
                bail!("--chat-template gguf needs a local model; --endpoint sends llama2 prompts");
            }
            eprintln!(
                "edgeact: prompt format llama2 to {} server(s): {}",
                urls.len(),
                urls.join(", ")
            );
            "llama2"
        }
        Source::Scripted(_) => choice.name(),
    };
    config.constrained = a.constrain;
    config.max_new_tokens = a.max_new_tokens;
    if a.no_speculate {
        config.speculate.enabled = false;
    }
    if a.greedy {
        config.sampler.temperature = 0.0;
    }
    let items: Vec<(u64, usize)> = seeds
        .iter()
        .flat_map(|&s| (0..tasks.len()).map(move |i| (s, i)))
        .collect();
    let log = match &a.log {
        Some(p) => Some(Mutex::new(Transcript::create(p, &inputs)?)),
        None => None,
    };
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks [{elapsed_precise} / eta {eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let total_threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_job = (total_threads / n_jobs).max(1);
    let mut remote_config = RemoteConfig::eval(a.greedy);
    remote_config.template = config.template.clone();
    remote_config.max_new_tokens = config.max_new_tokens;
    remote_config.truncate = config.max_prompt_tokens;
    let job_counter = AtomicUsize::new(0);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<TaskResult>> = Mutex::new(Vec::new());
    let passed = AtomicUsize::new(0);
    let worker_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let sql_engine = SqlEngine::from_flag(a.mysql.as_deref());
    let machine = MachineOptions {
        rootfs,
        clean_output: a.clean_output,
        backend: a.backend,
        image: a.image.clone(),
    };
    // The format the transcript's prompts are rendered in: the model's; llama2 for servers
    // and for scripted replies (what a llama-2 model would have been given), none for
    // scripted replies under `--chat-template gguf` (no template to render with).
    let log_format = match &source {
        Source::Engine(..) => Some(config.format.clone()),
        Source::Remote(_) => Some(PromptFormat::Llama2),
        Source::Scripted(_) => (choice != FormatChoice::Gguf).then_some(PromptFormat::Llama2),
    };
    let env = Env {
        tasks: &tasks,
        source: &source,
        sql_engine: &sql_engine,
        machine: &machine,
        log: log.as_ref(),
        log_format: log_format.as_ref(),
        template: &config.template,
        seeds: seeds.len() as u64,
    };
    std::thread::scope(|scope| {
        for _ in 0..n_jobs {
            scope.spawn(|| {
                let job = job_counter.fetch_add(1, Ordering::SeqCst);
                let made: anyhow::Result<Option<Box<dyn JobModel>>> = match &source {
                    Source::Engine(m, Some(s)) => m
                        .batched(s, config.clone())
                        .map(|b| Some(Box::new(b) as Box<dyn JobModel>)),
                    Source::Engine(m, None) => m
                        .engine(config.clone(), Some(per_job))
                        .map(|e| Some(Box::new(e) as Box<dyn JobModel>)),
                    Source::Remote(urls) => Ok(Some(Box::new(RemoteModel::new(
                        &urls[job % urls.len()],
                        remote_config.clone(),
                    )))),
                    Source::Scripted(_) => Ok(None),
                };
                let mut engine = match made {
                    Ok(e) => e,
                    Err(e) => {
                        if let Ok(mut w) = worker_error.lock() {
                            w.get_or_insert(e);
                        }
                        return;
                    }
                };
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(seed, index)) = items.get(k) else { break };
                    let t0 = Instant::now();
                    let outcome = run_one(&env, index, seed, engine.as_deref_mut());
                    let (run, correct, answer_override, error) = match outcome {
                        Ok((run, correct, ans)) => (Some(run), correct, ans, None),
                        Err(e) => (None, false, None, Some(format!("{e:#}"))),
                    };
                    let r = TaskResult {
                        index,
                        seed,
                        kind: tasks.kind(index),
                        status: run.as_ref().map(|r| r.status),
                        answer: answer_override.or_else(|| run.as_ref().and_then(|r| r.answer.clone())),
                        correct,
                        error,
                        model_calls: run.as_ref().map_or(0, |r| r.steps.len()),
                        prefilled_tokens: run.as_ref().map_or(0, Run::prefilled_tokens),
                        generated_tokens: run.as_ref().map_or(0, Run::generated_tokens),
                        gen_seconds: reply_sum(&run, |s| s.gen_ms) / 1e3,
                        forward_passes: reply_sum(&run, |s| s.forward_passes as f64) as usize,
                        draft_accepted: reply_sum(&run, |s| s.draft_accepted as f64) as usize,
                        forced_tokens: reply_sum(&run, |s| s.forced_tokens as f64) as usize,
                        seconds: t0.elapsed().as_secs_f64(),
                    };
                    if let Some(e) = &r.error {
                        bar.println(format!("task {index} (seed {seed}): error: {e}"));
                    }
                    if r.correct {
                        passed.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Ok(mut v) = results.lock() {
                        v.push(r);
                        bar.set_message(format!("{}/{} passed", passed.load(Ordering::SeqCst), v.len()));
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    // Local models speculate (one sequence or batched) unless --no-speculate.
    let speculating = config.speculate.enabled && matches!(source, Source::Engine(..));
    let mut engine_steps = None;
    if let Source::Engine(_, Some(s)) = source {
        let m = s.handle().metrics();
        engine_steps = Some((m.steps, m.draft_tokens));
        s.shutdown();
    }
    if let Some(e) = worker_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut results = results.into_inner().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    results.sort_by_key(|r| (r.seed, r.index));
    let summaries: Vec<SeedSummary> = seeds.iter().map(|&s| summarize(protocol, s, &results)).collect();
    let scores: Vec<f64> = summaries.iter().map(|s| s.score).collect();
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let std = if scores.len() > 1 {
        (scores.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (scores.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    print_summary(protocol, &summaries, mean, std);
    let tasks_per_minute = results.len() as f64 / (seconds / 60.0).max(1e-9);
    eprintln!(
        "{} run(s) in {seconds:.1} s with {n_jobs} job(s): {tasks_per_minute:.2} tasks/min",
        results.len()
    );
    let mut decode = DecodeSummary::of(&results);
    if let Some((steps, drafted)) = engine_steps {
        decode.engine_steps = Some(steps);
        decode.draft_tokens = Some(drafted);
    }
    if decode.forward_passes > 0 {
        eprintln!(
            "decode: {} tokens in {:.1} s ({:.1} tok/s), {} forward passes ({:.3} per token), \
             {} draft tokens accepted, {} forced",
            decode.generated_tokens,
            decode.gen_seconds,
            decode.tokens_per_second,
            decode.forward_passes,
            decode.passes_per_token,
            decode.draft_accepted,
            decode.forced_tokens
        );
    }
    if let (Some(steps), Some(drafted)) = (decode.engine_steps, decode.draft_tokens) {
        eprintln!("batched engine: {steps} steps, {drafted} draft tokens verified");
    }
    let errors: Vec<&str> = results.iter().filter_map(|r| r.error.as_deref()).collect();
    if let Some(first) = errors.first() {
        eprintln!(
            "{} run(s) ended with an error (counted as failed); the first: {first}",
            errors.len()
        );
    }
    // Every run failing is a set-up problem (no server, no database), not a score of 0: the
    // report is still written, and the exit status says so.
    let all_failed = !results.is_empty() && errors.len() == results.len();
    if let Some(path) = &a.json {
        let report = Report {
            protocol: if protocol == "os" { "os" } else { "db" },
            tasks_file: a.tasks.display().to_string(),
            model: a.model.as_ref().map(|p| p.display().to_string()),
            endpoint: a.endpoint.clone(),
            jobs: n_jobs,
            seconds,
            tasks_per_minute,
            scripted: a.scripted.as_ref().map(|p| p.display().to_string()),
            greedy: a.greedy,
            template: a.template.clone(),
            chat_template: format_name.to_string(),
            constrained: a.constrain,
            speculate: speculating,
            decode,
            seeds: summaries,
            score_mean: mean,
            score_std: std,
            results,
        };
        let text = serde_json::to_string_pretty(&report)?;
        let out = edgeact_runtime::files::AtomicOutput::create(path, &report_inputs)?;
        std::io::Write::write_all(&mut out.file(), (text + "\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        out.commit()?;
    }
    if all_failed {
        eprintln!("error: every run ended with an error");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What every task run shares.
struct Env<'a> {
    tasks: &'a Tasks,
    source: &'a Source,
    sql_engine: &'a SqlEngine,
    machine: &'a MachineOptions,
    log: Option<&'a Mutex<Transcript>>,
    /// The prompt format of the transcript's `final_prompt` (none: not rendered).
    log_format: Option<&'a PromptFormat>,
    template: &'a ChatTemplate,
    /// Seeds the command runs (recorded in each run's `start`).
    seeds: u64,
}

/// Runs and judges one task; returns the run, whether it passed, and the recorded answer
/// when it is not the agent's (the table hash for mutating DB tasks). With `--log`, the run's
/// `start`, events and `end` (verdict, final prompt; the error when it failed) are written.
fn run_one(
    env: &Env<'_>,
    index: usize,
    seed: u64,
    engine: Option<&mut (dyn JobModel + 'static)>,
) -> anyhow::Result<(Run, bool, Option<String>)> {
    let Env {
        tasks,
        source,
        log,
        log_format,
        template,
        seeds,
        ..
    } = *env;
    let mut scripted_model;
    let model: &mut dyn LanguageModel = match (source, engine) {
        (Source::Scripted(map), _) => {
            scripted_model = ScriptedModel::new(map.get(&index).cloned().unwrap_or_default());
            &mut scripted_model
        }
        (Source::Engine(..) | Source::Remote(_), Some(e)) => {
            // A stream per (seed, task), independent of which worker runs it.
            e.reseed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
            e
        }
        (Source::Engine(..) | Source::Remote(_), None) => bail!("no model for this worker"),
    };
    let mut model = RecordingModel::new(model);
    let mut log_err = None;
    let mut write_log = |write: &mut dyn FnMut(&mut Transcript) -> anyhow::Result<()>| {
        if let Some(l) = log {
            if let Ok(mut t) = l.lock() {
                if let Err(e) = write(&mut t) {
                    log_err.get_or_insert(e);
                }
            }
        }
    };
    write_log(&mut |t| {
        let (protocol, history, extra) = match tasks {
            Tasks::Os(list) => (
                Protocol::Os,
                os_initial_history(&list[index].description),
                serde_json::json!({"description": list[index].description}),
            ),
            Tasks::Db(list) => {
                let task = &list[index];
                (
                    Protocol::Db,
                    db_initial_history(&task.description, &task.add_description),
                    serde_json::json!({"description": task.description,
                        "add_description": task.add_description, "kind": task.kind()}),
                )
            }
        };
        let start = RunStart {
            protocol,
            history,
            system: template.system().map(str::to_string),
            chat_template: log_format.map(|f| f.name().to_string()),
            seeds: Some(seeds),
        };
        t.start(Some(index), Some(seed), &start, extra)
    });
    let result = {
        let mut on_event = |ev: Event<'_>| write_log(&mut |t| t.event(Some(index), Some(seed), &ev));
        run_and_judge(env, index, &mut model, &mut on_event)
    };
    // Rendered only for a transcript: a Jinja template costs a render per task.
    let final_prompt = log.and(log_format).and_then(|f| model.last_prompt(f, template));
    let end = match &result {
        Ok((run, correct, _)) => RunEnd {
            status: Some(run.status),
            answer: run.answer.clone(),
            correct: Some(*correct),
            error: None,
            prefilled_tokens: run.prefilled_tokens(),
            generated_tokens: run.generated_tokens(),
            final_prompt,
        },
        Err(e) => RunEnd {
            correct: Some(false),
            error: Some(format!("{e:#}")),
            final_prompt,
            ..RunEnd::default()
        },
    };
    write_log(&mut |t| t.end(Some(index), Some(seed), &end, serde_json::Value::Null));
    if let Some(e) = log_err {
        return Err(e.context("writing the transcript"));
    }
    result
}

/// The loop of task `index` with `model`, and the judge's verdict.
fn run_and_judge(
    env: &Env<'_>,
    index: usize,
    model: &mut dyn LanguageModel,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<(Run, bool, Option<String>)> {
    let limits = LoopLimits::default();
    Ok(match env.tasks {
        Tasks::Db(list) => {
            let task = &list[index];
            let mut tool = SqlTool::new(env.sql_engine, &task.table)?;
            let run = run_db(
                model,
                &mut tool,
                &task.description,
                &task.add_description,
                limits,
                on_event,
            )?;
            if task.is_mutation() {
                let hash = tool.hash_answer()?;
                let ok = judge_db_hash(&hash, task.answer_md5.as_deref().unwrap_or_default());
                (run, ok, Some(hash))
            } else {
                let ok = judge_db_answer(run.answer.as_deref().unwrap_or_default(), &task.label);
                (run, ok, None)
            }
        }
        Tasks::Os(list) => {
            let task = &list[index];
            let (run, ok) = edgeact_agent::os::run_and_judge(task, env.machine, model, limits, on_event)?;
            (run, ok, None)
        }
    })
}

/// Per-type accuracies of one seed, and the headline score.
fn summarize(protocol: &str, seed: u64, results: &[TaskResult]) -> SeedSummary {
    let mut by_type: BTreeMap<String, Acc> = BTreeMap::new();
    for r in results.iter().filter(|r| r.seed == seed) {
        let mut add = |k: &str| {
            let e = by_type.entry(k.to_string()).or_default();
            e.total += 1;
            e.pass += r.correct as usize;
        };
        if protocol == "os" {
            add("overall");
        } else {
            add(&r.kind);
            // dbbench counts every type except INSERT and UPDATE under SELECT.
            if r.kind != "INSERT" && r.kind != "UPDATE" && r.kind != "SELECT" {
                add("SELECT");
            }
        }
    }
    for v in by_type.values_mut() {
        v.acc = if v.total > 0 {
            v.pass as f64 / v.total as f64
        } else {
            0.0
        };
    }
    let acc = |k: &str| by_type.get(k).map_or(0.0, |a| a.acc);
    let score = if protocol == "os" {
        acc("overall")
    } else {
        (acc("SELECT") + acc("INSERT") + acc("UPDATE")) / 3.0
    };
    SeedSummary { seed, by_type, score }
}

fn print_summary(protocol: &str, summaries: &[SeedSummary], mean: f64, std: f64) {
    for s in summaries {
        println!("seed {}:", s.seed);
        for (k, v) in &s.by_type {
            println!("  {k:<18} {:>3}/{:<3} {:6.1}%", v.pass, v.total, 100.0 * v.acc);
        }
        let what = if protocol == "os" {
            "success rate"
        } else {
            "score (mean of SELECT, INSERT, UPDATE)"
        };
        println!("  {what}: {:.1}%", 100.0 * s.score);
    }
    if summaries.len() > 1 {
        println!(
            "mean over {} seeds: {:.1}% (std {:.1})",
            summaries.len(),
            100.0 * mean,
            100.0 * std
        );
    }
}
