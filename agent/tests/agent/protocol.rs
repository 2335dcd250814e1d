//! The agent's protocol layer against reference data: protocol texts byte-identical to the
//! AgentBench extraction, prompts identical to an independent FastChat/AgentBench emulation
//! (`scripts/make-agent-prompt-fixtures.py`), parsers identical to AgentBench's Python regexes
//! on a corpus (`scripts/make-agent-parse-corpus.py`), the ReAct loops' control flow with
//! scripted models and fake tools, and the judges on the dev sets.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use edgeact_agent::judge::{judge_db_answer, judge_os_match};
use edgeact_agent::protocol_text as text;
use edgeact_agent::react::ParsedAction;
use edgeact_agent::render::{os_initial_history, render_llama2};
use edgeact_agent::tasks::{load_db_tasks, MatchSpec};
use edgeact_agent::{
    parse_db, parse_os, run_db, run_os, ChatTemplate, DbAction, LoopLimits, Message, OsAction, Role, ScriptedModel,
    Status, Tool,
};
use edgeact_tools::os::task::{Evaluation, OsTask};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into()),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/agent")
        .join(name)
}

#[test]
fn protocol_texts_are_byte_identical_to_agentbench() {
    let dir = shared().join("agentbench/protocol");
    for (name, ours) in [
        ("os_instruction.txt", text::OS_INSTRUCTION),
        ("db_instruction.txt", text::DB_INSTRUCTION),
        ("os_one_shot.json", text::OS_ONE_SHOT_JSON),
    ] {
        let reference = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.as_bytes(), &reference[..], "{name} differs");
    }
    // Hand-checked landmarks, independent of the reference files.
    assert!(text::OS_INSTRUCTION.starts_with(
        "You are an assistant that will act like a person, I'will play the role of linux(ubuntu) operating system."
    ));
    assert!(text::OS_INSTRUCTION
        .ends_with("Once again, you should take only exact one of the three actions in each turn.\n\n"));
    assert!(text::DB_INSTRUCTION
        .starts_with("\nI will ask you a question, then you should help me operate a MySQL database"));
    assert!(text::DB_INSTRUCTION
        .ends_with("Your input will be raw MySQL response, you have to deal with it by yourself.\n"));
    assert_eq!(
        text::OS_NEW_PROBLEM_PREFIX,
        "Now, I will start a new problem in a new OS. My problem is:\n\n"
    );
}

#[test]
fn prompts_match_the_fastchat_emulation() {
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(fixture("prompts.json")).unwrap()).unwrap();
    for (name, case) in cases.as_object().unwrap() {
        let msgs: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: if i % 2 == 0 { Role::User } else { Role::Agent },
                content: m.as_str().unwrap().to_string(),
            })
            .collect();
        let template = match case["system"].as_str() {
            None => ChatTemplate::Eval,
            Some(s) if s == text::MODEL_CARD_SYSTEM_PROMPT => ChatTemplate::Agent,
            Some(s) => ChatTemplate::System(s.into()),
        };
        assert_eq!(
            render_llama2(&msgs, &template),
            case["prompt"].as_str().unwrap(),
            "{name}"
        );
    }
    // The OS history builder gives the same first prompt as the emulation.
    let first = &cases["os_first_eval"];
    let desc = "How many hidden files are in /home? (not including subdirectories)";
    assert_eq!(
        render_llama2(&os_initial_history(desc), &ChatTemplate::Eval),
        first["prompt"].as_str().unwrap()
    );
}

#[test]
fn hand_checked_two_turn_prompt() {
    let msgs = vec![
        Message::user("Q1"),
        Message::agent("Action: Operation\n```sql\nSELECT 1;\n```\n"),
        Message::user("[(1,)]"),
        Message::agent(" Action: Answer\nFinal Answer: [\"1\"]"),
        Message::user("next"),
    ];
    assert_eq!(
        render_llama2(&msgs, &ChatTemplate::Eval),
        "[INST] Q1 [/INST] Action: Operation\n```sql\nSELECT 1;\n``` </s><s>[INST] [(1,)] [/INST] \
         Action: Answer\nFinal Answer: [\"1\"] </s><s>[INST] next [/INST]"
    );
}

#[test]
fn parsers_match_agentbench_regexes_on_corpus() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("parse_corpus.json")).unwrap()).unwrap();
    assert!(cases.len() > 500);
    for c in &cases {
        let t = c["text"].as_str().unwrap();
        let os = parse_os(t);
        let e = &c["os"];
        assert_eq!(os.thought, e["thought"].as_str().unwrap(), "thought of {t:?}");
        let (action, content) = match &os.action {
            None => (Value::Null, Value::Null),
            Some(OsAction::Bash(code)) => ("bash".into(), code.clone().into()),
            Some(OsAction::Commit(a)) => ("commit".into(), a.clone().map_or(Value::Null, Value::from)),
        };
        assert_eq!(
            (action, content),
            (e["action"].clone(), e["content"].clone()),
            "OS action of {t:?}"
        );
        let db = parse_db(t);
        let e = &c["db"];
        let (kind, content) = match db {
            DbAction::Operation(s) => ("operation", Value::from(s)),
            DbAction::OperationWithoutSql => ("operation_without_sql", Value::Null),
            DbAction::Answer(a) => ("answer", Value::from(a)),
            DbAction::NoAnswer => ("no_answer", Value::Null),
        };
        assert_eq!(
            (kind, content),
            (e["kind"].as_str().unwrap(), e["content"].clone()),
            "DB action of {t:?}"
        );
    }
}

/// Returns canned outputs and records the inputs.
struct FakeTool {
    outputs: Vec<String>,
    inputs: Vec<String>,
}

impl Tool for FakeTool {
    fn execute(&mut self, input: &str) -> anyhow::Result<String> {
        self.inputs.push(input.to_string());
        Ok(if self.outputs.is_empty() {
            String::new()
        } else {
            self.outputs.remove(0)
        })
    }
}

fn fake(outputs: &[&str]) -> FakeTool {
    FakeTool {
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        inputs: Vec::new(),
    }
}

#[test]
fn os_loop_runs_bash_and_commits_answer() {
    let mut model = ScriptedModel::new([
        "Think: count\n\nAct: bash\n\n```bash\nls -a /home\n```\n```bash\nwc -l\n```",
        "Think: done\n\nAct: answer( 6 )",
    ]);
    let long = "x".repeat(900);
    let mut tool = fake(&[&long]);
    let mut events = 0;
    let run = run_os(&mut model, &mut tool, "How many?", LoopLimits::default(), &mut |_| {
        events += 1
    })
    .unwrap();
    assert_eq!(run.status, Status::Completed);
    assert_eq!(run.answer.as_deref(), Some(" 6 "));
    assert_eq!(tool.inputs, vec!["ls -a /home\n\nwc -l"]);
    assert_eq!(events, 3);
    let obs = format!(
        "The output of the OS:\n\n{}\n[truncated because the output is too long]",
        "x".repeat(780)
    );
    assert_eq!(run.steps[0].observation.as_deref(), Some(obs.as_str()));
    // The second call saw the first prompt's 7 messages + reply + observation.
    assert_eq!(model.requests[1].len(), 9);
    assert_eq!(model.requests[1][8].content, obs);
    assert!(matches!(&run.steps[1].action, ParsedAction::Os(p) if p.thought == "done"));
}

#[test]
fn os_loop_ends_on_invalid_action_and_round_limit() {
    let mut model = ScriptedModel::new(["I don't know."]);
    let run = run_os(&mut model, &mut fake(&[]), "t", LoopLimits::default(), &mut |_| {}).unwrap();
    assert_eq!(
        (run.status, run.answer.clone(), run.steps.len()),
        (Status::InvalidAction, None, 1)
    );

    let bash = "Act: bash\n\n```bash\ntrue\n```";
    let mut model = ScriptedModel::new(vec![bash; 9]);
    let mut tool = fake(&[]);
    let run = run_os(&mut model, &mut tool, "t", LoopLimits::default(), &mut |_| {}).unwrap();
    assert_eq!((run.status, run.answer.clone()), (Status::RoundLimit, None));
    assert_eq!((run.steps.len(), model.remaining()), (8, 1));
    assert_eq!(
        run.steps[0].observation.as_deref(),
        Some("The output of the OS is empty.")
    );
}

#[test]
fn db_loop_follows_dbbench() {
    let op = "Action: Operation\n```sql\nSELECT *\nFROM t;\n```";
    let mut model = ScriptedModel::new([op, "Action: Answer\nFinal Answer: [\"16\"]"]);
    let mut tool = fake(&[""]);
    let run = run_db(
        &mut model,
        &mut tool,
        "Q?",
        "The name of this table is t.",
        LoopLimits::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (run.status, run.answer.as_deref()),
        (Status::Completed, Some(" [\"16\"]"))
    );
    assert_eq!(tool.inputs, vec!["SELECT * FROM t;"]);
    // An empty result is injected as an empty user turn.
    assert_eq!(model.requests[1].last().unwrap().content, "");
    assert_eq!(model.requests[0][2].content, "Q?\nThe name of this table is t.");

    // 15 operations, then the 16th reply is searched for a final answer.
    let mut model = ScriptedModel::new(vec![op; 17]);
    let run = run_db(&mut model, &mut fake(&[]), "Q", "", LoopLimits::default(), &mut |_| {}).unwrap();
    assert_eq!(
        (run.status, run.steps.len(), model.remaining()),
        (Status::RoundLimit, 16, 1)
    );
    let both = "Action: Operation\n```sql\nSELECT 1;\n```\nFinal Answer: [1]";
    let mut model = ScriptedModel::new(vec![both; 16]);
    let run = run_db(&mut model, &mut fake(&[]), "Q", "", LoopLimits::default(), &mut |_| {}).unwrap();
    assert_eq!((run.status, run.answer.as_deref()), (Status::Completed, Some(" [1]")));

    let mut model = ScriptedModel::new(["Action: Operation\nSELECT 1;"]);
    let run = run_db(&mut model, &mut fake(&[]), "Q", "", LoopLimits::default(), &mut |_| {}).unwrap();
    assert_eq!((run.status, run.answer.as_deref()), (Status::InvalidAction, Some("")));
}

#[test]
fn db_dev_labels_judged_right_and_perturbed_wrong() {
    let tasks = load_db_tasks(&fixture("dbbench_dev.jsonl")).unwrap();
    assert_eq!(tasks.len(), 60);
    let mut judged = 0;
    for t in tasks.iter().filter(|t| !t.is_mutation()) {
        let labels: Vec<String> = t.label.iter().map(|v| v.as_str().unwrap().to_string()).collect();
        // As the model would write it: `Final Answer: ["…", …]` (leading space kept).
        let answer = format!(" {}", serde_json::to_string(&labels).unwrap());
        assert!(judge_db_answer(&answer, &t.label), "{answer}");
        let mut wrong = labels.clone();
        wrong[0].push_str(" (wrong)");
        assert!(!judge_db_answer(
            &format!(" {}", serde_json::to_string(&wrong).unwrap()),
            &t.label
        ));
        let mut short = labels.clone();
        short.push("extra".into());
        assert!(!judge_db_answer(&serde_json::to_string(&short).unwrap(), &t.label));
        judged += 1;
    }
    assert_eq!(judged, 20);
}

#[test]
fn os_dev_tasks_load_and_match_task_judges_expected_answer() {
    let dir = fixture("os_interaction");
    let tasks = OsTask::load_all(&dir.join("data/dev.json"), &dir.join("scripts/dev")).unwrap();
    assert_eq!(tasks.len(), 26);
    let mut matches = 0;
    for (i, t) in tasks.iter().enumerate() {
        match &t.evaluation {
            Evaluation::Match(m) => {
                // The dev set's match tasks are plain strings: exact answer, stripped.
                let m = MatchSpec {
                    answer: m.answer.clone(),
                    regex: m.regex.clone(),
                    strip: m.strip,
                };
                assert!(m.strip && m.regex.is_none(), "task {i}");
                let expected = m.answer.clone().unwrap();
                assert!(judge_os_match(Some(&format!(" {expected}\n")), &m).unwrap());
                assert!(!judge_os_match(Some("something else"), &m).unwrap());
                assert!(!judge_os_match(None, &m).unwrap());
                matches += 1;
            }
            Evaluation::Check { scripts, example } => {
                assert!(!scripts.is_empty());
                // Every `null` check entry has an example script to stand for it.
                if scripts.iter().any(Option::is_none) {
                    assert!(example.is_some(), "task {i}");
                }
            }
        }
    }
    assert_eq!(matches, 5);
    // File scripts were read from the script directory.
    let stock = &tasks[25];
    assert!(stock.init[0].code.contains("stock"), "{:?}", stock.init);
}

#[test]
fn llama2_tokenizer_reads_turn_separators_as_special_tokens() {
    let path = shared().join("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    let file = edgeact_runtime::gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = edgeact_runtime::tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let msgs = os_initial_history("How many files are in /etc?");
    let prompt = render_llama2(&msgs, &ChatTemplate::Eval);
    let ids = tok.encode(&prompt, true, true);
    assert_eq!(ids[0], 1, "BOS first");
    // Three agent turns of the one-shot example end with `</s><s>` = EOS, BOS.
    let pairs = ids.windows(2).filter(|w| w == &[2, 1]).count();
    assert_eq!(pairs, 3);
    assert!(tok.decode(&ids[ids.len() - 4..]).ends_with("[/INST]"));
    eprintln!("OS first prompt: {} Llama-2 tokens", ids.len());
    let db = edgeact_agent::render::db_initial_history("Q?", "The name of this table is t.");
    eprintln!(
        "DB first prompt: {} Llama-2 tokens",
        tok.encode(&render_llama2(&db, &ChatTemplate::Eval), true, true).len()
    );
}
