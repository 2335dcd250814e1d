//! `edgeact run`: generate text from a prompt, streaming it to stdout, with speed figures on
//! stderr.

use super::args::{print_timings, ModelArgs, SamplingArgs};
use anyhow::{bail, Context};
use edgeact_runtime::chat::Message;
use edgeact_runtime::generate::{generate_speculative, GenerateOptions};
use edgeact_runtime::speculate::SpeculateConfig;
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(short = 'p', long, default_value = "")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Wrap the prompt in the model's chat template (one user turn).
    #[arg(long)]
    chat: bool,
    /// System prompt for --chat.
    #[arg(long)]
    system: Option<String>,
    /// Keep generating after end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Prompt-lookup speculative decoding: drafts copied from the prompt and the text so far,
    /// verified in one forward pass (same greedy output; same distribution when sampling).
    #[arg(long)]
    speculate: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (file, _model, mut session) = args.model.open()?;
    let tok = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let mut sampler = args.sampling.sampler()?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::system(s.as_str()));
        }
        messages.push(Message::user(args.prompt.as_str()));
        super::chat::encode_chat(&file, &tok, &messages)?
    } else {
        if args.system.is_some() {
            bail!("--system needs --chat");
        }
        tok.encode(&args.prompt, tok.add_bos_default(), false)
    };
    if prompt.is_empty() {
        bail!("the prompt is empty and the model adds no BOS token; give -p");
    }
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        stop_tokens: if args.ignore_eos {
            Vec::new()
        } else {
            tok.eog_ids().to_vec()
        },
        stop_strings: args.sampling.stop.clone(),
    };
    // From BOS alone the first token's SentencePiece space is dropped (as llama.cpp prints a
    // fresh text); after a prompt it is kept, since the text continues the prompt.
    let mut decoder = if prompt.len() == 1 && Some(prompt[0]) == tok.bos_id() {
        StreamDecoder::new(&tok)
    } else {
        StreamDecoder::after_prompt(&tok)
    };
    let mut stdout = std::io::stdout();
    let speculate = if args.speculate {
        SpeculateConfig::default()
    } else {
        SpeculateConfig::off()
    };
    let g = generate_speculative(
        &mut session,
        &mut sampler,
        &mut decoder,
        &prompt,
        &opts,
        &speculate,
        &mut |s| {
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        },
    )?;
    println!();
    print_timings(&g);
    if args.speculate {
        let d = &g.decode;
        eprintln!(
            "speculate: {} forward passes for {} tokens ({:.3} per token), {} of {} draft tokens accepted",
            d.passes,
            d.tokens,
            d.passes_per_token(),
            d.accepted,
            d.drafted
        );
    }
    Ok(ExitCode::SUCCESS)
}
