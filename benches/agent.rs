//! Costs of the agent layer that run once per generated token or per turn, on the real
//! Llama-2 vocabulary (32000 tokens): the constrained-decoding token mask in typical reply
//! states, prompt rendering + tokenization of a grown OS history, and history trimming.
//!
//! Run: `cargo bench --bench agent` (set `EDGEACT_SHARED` if the shared data is elsewhere).

use criterion::{criterion_group, criterion_main, Criterion};
use edgeact_agent::constrain::Constraint;
use edgeact_agent::render::{os_initial_history, os_observation, render_llama2, trim_history};
use edgeact_agent::{ChatTemplate, Message, Protocol};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::Tokenizer;
use std::hint::black_box;
use std::path::PathBuf;

fn vocab() -> Tokenizer {
    let shared = PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into()),
    );
    let path = shared.join("models/llama2-tokenizer/ggml-vocab-llama-spm.gguf");
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).expect("tokenizer")
}

fn bench(c: &mut Criterion) {
    let tok = vocab();
    let n = tok.n_vocab();
    let states = [
        ("os_start", Protocol::Os, ""),
        ("os_thought", Protocol::Os, "Think: I need to count the files"),
        (
            "os_code",
            Protocol::Os,
            "Think: x\n\nAct: bash\n\n```bash\nls -l /etc | ",
        ),
        ("db_free", Protocol::Db, "To answer this I will select the rows"),
    ];
    for (name, p, prefix) in states {
        let mut con = Constraint::new(p);
        assert!(con.advance(prefix.as_bytes()));
        c.bench_function(&format!("mask_{name}_32k"), |b| {
            b.iter(|| black_box(con.allowed_tokens(n, |id| tok.token_bytes(id), tok.eog_ids(), 100)))
        });
    }
    let mut history = os_initial_history("How many files in /etc are larger than 1 MB?");
    for i in 0..7 {
        history.push(Message::agent(format!(
            "Think: step {i}.\n\nAct: bash\n\n```bash\nfind /etc -size +1M | head\n```"
        )));
        history.push(Message::user(os_observation(&"/etc/some/file\r\n".repeat(40))));
    }
    c.bench_function("render_tokenize_os_8_turns", |b| {
        b.iter(|| {
            let trimmed = trim_history(black_box(&history));
            let prompt = render_llama2(&trimmed, &ChatTemplate::Eval);
            black_box(tok.encode(&prompt, true, true))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
