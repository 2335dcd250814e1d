//! `edgeact agent os|db`: run the AgentBench ReAct loop on one task with a local model,
//! showing the transcript live (generated text, actions, observations, token counts and
//! speeds) and optionally writing it as JSONL (`--log`).

use super::args::ModelArgs;
use crate::cmd::agent_model::LoadedModel;
use anyhow::{bail, Context};
use edgeact_agent::os::{Backend, MachineOptions, RootfsChoice, SandboxMachine, ROOTFS_HELP};
use edgeact_agent::react::ParsedAction;
use edgeact_agent::render::{db_initial_history, os_initial_history, Message};
use edgeact_agent::sql::{default_add_description, SqlEngine, SqlTool};
use edgeact_agent::transcript::{RecordingModel, RunEnd, RunStart, Transcript};
use edgeact_agent::{
    run_db, ChatTemplate, DbAction, EngineConfig, EngineModel, Event, FormatChoice, LanguageModel, LoopLimits,
    OsAction, Protocol, Run, Status, Tool,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(clap::Subcommand)]
enum Task {
    /// An OS task: the agent works in a sandboxed bash shell.
    Os(OsArgs),
    /// A DB task: the agent queries a table with SQL.
    Db(DbArgs),
}

/// Generation flags shared by `agent os` and `agent db`.
#[derive(clap::Args, Clone, Debug)]
pub struct GenArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt: `agent` (AgentLM's model-card system prompt) or `eval` (none, as the
    /// AgentBench harness).
    #[arg(long, default_value = "agent")]
    pub template: String,
    /// Prompt format: `llama2` (FastChat's llama-2, as AgentBench rendered AgentLM), `gguf`
    /// (the model's `tokenizer.chat_template`) or `auto` (llama2 when the model has no template
    /// or a Llama-2-style one, else gguf).
    #[arg(long, default_value = "auto", value_parser = FormatChoice::NAMES)]
    pub chat_template: String,
    /// Turn off protocol-constrained decoding.
    #[arg(long)]
    pub no_constrain: bool,
    /// Sampling temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.0)]
    pub temp: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Re-evaluate the whole prompt every turn instead of reusing the cached prefix.
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Turn off prompt-lookup speculative decoding and jump-forward of forced tokens.
    #[arg(long)]
    pub no_speculate: bool,
    /// Write the transcript as JSON Lines.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

impl GenArgs {
    /// The `--chat-template` choice (validated by clap).
    pub fn format_choice(&self) -> FormatChoice {
        FormatChoice::from_name(&self.chat_template).unwrap_or_default()
    }

    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let template = ChatTemplate::from_name(&self.template)
            .with_context(|| format!("unknown template {:?} (agent or eval)", self.template))?;
        let mut c = EngineConfig::agent();
        c.template = template;
        c.constrained = !self.no_constrain;
        c.reuse_prefix = !self.no_prefix_reuse;
        c.speculate.enabled = !self.no_speculate;
        c.max_new_tokens = self.max_new_tokens;
        c.sampler.temperature = self.temp;
        c.sampler.seed = self.seed;
        Ok(c)
    }
}

#[derive(clap::Args)]
struct OsArgs {
    #[command(flatten)]
    gen: GenArgs,
    #[arg(long, default_value = "built", help = ROOTFS_HELP)]
    rootfs: RootfsChoice,
    /// Strip terminal escapes and the prompt from observations.
    #[arg(long)]
    clean_output: bool,
    /// Isolation of the agent's machine: namespace sandbox (default), docker or podman.
    #[arg(long, default_value = "namespace", value_parser = super::agent::backend_parser())]
    backend: Backend,
    /// Container image for --backend docker|podman (default edgeact/os-default).
    #[arg(long)]
    image: Option<String>,
    /// The task, e.g. "How many files are in /etc?".
    task: String,
}

#[derive(clap::Args)]
struct DbArgs {
    #[command(flatten)]
    gen: GenArgs,
    /// The table as JSON: `{"table_name", "table_info": {"columns", "rows"}}`, or a dbbench task
    /// object holding it under `table`.
    #[arg(long)]
    table: PathBuf,
    /// Text after the question (default: AgentBench's "The name of this table is …").
    #[arg(long)]
    add_description: Option<String>,
    /// Use a MySQL/MariaDB server (`mysql://user:pass@host:port`) instead of embedded SQLite.
    #[arg(long)]
    mysql: Option<String>,
    /// The question.
    question: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.task {
        Task::Os(a) => run_os_task(a),
        Task::Db(a) => run_db_task(a),
    }
}

/// Prints loop events as they happen and mirrors them to the transcript.
pub struct LiveView {
    pub log: Option<Transcript>,
    pub log_error: Option<anyhow::Error>,
}

impl LiveView {
    pub fn on_event(&mut self, ev: Event<'_>) {
        match &ev {
            Event::Reply { round, reply, action } => {
                let s = &reply.stats;
                println!();
                let passes = if s.forward_passes > 0 {
                    format!(
                        " in {} passes ({} drafted, {} forced)",
                        s.forward_passes, s.draft_accepted, s.forced_tokens
                    )
                } else {
                    String::new()
                };
                let line = format!(
                    "[round {}] prompt {} tok ({} prefilled, {:.0} tok/s) | {} generated{} ({:.1} tok/s) | stop: {}",
                    round + 1,
                    s.prompt_tokens,
                    s.prefilled_tokens,
                    s.prompt_tps(),
                    s.generated_tokens,
                    passes,
                    s.gen_tps(),
                    stop_in_words(&s.stop)
                );
                eprintln!("{}", paint(DIM, &line));
                match action {
                    ParsedAction::Os(p) => match &p.action {
                        Some(OsAction::Bash(code)) => eprintln!("{} {code}", paint(CYAN, "→ bash:")),
                        Some(OsAction::Commit(Some(a))) => eprintln!("{} {a}", paint(GREEN, "→ answer:")),
                        Some(OsAction::Commit(None)) => eprintln!("{}", paint(GREEN, "→ finish")),
                        None => eprintln!("{}", paint(RED, "→ no valid action")),
                    },
                    ParsedAction::Db { action } => match action {
                        DbAction::Operation(sql) => eprintln!("{} {sql}", paint(CYAN, "→ SQL:")),
                        DbAction::Answer(a) => eprintln!("{}{a}", paint(GREEN, "→ final answer:")),
                        DbAction::OperationWithoutSql => eprintln!("{}", paint(RED, "→ operation without a SQL block")),
                        DbAction::NoAnswer => eprintln!("{}", paint(RED, "→ no valid action")),
                    },
                }
            }
            Event::Observation { message, .. } => {
                eprintln!("{} {message}", paint(YELLOW, "← observation:"));
            }
        }
        if let Some(t) = self.log.as_mut() {
            if let Err(e) = t.event(None, None, &ev) {
                self.log_error.get_or_insert(e);
            }
        }
    }
}

/// Prints the outcome and writes the transcript's `end` record (`final_prompt`: the last
/// model call's prompt).
fn finish(
    run: &Run,
    view: &mut LiveView,
    final_prompt: Option<String>,
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let status = match run.status {
        Status::Completed => "completed",
        Status::InvalidAction => "invalid action",
        Status::RoundLimit => "round limit",
    };
    eprintln!(
        "\n{} after {} model call(s): {} prompt tokens prefilled, {} generated",
        status,
        run.steps.len(),
        run.prefilled_tokens(),
        run.generated_tokens()
    );
    match &run.answer {
        Some(a) => println!("answer: {a}"),
        None => println!("answer: None"),
    }
    if let Some(t) = view.log.as_mut() {
        let end = RunEnd {
            status: Some(run.status),
            answer: run.answer.clone(),
            correct: None,
            error: None,
            prefilled_tokens: run.prefilled_tokens(),
            generated_tokens: run.generated_tokens(),
            final_prompt,
        };
        t.end(None, None, &end, serde_json::json!({ "extra": extra }))?;
    }
    if let Some(e) = view.log_error.take() {
        return Err(e.context("writing the transcript"));
    }
    Ok(if run.status == Status::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Opens the `--log` transcript, if any, with the run's `start` record: `history` is the
/// loop's initial history, `extra` the command's own fields.
fn open_view(
    gen: &GenArgs,
    engine: &EngineModel,
    protocol: Protocol,
    history: Vec<Message>,
    extra: serde_json::Value,
    inputs: &[&std::path::Path],
) -> anyhow::Result<LiveView> {
    let mut log = match &gen.log {
        Some(p) => {
            let mut all: Vec<&std::path::Path> = vec![&gen.model.model];
            all.extend(gen.model.lora.files());
            all.extend_from_slice(inputs);
            Some(Transcript::create(p, &all)?)
        }
        None => None,
    };
    if let Some(t) = log.as_mut() {
        let start = RunStart {
            protocol,
            history,
            system: engine.config().template.system().map(str::to_string),
            chat_template: Some(engine.config().format.name().to_string()),
            seeds: None,
        };
        t.start(None, None, &start, extra)?;
    }
    Ok(LiveView { log, log_error: None })
}

fn engine_for(gen: &GenArgs) -> anyhow::Result<edgeact_agent::EngineModel> {
    let loaded = LoadedModel::load(&gen.model)?;
    let mut config = gen.engine_config()?;
    config.format = loaded.prompt_format(gen.format_choice())?;
    eprintln!(
        "edgeact: prompt format {} (--chat-template {})",
        config.format.name(),
        gen.chat_template
    );
    let mut engine = loaded.engine(config, None)?;
    engine.set_on_text(|piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    });
    Ok(engine)
}

fn run_os_task(a: OsArgs) -> anyhow::Result<ExitCode> {
    let opts = MachineOptions {
        rootfs: a.rootfs.prepare(a.backend)?,
        clean_output: a.clean_output,
        backend: a.backend,
        image: a.image.clone(),
    };
    let mut tool = SandboxMachine::start(&opts)?;
    let mut engine = engine_for(&a.gen)?;
    let mut view = open_view(
        &a.gen,
        &engine,
        Protocol::Os,
        os_initial_history(&a.task),
        serde_json::json!({"task": a.task, "model": a.gen.model.model}),
        &[],
    )?;
    let (format, template) = (engine.config().format.clone(), engine.config().template.clone());
    let mut model = RecordingModel::new(&mut engine);
    let run = edgeact_agent::run_os(&mut model, &mut tool, &a.task, LoopLimits::default(), &mut |ev| {
        view.on_event(ev)
    })?;
    let final_prompt = model.last_prompt(&format, &template);
    finish(&run, &mut view, final_prompt, serde_json::Value::Null)
}

fn run_db_task(a: DbArgs) -> anyhow::Result<ExitCode> {
    let text = edgeact_runtime::files::read_regular_text(&a.table, edgeact_agent::tasks::MAX_TASK_FILE_BYTES)
        .with_context(|| format!("reading {}", a.table.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", a.table.display()))?;
    let table = match json.get("table") {
        Some(t) => t.clone(),
        None => json,
    };
    if table.get("table_name").is_none() {
        bail!(
            "{}: no `table_name` (expected a table or a dbbench task)",
            a.table.display()
        );
    }
    let add = a
        .add_description
        .clone()
        .unwrap_or_else(|| default_add_description(&table));
    let mut tool = SqlTool::new(&SqlEngine::from_flag(a.mysql.as_deref()), &table)?;
    if let Some(problem) = tool.table_problem() {
        eprintln!("warning: MySQL refuses this table ({problem}); as in AgentBench, the task runs without it");
    }
    let mut engine = engine_for(&a.gen)?;
    let mut view = open_view(
        &a.gen,
        &engine,
        Protocol::Db,
        db_initial_history(&a.question, &add),
        serde_json::json!({"question": a.question, "add_description": add, "model": a.gen.model.model}),
        &[&a.table],
    )?;
    let (format, template) = (engine.config().format.clone(), engine.config().template.clone());
    let mut model = RecordingModel::new(&mut engine);
    let run = run_db(
        &mut model as &mut dyn LanguageModel,
        &mut tool as &mut dyn Tool,
        &a.question,
        &add,
        LoopLimits::default(),
        &mut |ev| view.on_event(ev),
    )?;
    let final_prompt = model.last_prompt(&format, &template);
    finish(&run, &mut view, final_prompt, serde_json::Value::Null)
}

/// The engine's stop code (as transcripts record it) in words for the terminal.
fn stop_in_words(code: &str) -> &str {
    match code {
        "eos" => "end of turn",
        "max_tokens" => "token limit",
        "action_end" => "end of the action",
        "context_full" => "context full",
        "no_candidates" => "no token left to sample",
        other => other,
    }
}

/// `--backend`: the machine's isolation, with its possible values listed in `--help`.
pub fn backend_parser() -> impl clap::builder::TypedValueParser<Value = Backend> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Backend::NAMES).try_map(|s| s.parse::<Backend>())
}

const DIM: &str = "2";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const CYAN: &str = "36";

/// `text` in the ANSI style `sgr` where stderr is a terminal and `NO_COLOR` is unset (a log
/// file or a pipe gets plain text).
fn paint(sgr: &str, text: &str) -> String {
    static COLOUR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let colour = *COLOUR.get_or_init(|| {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    });
    if colour {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}
