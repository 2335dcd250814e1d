//! `edgeact chat`: an interactive conversation on stdin/stdout. Each turn renders the whole
//! conversation with the chat template and generates the reply; the session's KV cache keeps
//! the previous turns, so only the new tokens are evaluated.
//!
//! Template: the GGUF's `tokenizer.chat_template`, else the built-in Llama-2 / AgentLM format
//! (FastChat `llama-2`), both from `edgeact_runtime::chat`.

use super::args::{print_timings, ModelArgs, SamplingArgs};
use anyhow::Context;
use edgeact_runtime::chat::{ChatTemplate, Message};
use edgeact_runtime::generate::{generate, GenerateOptions};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
}

/// Token ids of a conversation ready for the assistant's reply, rendered with the file's chat
/// template (or the built-in Llama-2 one when it has none).
pub fn encode_chat(file: &GgufFile, tok: &Tokenizer, messages: &[Message]) -> anyhow::Result<Vec<u32>> {
    let template = ChatTemplate::from_gguf(file).context("reading the chat template")?;
    let text = template.render(messages, true).context("rendering the chat template")?;
    // Templates that write the BOS text themselves (Hugging Face's Llama-2 one) must not get a
    // second BOS from the tokenizer.
    let bos_text = tok.bos_id().and_then(|b| tok.token_text(b)).filter(|t| !t.is_empty());
    let add_bos = tok.add_bos_default() && !bos_text.is_some_and(|b| text.starts_with(b));
    Ok(tok.encode(&text, add_bos, true))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (file, _model, mut session) = args.model.open()?;
    let tok = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let mut sampler = args.sampling.sampler()?;
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        stop_tokens: tok.eog_ids().to_vec(),
        stop_strings: args.sampling.stop.clone(),
    };
    let mut turns = Vec::new();
    if let Some(s) = &args.system {
        turns.push(Message::system(s.as_str()));
    }
    eprintln!("edgeact chat: type a message and press Enter; /reset clears the conversation, /exit or Ctrl-D quits.");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut raw = Vec::new();
        if stdin.lock().read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        // One bad line (a paste from a Latin-1 terminal, a stray byte) must not end the chat.
        let line = match String::from_utf8(raw) {
            Ok(line) => line,
            Err(e) => {
                eprintln!(
                    "that line is not valid UTF-8 (bad byte at offset {}); it was ignored, type it again",
                    e.utf8_error().valid_up_to()
                );
                continue;
            }
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                turns.retain(|t| t.role == "system");
                session.truncate(0);
                continue;
            }
            _ => {}
        }
        turns.push(Message::user(line));
        let prompt = encode_chat(&file, &tok, &turns)?;
        if prompt.len() + 1 >= session.n_ctx() {
            turns.pop();
            eprintln!(
                "the conversation no longer fits the context ({} tokens); /reset to start over",
                session.n_ctx()
            );
            continue;
        }
        // The reply follows "[/INST]"; its first SentencePiece space is a separator, not text.
        let mut decoder = StreamDecoder::new(&tok);
        let g = generate(&mut session, &mut sampler, &mut decoder, &prompt, &opts, &mut |s| {
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        })?;
        println!();
        print_timings(&g);
        turns.push(Message::assistant(g.text.trim()));
    }
    Ok(ExitCode::SUCCESS)
}
