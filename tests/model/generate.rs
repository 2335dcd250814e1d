//! End-to-end generation on the real stories260K model: tokenizer + session + sampler +
//! generate loop, checked against llama2.c's own expected 200-step greedy text.

use edgeact_runtime::generate::{generate, GenerateOptions, StopReason};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::path::PathBuf;
use std::sync::Arc;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel)
}

struct Fixture {
    tok: Tokenizer,
    model: Arc<LlamaModel>,
    golden: serde_json::Value,
}

fn fixture() -> Fixture {
    let file = Arc::new(GgufFile::open(shared("models/stories260K/stories260K-f32-v3.gguf")).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Arc::new(LlamaModel::load(file).unwrap());
    let golden =
        serde_json::from_str(&std::fs::read_to_string(shared("models/stories260K/golden.json")).unwrap()).unwrap();
    Fixture { tok, model, golden }
}

/// llama2.c's expected text for 200 greedy steps from BOS: 200 sampled tokens, printed with the
/// first token's leading space dropped. (199 tokens end one word short: "... her mom, so".)
#[test]
fn greedy_200_steps_reproduces_llama2c_text() {
    let f = fixture();
    let expected = f.golden["expected_text_200_steps"].as_str().unwrap();
    let mut session = Session::new(f.model.clone(), SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    let mut decoder = StreamDecoder::new(&f.tok);
    let opts = GenerateOptions {
        max_tokens: 200,
        stop_tokens: f.tok.eos_id().into_iter().collect(),
        stop_strings: vec![],
    };
    let prompt = f.tok.encode("", true, false);
    assert_eq!(prompt, [1]);
    let mut streamed = String::new();
    let g = generate(&mut session, &mut sampler, &mut decoder, &prompt, &opts, &mut |s| {
        streamed.push_str(s)
    })
    .unwrap();
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(g.stop.to_string(), "token limit");
    assert_eq!(StopReason::StopToken(2).to_string(), "end of turn");
    assert_eq!(
        StopReason::StopString("\n\n".into()).to_string(),
        r#"stop string "\n\n""#
    );
    assert_eq!(g.n_generated, 200);
    let first20: Vec<u32> = f.golden["first_20_generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(&g.tokens[..20], &first20[..]);
    assert_eq!(g.text, expected);
    assert_eq!(streamed, expected);
    // The session holds the prompt and every sampled token but the last.
    assert_eq!(session.tokens().len(), 1 + 199);
}

/// A stop string ends generation before it and never reaches the stream; the next call with a
/// longer prompt reuses the cached prefix.
#[test]
fn stop_string_and_prefix_reuse() {
    let f = fixture();
    let expected = f.golden["expected_text_200_steps"].as_str().unwrap();
    let mut session = Session::new(f.model.clone(), SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    let opts = GenerateOptions {
        max_tokens: 199,
        stop_tokens: vec![],
        stop_strings: vec!["red ball".into()],
    };
    let mut streamed = String::new();
    let mut decoder = StreamDecoder::new(&f.tok);
    let g = generate(&mut session, &mut sampler, &mut decoder, &[1], &opts, &mut |s| {
        streamed.push_str(s)
    })
    .unwrap();
    let cut = expected.find("red ball").unwrap();
    assert_eq!(g.stop, StopReason::StopString("red ball".into()));
    assert_eq!(g.text, &expected[..cut]);
    assert_eq!(streamed, g.text);

    // Continue from the whole history: only the tokens not yet cached are evaluated.
    let mut prompt = vec![1];
    prompt.extend(&g.tokens);
    let cached = session.tokens().len();
    let opts = GenerateOptions {
        max_tokens: 5,
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    let mut decoder = StreamDecoder::after_prompt(&f.tok);
    let g2 = generate(&mut session, &mut sampler, &mut decoder, &prompt, &opts, &mut |_| {}).unwrap();
    assert_eq!(g2.n_prompt_evaluated, prompt.len() - cached);
    let mut all = g.tokens.clone();
    all.extend(&g2.tokens);
    let mut fresh = Session::new(f.model.clone(), SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    let mut decoder = StreamDecoder::new(&f.tok);
    let opts = GenerateOptions {
        max_tokens: all.len(),
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    let g3 = generate(&mut fresh, &mut sampler, &mut decoder, &[1], &opts, &mut |_| {}).unwrap();
    assert_eq!(g3.tokens, all);
}

#[test]
fn context_full_stops_generation() {
    let f = fixture();
    let opts = SessionOptions {
        n_ctx: 10,
        ..Default::default()
    };
    let mut session = Session::new(f.model.clone(), opts).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    let mut decoder = StreamDecoder::new(&f.tok);
    let opts = GenerateOptions {
        max_tokens: 100,
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    let g = generate(&mut session, &mut sampler, &mut decoder, &[1], &opts, &mut |_| {}).unwrap();
    assert_eq!(g.stop, StopReason::ContextFull);
    // 10 positions: BOS + 9 evaluated samples, and one more sampled from the last logits.
    assert_eq!(g.n_generated, 10);
}
