//! Tokenizer throughput: encoding an AgentBench-sized chat prompt (about 7 KB, mixed prose,
//! shell output and code) with the Llama-2 SentencePiece tokenizer and, when
//! `scripts/fetch-smollm2.sh` has run, SmolLM2's byte-level BPE; decoding and streaming the ids
//! back; and loading each tokenizer from its GGUF.
//!
//! Run: `cargo bench --bench tokenizer` (filter e.g. `-- encode`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgeact_runtime::chat::{ChatTemplate, Message};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::hint::black_box;

const LLAMA_VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/llama2-tokenizer/ggml-vocab-llama-spm.gguf"
);
const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// A multi-turn OS-task conversation rendered with the Llama-2 chat format.
fn prompt() -> String {
    let obs = "The output of the OS:\n\ncpi cron.hourly  default  gai.conf  hosts.allow  ld.so.conf.d  \
               mime.types  passwd-  rc2.d  security  sysctl.d\r\n\u{1b}]0;root@708762f582f8: /\u{7}\
               root@708762f582f8:/# \u{1b}[K";
    let act = "Think: To count the files in /etc, I need to print all the files in it.\n\nAct: bash\n\n\
               ```bash\nls -1 /etc | wc -l\n```";
    let mut msgs = vec![Message::user(
        "You are an assistant that will act like a person, I'will play the role of linux(ubuntu) \
         operating system. Your goal is to implement the operations required by me or answer to the \
         question proposed by me. For each of your turn, you should first think what you should do, \
         and then take exact one of the three actions: \"bash\", \"finish\" or \"answer\". Now, my \
         problem is:\n\ntell me how many files are in the directory \"/etc\"? Crème brûlée, 中文, 😀."
            .repeat(3),
    )];
    for _ in 0..12 {
        msgs.push(Message::assistant(act));
        msgs.push(Message::user(obs));
    }
    ChatTemplate::llama2().render(&msgs, true).expect("render")
}

fn bench_one(c: &mut Criterion, name: &str, path: &str) {
    if !std::path::Path::new(path).exists() {
        eprintln!("skipping {name}: {path} is absent");
        return;
    }
    let file = GgufFile::open(path).expect("open GGUF");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let text = prompt();
    let ids = tok.encode(&text, true, true);
    eprintln!("{name}: prompt of {} bytes → {} tokens", text.len(), ids.len());

    let mut g = c.benchmark_group(format!("tokenizer/{name}"));
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| black_box(tok.encode(black_box(&text), true, true)))
    });
    g.bench_function("decode", |b| b.iter(|| black_box(tok.decode(black_box(&ids)))));
    g.bench_function("stream", |b| {
        b.iter(|| {
            let mut s = StreamDecoder::new(&tok);
            let mut n = 0;
            for &id in &ids {
                n += s.push(id).len();
            }
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(tok.n_vocab() as u64));
    g.sample_size(10);
    g.bench_function("load", |b| {
        b.iter(|| black_box(Tokenizer::from_gguf(&file).expect("tokenizer")))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_one(c, "llama2-spm", LLAMA_VOCAB);
    bench_one(c, "smollm2-bpe", SMOLLM2);
}

criterion_group!(tokenizer, benches);
criterion_main!(tokenizer);
