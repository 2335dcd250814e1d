//! The engine-backed agent model on a real (tiny) Llama model, stories260K (vocab 512,
//! context 512): KV-cache prefix reuse across turns, and the parse-failure rate of
//! unconstrained vs protocol-constrained decoding on the AgentBench dev tasks' first turns.
//!
//! The model writes children's stories, not agent replies, so its outputs are "random" with
//! respect to the protocol: that is what the constrained decoder must repair. Figures are
//! printed (run with `--nocapture`) for the README.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use edgeact_runtime::agent::render::{db_initial_history, os_initial_history};
use edgeact_runtime::agent::tasks::{load_db_tasks, load_os_tasks};
use edgeact_runtime::agent::{
    parse_db, parse_os, run_db, DbAction, EngineConfig, EngineModel, LanguageModel, LoopLimits, Message, ModelReply,
    ModelRequest, Protocol, Tool,
};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use edgeact_runtime::tokenizer::Tokenizer;
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
    let os = load_os_tasks(
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
        let (mut os_fail, mut db_fail) = (0, 0);
        for (p, msgs) in &prompts {
            let r = e
                .reply(&ModelRequest {
                    messages: msgs,
                    protocol: *p,
                })
                .unwrap();
            let ok = match p {
                Protocol::Os => parse_os(&r.text).action.is_some(),
                Protocol::Db => matches!(parse_db(&r.text), DbAction::Operation(_) | DbAction::Answer(_)),
            };
            if !ok {
                if *p == Protocol::Os {
                    os_fail += 1;
                } else {
                    db_fail += 1;
                }
            }
        }
        eprintln!("constrained={constrained}: parse failures OS {os_fail}/{n_os}, DB {db_fail}/{n_db}");
        if constrained {
            assert_eq!((os_fail, db_fail), (0, 0));
        } else {
            // The story model almost never writes an action by itself.
            assert!(os_fail + db_fail > prompts.len() / 2);
        }
    }
}
