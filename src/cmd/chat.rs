//! `edgeact chat`: an interactive conversation on stdin/stdout. Each turn renders the whole
//! conversation with the chat template and generates the reply; the session's KV cache keeps
//! the previous turns, so only the new tokens are evaluated.
//!
//! Template: the built-in Llama-2 / AgentLM format (FastChat `llama-2`):
//! `[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]`.

use super::run::{print_timings, stop_tokens, ModelArgs, SamplingArgs};
use anyhow::{bail, Context};
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

/// One message of a conversation.
#[derive(Clone, Debug)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

impl Turn {
    pub fn new(role: &str, content: &str) -> Turn {
        Turn {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The Llama-2 chat format (FastChat `llama-2`, which AgentLM was trained with). Roles must
/// alternate user/assistant after an optional leading system message; the text ends with the
/// last user turn's `[/INST]` so the model writes the assistant reply.
pub fn render_llama2(turns: &[Turn]) -> anyhow::Result<String> {
    let (system, rest) = match turns.first() {
        Some(t) if t.role == "system" => (Some(t.content.as_str()), &turns[1..]),
        _ => (None, turns),
    };
    let mut out = String::new();
    for (i, t) in rest.iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if t.role != want {
            bail!("chat turn {i} has role {:?}, expected {want:?}", t.role);
        }
        if want == "user" {
            if i > 0 {
                out.push_str("<s>");
            }
            out.push_str("[INST] ");
            if let (0, Some(s)) = (i, system) {
                out.push_str(&format!("<<SYS>>\n{s}\n<</SYS>>\n\n"));
            }
            out.push_str(t.content.trim());
            out.push_str(" [/INST]");
        } else {
            out.push(' ');
            out.push_str(t.content.trim());
            out.push_str(" </s>");
        }
    }
    Ok(out)
}

/// Token ids of a conversation ready for the assistant's reply.
pub fn encode_chat(_file: &GgufFile, tok: &Tokenizer, turns: &[Turn]) -> anyhow::Result<Vec<u32>> {
    let text = render_llama2(turns)?;
    Ok(tok.encode(&text, tok.add_bos_default(), true))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (file, _model, mut session) = args.model.open()?;
    let tok = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let mut sampler = args.sampling.sampler()?;
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        stop_tokens: stop_tokens(&tok),
        stop_strings: args.sampling.stop.clone(),
    };
    let mut turns = Vec::new();
    if let Some(s) = &args.system {
        turns.push(Turn::new("system", s));
    }
    eprintln!("edgeact chat: type a message and press Enter; /reset clears the conversation, /exit or Ctrl-D quits.");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
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
        turns.push(Turn::new("user", line));
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
        turns.push(Turn::new("assistant", &g.text));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama2_format_matches_fastchat() {
        let turns = [
            Turn::new("system", "SYS"),
            Turn::new("user", "hi"),
            Turn::new("assistant", "hello"),
            Turn::new("user", "ls"),
        ];
        assert_eq!(
            render_llama2(&turns).unwrap(),
            "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nhi [/INST] hello </s><s>[INST] ls [/INST]"
        );
        assert_eq!(render_llama2(&[Turn::new("user", "q")]).unwrap(), "[INST] q [/INST]");
        assert!(render_llama2(&[Turn::new("assistant", "x")]).is_err());
    }
}
