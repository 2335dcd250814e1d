//! Chat templates against reference renderings (`tests/fixtures/chat/chat_fixtures.json`, made
//! by `scripts/make-chat-fixtures.py` with transformers' `apply_chat_template` and FastChat
//! 0.2.31), compared byte for byte.

use edgeact_runtime::chat::{encode_prompt, ChatError, ChatTemplate, Message, AGENTLM_SYSTEM_PROMPT};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::Tokenizer;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/chat/chat_fixtures.json");
const LLAMA_VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/models/llama2-tokenizer/ggml-vocab-llama-spm.gguf"
);
const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn fixtures() -> Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURES).expect("read chat fixtures")).expect("parse chat fixtures")
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn jinja(fx: &Value, name: &str) -> ChatTemplate {
    let t = &fx["templates"][name];
    ChatTemplate::from_jinja(
        t["source"].as_str().unwrap(),
        t["bos_token"].as_str().unwrap(),
        t["eos_token"].as_str().unwrap(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn chat_templates_match_references() {
    let fx = fixtures();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 28);
    let mut failures = Vec::new();
    for case in cases {
        let template = case["template"].as_str().unwrap();
        let conversation = case["conversation"].as_str().unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let want = case["text"].as_str().unwrap();
        let chat = match template {
            "smollm2" | "llama2-hf" => jinja(&fx, template),
            "fastchat-eval" => ChatTemplate::named("eval").unwrap(),
            "fastchat-agent" => ChatTemplate::named("agent").unwrap(),
            other => panic!("unknown template {other}"),
        };
        let got = chat
            .render(&messages(&fx["conversations"][conversation]), gen)
            .unwrap_or_else(|e| panic!("{template}/{conversation}: {e}"));
        if got != want {
            failures.push(format!(
                "{template}/{conversation}/gen={gen}:\n got  {got:?}\n want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn chat_llama2_builtin_format() {
    let chat = ChatTemplate::llama2();
    let msgs = [
        Message::system("SYS"),
        Message::user("u1"),
        Message::new("agent", "a1"),
        Message::user("u2"),
    ];
    assert_eq!(
        chat.render(&msgs, true).unwrap(),
        "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nu1 [/INST] a1 </s><s>[INST] u2 [/INST]"
    );
    let agent = ChatTemplate::llama2_with_system(AGENTLM_SYSTEM_PROMPT);
    assert!(agent.render(&msgs[1..2], true).unwrap().starts_with(&format!(
        "[INST] <<SYS>>\n{AGENTLM_SYSTEM_PROMPT}\n<</SYS>>\n\nu1 [/INST]"
    )));
    assert!(chat.source().is_none());
}

#[test]
fn chat_template_errors_are_clear() {
    // Roles out of order.
    let bad = [Message::user("a"), Message::user("b")];
    let err = ChatTemplate::llama2().render(&bad, true).unwrap_err();
    assert!(matches!(err, ChatError::Conversation(_)), "{err}");
    let fx = fixtures();
    let err = jinja(&fx, "llama2-hf").render(&bad, true).unwrap_err();
    assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    // A template that does not parse.
    let err = ChatTemplate::from_jinja("{% for m in messages %}", "", "")
        .err()
        .expect("syntax error");
    assert!(matches!(err, ChatError::Syntax(_)), "{err}");
    assert!(matches!(ChatTemplate::named("nope"), Err(ChatError::UnknownName(_))));
}

#[test]
fn chat_template_from_gguf() {
    // The Llama-2 vocab has no template: the built-in FastChat format is used.
    let file = GgufFile::open(LLAMA_VOCAB).expect("open llama vocab");
    let chat = ChatTemplate::from_gguf(&file).unwrap();
    assert!(chat.source().is_none());
    let text = chat
        .render(
            &[Message::user("hi"), Message::assistant("yo"), Message::user("ls")],
            true,
        )
        .unwrap();
    assert_eq!(text, "[INST] hi [/INST] yo </s><s>[INST] ls [/INST]");
    // Rendered prompts go through the tokenizer with special parsing: `</s><s>` → EOS, BOS.
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let ids = tok.encode(&text, true, true);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
    assert_eq!(encode_prompt(&tok, &text), ids);
    // Meta's HF template writes `<s>` itself: the same ids, with no doubled BOS.
    let fx = fixtures();
    let hf = jinja(&fx, "llama2-hf")
        .render(
            &[Message::user("hi"), Message::assistant("yo"), Message::user("ls")],
            true,
        )
        .unwrap();
    assert!(hf.starts_with("<s>[INST]"));
    assert_eq!(encode_prompt(&tok, &hf), ids);

    if !std::path::Path::new(SMOLLM2).exists() {
        eprintln!("skipping the SmolLM2 part: {SMOLLM2} is absent (run scripts/fetch-smollm2.sh)");
        return;
    }
    let file = GgufFile::open(SMOLLM2).expect("open SmolLM2");
    let chat = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(chat.source(), fx["templates"]["smollm2"]["source"].as_str());
    let want = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["template"] == "smollm2" && c["conversation"] == "single" && c["add_generation_prompt"] == true)
        .unwrap();
    let got = chat.render(&messages(&fx["conversations"]["single"]), true).unwrap();
    assert_eq!(got, want["text"].as_str().unwrap());
}

/// Jinja features HF templates rely on, against the output of Python's Jinja2 configured as
/// transformers does (sandboxed, trim_blocks, lstrip_blocks, loopcontrols).
#[test]
fn chat_jinja_features_match_jinja2() {
    let src = "{% set ns = namespace(n=0) %}\n{% for m in messages %}\n  {% if m['role'] == 'system' %}\
               {% continue %}{% endif %}\n  {% if loop.index > 3 %}{% break %}{% endif %}\n  \
               {% set ns.n = ns.n + 1 %}\n[{{ loop.index0 }}:{{ m['role'] | upper }}:{{ m['content'].strip() }}]\n\
               {% endfor %}\n{{ ns.n }}|{{ messages | length }}|{{ messages[-1]['content'] | trim }}|\
               {{ 'a,b'.split(',') | join('+') }}|{{ bos_token ~ eos_token }}\n\
               {% if add_generation_prompt %}GEN{% endif %}\n";
    let chat = ChatTemplate::from_jinja(src, "<s>", "</s>").unwrap();
    let msgs = [
        Message::system("S"),
        Message::user(" u1 "),
        Message::assistant("a1\n"),
        Message::user("u2"),
        Message::assistant("a2"),
    ];
    assert_eq!(
        chat.render(&msgs, true).unwrap(),
        "[1:USER:u1]\n[2:ASSISTANT:a1]\n2|5|a2|a+b|<s></s>\nGEN"
    );
}
