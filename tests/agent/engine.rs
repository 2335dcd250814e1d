//! The engine-backed agent model on a real (tiny) Llama model, stories260K (vocab 512,
//! context 512): KV-cache prefix reuse across turns, and the parse-failure rate of
//! unconstrained vs protocol-constrained decoding on the AgentBench dev tasks' first turns, and
//! the prompt formats (`--chat-template auto|llama2|gguf`) with the prefill counter per turn
//! under a ChatML template (stories260K, and SmolLM2 when fetched).
//!
//! The model writes children's stories, not agent replies, so its outputs are "random" with
//! respect to the protocol: that is what the constrained decoder must repair. Figures are
//! printed (run with `--nocapture`) for the README.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use edgeact_agent::prompt::PromptFormatError;
use edgeact_agent::render::{db_initial_history, os_initial_history, render_llama2};
use edgeact_agent::tasks::load_db_tasks;
use edgeact_agent::{
    parse_db, parse_os, run_db, ChatTemplate, DbAction, EngineConfig, EngineModel, FormatChoice, LanguageModel,
    LoopLimits, Message, ModelReply, ModelRequest, PromptFormat, Protocol, Tool,
};
use edgeact_runtime::gguf::{GgufFile, Value as GgufValue};
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use edgeact_runtime::py::{self, PyValue};
use edgeact_runtime::tokenizer::Tokenizer;
use edgeact_tools::os::OsTask;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn shared() -> PathBuf {
    PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into()),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name)
}

fn load() -> (Arc<LlamaModel>, Arc<Tokenizer>) {
    let path = shared().join("models/stories260K/stories260K-f32-v3.gguf");
    let file = Arc::new(GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = LlamaModel::load(file).unwrap();
    (Arc::new(model), Arc::new(tok))
}

fn engine(m: &(Arc<LlamaModel>, Arc<Tokenizer>), cfg: EngineConfig) -> EngineModel {
    let opts = SessionOptions {
        n_ctx: 512,
        threads: 1,
        ..Default::default()
    };
    EngineModel::new(Session::new(Arc::clone(&m.0), opts).unwrap(), Arc::clone(&m.1), cfg).unwrap()
}

fn greedy(reuse: bool, max_new: usize) -> EngineConfig {
    let mut c = EngineConfig::eval(0);
    c.sampler.temperature = 0.0;
    c.reuse_prefix = reuse;
    c.max_new_tokens = max_new;
    c
}

/// Calls the engine (so it prefills and generates as usual) but hands back a fixed reply:
/// a scripted trajectory with real prompt processing.
struct Forced {
    inner: EngineModel,
    replies: Vec<String>,
    prefilled: Vec<usize>,
    prompt: Vec<usize>,
}

impl LanguageModel for Forced {
    fn reply(&mut self, req: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        let mut r = self.inner.reply(req)?;
        self.prefilled.push(r.stats.prefilled_tokens);
        self.prompt.push(r.stats.prompt_tokens);
        r.text = self.replies.remove(0);
        Ok(r)
    }
}

struct Echo;
impl Tool for Echo {
    fn execute(&mut self, sql: &str) -> anyhow::Result<String> {
        Ok(format!("[('{}',)]", sql.len()))
    }
}

#[test]
fn prefix_reuse_prefills_only_the_new_turn() {
    let m = load();
    let mut per_mode = Vec::new();
    for reuse in [true, false] {
        let mut e = engine(&m, greedy(reuse, 24));
        let mut msgs = vec![Message::user("Tell me a story about a cat.")];
        let mut prefilled = Vec::new();
        let mut texts = Vec::new();
        for turn in 0..5 {
            let r = e
                .reply(&ModelRequest {
                    messages: &msgs,
                    protocol: Protocol::Db,
                })
                .unwrap();
            assert!(r.stats.generated_tokens > 0);
            assert_eq!(r.stats.truncated_tokens, 0);
            prefilled.push((r.stats.prefilled_tokens, r.stats.prompt_tokens));
            msgs.push(Message::agent(r.text.clone()));
            msgs.push(Message::user(format!("And then what happened on day {turn}?")));
            texts.push(r.text);
        }
        eprintln!("reuse={reuse}: (prefilled, prompt) per turn = {prefilled:?}");
        per_mode.push((prefilled, texts));
    }
    let (with, texts_with) = &per_mode[0];
    let (without, texts_without) = &per_mode[1];
    // Same prompts either way; without reuse everything is prefilled every turn.
    for (a, b) in with.iter().zip(without) {
        assert_eq!(a.1, b.1);
        assert_eq!(b.0, b.1);
    }
    // With reuse, each turn reuses at least the whole previous prompt: only the previous
    // reply (whose sampled tokens need not be the canonical tokenization of its text) and
    // the new user turn are prefilled.
    for w in with.windows(2) {
        let ((_, prev_prompt), (pre, prompt)) = (w[0], w[1]);
        assert!(
            pre <= prompt - prev_prompt,
            "prefilled {pre} of {prompt} (previous prompt {prev_prompt})"
        );
    }
    let total_with: usize = with.iter().map(|x| x.0).sum();
    let total_without: usize = without.iter().map(|x| x.0).sum();
    eprintln!("5 turns: {total_with} tokens prefilled with reuse, {total_without} without");
    assert_eq!(texts_with[0], texts_without[0]);
    let same = texts_with.iter().zip(texts_without).filter(|(a, b)| a == b).count();
    eprintln!("greedy replies identical with and without reuse: {same}/5");
}

#[test]
fn scripted_db_task_prefill_with_and_without_reuse() {
    let m = load();
    let table = "The name of this table is Olympic Medals, and the headers of this table are Nation,Gold,Silver.";
    let replies: Vec<String> = (0..4)
        .map(|i| format!("Action: Operation\n```sql\nSELECT Gold FROM `Olympic Medals` LIMIT {i};\n```"))
        .chain(["Action: Answer\nFinal Answer: [\"16\"]".to_string()])
        .collect();
    let mut totals = Vec::new();
    for reuse in [true, false] {
        // 32 new tokens leave 480 prompt tokens of the 512 context: the DB prompt fits, as
        // it does in AgentLM's 4096 context.
        let mut f = Forced {
            inner: engine(&m, greedy(reuse, 32)),
            replies: replies.clone(),
            prefilled: Vec::new(),
            prompt: Vec::new(),
        };
        let run = run_db(
            &mut f,
            &mut Echo,
            "How many gold medals did Norway win?",
            table,
            LoopLimits::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(run.answer.as_deref(), Some(" [\"16\"]"));
        assert_eq!(f.prefilled.len(), 5);
        eprintln!(
            "DB 5 turns, reuse={reuse}: prompt {:?}, prefilled {:?}",
            f.prompt, f.prefilled
        );
        totals.push((f.prefilled.iter().sum::<usize>(), f.prompt.clone()));
    }
    let truncated = totals[0].1.iter().any(|&p| p >= 480);
    eprintln!(
        "DB 5 turns: {} tokens prefilled with reuse, {} without{}",
        totals[0].0,
        totals[1].0,
        if truncated {
            " (prompt left-truncated: reuse limited)"
        } else {
            ""
        }
    );
    if !truncated {
        assert!(totals[0].0 * 2 < totals[1].0);
    }
}

/// First replies of dev tasks (every third, to keep the suite fast; set
/// `EDGEACT_AGENT_ALL_TASKS=1` for all 86), sampled at T = 1, without and with the constraint.
#[test]
fn constrained_decoding_removes_parse_failures() {
    let m = load();
    let os = OsTask::load_all(
        &fixture("os_interaction/data/dev.json"),
        &fixture("os_interaction/scripts/dev"),
    )
    .unwrap();
    let db = load_db_tasks(&fixture("dbbench_dev.jsonl")).unwrap();
    let mut prompts: Vec<(Protocol, Vec<Message>)> = Vec::new();
    prompts.extend(os.iter().map(|t| (Protocol::Os, os_initial_history(&t.description))));
    prompts.extend(
        db.iter()
            .map(|t| (Protocol::Db, db_initial_history(&t.description, &t.add_description))),
    );
    if std::env::var_os("EDGEACT_AGENT_ALL_TASKS").is_none() {
        prompts = prompts.into_iter().step_by(3).collect();
    }
    let (n_os, n_db) = (
        prompts.iter().filter(|p| p.0 == Protocol::Os).count(),
        prompts.iter().filter(|p| p.0 == Protocol::Db).count(),
    );
    for constrained in [false, true] {
        let mut cfg = EngineConfig::eval(7);
        cfg.sampler.temperature = 1.0;
        cfg.constrained = constrained;
        let mut e = engine(&m, cfg);
        let (mut os_fail, mut db_fail, mut db_answers) = (0, 0, 0);
        for (p, msgs) in &prompts {
            let r = e
                .reply(&ModelRequest {
                    messages: msgs,
                    protocol: *p,
                })
                .unwrap();
            let ok = match p {
                Protocol::Os => parse_os(&r.text).action.is_some(),
                Protocol::Db => match parse_db(&r.text) {
                    DbAction::Operation(_) => true,
                    // A constrained answer must also be one the judge can evaluate: a list
                    // literal (issue #12: `[::::]A]` parsed but could never be judged).
                    DbAction::Answer(a) => {
                        db_answers += 1;
                        !constrained || matches!(py::eval(&a), Ok(PyValue::List(_)))
                    }
                    _ => false,
                },
            };
            if !ok {
                if *p == Protocol::Os {
                    os_fail += 1;
                } else {
                    db_fail += 1;
                }
            }
        }
        eprintln!(
            "constrained={constrained}: parse failures OS {os_fail}/{n_os}, DB {db_fail}/{n_db} \
             ({db_answers} DB final answers)"
        );
        if constrained {
            assert_eq!((os_fail, db_fail), (0, 0));
        } else {
            // The story model almost never writes an action by itself.
            assert!(os_fail + db_fail > prompts.len() / 2);
        }
    }
}

/// A Jinja chat template from the chat fixture (`smollm2` = ChatML, `llama2-hf` = Meta's
/// Llama-2-chat template).
fn fixture_template(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/chat_fixtures.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fx["templates"][name]["source"].as_str().unwrap().to_string()
}

/// A metadata-only GGUF image holding `template` as `tokenizer.chat_template`.
fn gguf_with_template(template: Option<&str>) -> GgufFile {
    let mut w = edgeact_quantize::GgufWriter::new();
    w.set("general.architecture", GgufValue::String("llama".into()))
        .unwrap();
    if let Some(t) = template {
        w.set("tokenizer.chat_template", GgufValue::String(t.into())).unwrap();
    }
    let bytes = w.write_to_vec(|_, _, _| Ok::<(), std::io::Error>(())).unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

#[test]
fn auto_prompt_format_keeps_llama2_for_agentlm_files_and_uses_other_templates() {
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        // AgentLM GGUFs converted by llama.cpp's old scripts carry no template.
        ("no template", None, "llama2"),
        // What `edgeact quantize` writes when the checkpoint has none (AgentLM's case).
        (
            "edgeact's Llama-2 template",
            Some(edgeact_quantize::vocab::LLAMA2_CHAT_TEMPLATE.to_string()),
            "llama2",
        ),
        (
            "Meta's Llama-2-chat template",
            Some(fixture_template("llama2-hf")),
            "llama2",
        ),
        ("SmolLM2's ChatML", Some(fixture_template("smollm2")), "gguf"),
    ];
    for (what, template, auto) in cases {
        let file = gguf_with_template(template.as_deref());
        let resolved = |c| PromptFormat::resolve(c, &file).map(|f| f.name());
        assert_eq!(resolved(FormatChoice::Auto).unwrap(), auto, "{what}");
        assert_eq!(resolved(FormatChoice::Llama2).unwrap(), "llama2", "{what}");
        match template {
            Some(_) => assert_eq!(resolved(FormatChoice::Gguf).unwrap(), "gguf", "{what}"),
            None => assert!(matches!(
                PromptFormat::resolve(FormatChoice::Gguf, &file),
                Err(PromptFormatError::NoTemplate)
            )),
        }
    }
    // A template that does not compile is an error, not a silent fallback.
    let broken = gguf_with_template(Some("{% for m in messages %}"));
    assert!(PromptFormat::resolve(FormatChoice::Auto, &broken).is_err());
    // The AgentBench rendering is untouched under `auto` for Llama-2-style files.
    let msgs = os_initial_history("count files");
    let f = PromptFormat::resolve(
        FormatChoice::Auto,
        &gguf_with_template(Some(&fixture_template("llama2-hf"))),
    )
    .unwrap();
    assert_eq!(
        f.render(&msgs, &ChatTemplate::Eval).unwrap(),
        render_llama2(&msgs, &ChatTemplate::Eval)
    );
}

/// Per turn: (prompt tokens, prefilled tokens, generated tokens).
type TurnCounts = Vec<(usize, usize, usize)>;

/// Four turns with fixed replies through the engine in `format`, starting from `first`:
/// returns per turn (prompt tokens, prefilled tokens, generated tokens) and the prompts'
/// token ids (rendered and encoded independently of the engine).
fn forced_turns(
    m: &(Arc<LlamaModel>, Arc<Tokenizer>),
    format: &PromptFormat,
    reuse: bool,
    n_ctx: usize,
    first: Vec<Message>,
) -> (TurnCounts, Vec<Vec<u32>>) {
    let mut cfg = greedy(reuse, 8);
    cfg.format = format.clone();
    let opts = SessionOptions {
        n_ctx,
        threads: 1,
        ..Default::default()
    };
    let mut e = EngineModel::new(Session::new(Arc::clone(&m.0), opts).unwrap(), Arc::clone(&m.1), cfg).unwrap();
    let mut msgs = first;
    let (mut turns, mut prompts) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let prompt = format.render(&msgs, &ChatTemplate::Eval).unwrap();
        prompts.push(format.encode(&m.1, &prompt));
        let req = ModelRequest {
            messages: &msgs,
            protocol: Protocol::Db,
        };
        let s = e.reply(&req).unwrap().stats;
        assert_eq!(s.truncated_tokens, 0, "the test conversation must fit the context");
        turns.push((s.prompt_tokens, s.prefilled_tokens, s.generated_tokens));
        msgs.push(Message::agent(format!(
            "Action: Operation\n```sql\nSELECT Gold FROM `Olympic Medals` LIMIT {i};\n```"
        )));
        msgs.push(Message::user(format!("[('{i}',)]")));
    }
    (turns, prompts)
}

/// Checks the prefill counter of every turn of a forced episode with and without reuse.
fn check_prefill_per_turn(
    m: &(Arc<LlamaModel>, Arc<Tokenizer>),
    format: &PromptFormat,
    n_ctx: usize,
    first: Vec<Message>,
    compare_without_reuse: bool,
) {
    let (with, prompts) = forced_turns(m, format, true, n_ctx, first.clone());
    eprintln!(
        "{}: (prompt, prefilled, generated) per turn with reuse {with:?}",
        format.name()
    );
    assert_eq!(with.len(), 4);
    assert_eq!(with[0].1, with[0].0, "nothing cached before the first turn");
    for k in 1..with.len() {
        // The template renders earlier turns the same way when turns are added ...
        assert_eq!(prompts[k][..prompts[k - 1].len()], prompts[k - 1][..], "turn {k}");
        // ... so the whole previous prompt comes from the cache; the cache also holds the
        // tokens the model generated, of which only a leading run can match the forced reply.
        let (prompt, prefilled, _) = with[k];
        let (prev_prompt, _, prev_generated) = with[k - 1];
        let new = prompt - prev_prompt;
        assert!(
            prefilled <= new && prefilled + prev_generated >= new,
            "turn {k}: prefilled {prefilled}, new tokens {new}, previous reply generated {prev_generated}"
        );
    }
    let total_with: usize = with.iter().map(|t| t.1).sum();
    let total_prompt: usize = with.iter().map(|t| t.0).sum();
    eprintln!(
        "{}: 4 turns prefill {total_with} tokens with reuse, {total_prompt} without",
        format.name()
    );
    if compare_without_reuse {
        let (without, _) = forced_turns(m, format, false, n_ctx, first);
        for (a, b) in with.iter().zip(&without) {
            assert_eq!(a.0, b.0, "same prompt either way");
            assert_eq!(b.1, b.0, "without reuse everything is prefilled");
        }
    }
}

#[test]
fn chatml_template_reuses_the_cache_across_turns() {
    let m = load();
    let chatml = edgeact_runtime::chat::ChatTemplate::from_jinja(&fixture_template("smollm2"), "<s>", "</s>").unwrap();
    let first = vec![Message::user("Tell me a story about a cat.")];
    check_prefill_per_turn(&m, &PromptFormat::Jinja(Arc::new(chatml)), 512, first, true);
}

/// SmolLM2-135M-Instruct (ChatML, its own special tokens): `auto` picks its template and the
/// cache is reused turn by turn. Skips when `scripts/fetch-smollm2.sh` has not been run.
#[test]
fn smollm2_auto_format_is_chatml_with_prefix_reuse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipping: {} is absent (run scripts/fetch-smollm2.sh)", path.display());
        return;
    }
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let format = PromptFormat::resolve(FormatChoice::Auto, &file).unwrap();
    assert_eq!(format.name(), "gguf");
    let tok = Arc::new(Tokenizer::from_gguf(&file).unwrap());
    let prompt = format
        .render(
            &db_initial_history("Q?", "The name of this table is t."),
            &ChatTemplate::Eval,
        )
        .unwrap();
    assert!(prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"), "{prompt:?}");
    let ids = format.encode(&tok, &prompt);
    let im_start = tok.encode("<|im_start|>", false, true);
    assert_eq!(im_start.len(), 1, "<|im_start|> is one special token");
    assert_eq!(ids[0], im_start[0]);
    let model = Arc::new(LlamaModel::load(file).unwrap());
    let first = db_initial_history(
        "How many gold medals did Norway win?",
        "The name of this table is Olympic Medals, and the headers of this table are Nation,Gold,Silver.",
    );
    // The run without reuse is checked on stories260K; here it would only cost time.
    check_prefill_per_turn(&(model, tok), &format, 1024, first, false);
}
