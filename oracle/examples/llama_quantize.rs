//! llama.cpp's model quantizer (`llama_model_quantize`, what `llama-quantize` runs) from the
//! command line, for timing it beside `edgeact quantize` on the same input
//! (scripts/quantize-side-by-side.sh):
//!
//! ```text
//! cargo run --release -p edgeact-oracle --example llama_quantize -- IN.gguf OUT.gguf q4_0|q4_k_m|q8_0|f16|f32 THREADS
//! ```
//!
//! Prints the wall time of the call (seconds) on stdout.

use edgeact_oracle::Ftype;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, ty, threads] = args.as_slice() else {
        eprintln!("usage: llama_quantize IN.gguf OUT.gguf q4_0|q4_k_m|q8_0|f16|f32 THREADS");
        return ExitCode::from(2);
    };
    let ftype = match ty.as_str() {
        "q4_0" => Ftype::Q4_0,
        "q4_k_m" => Ftype::Q4KM,
        "q8_0" => Ftype::Q8_0,
        "f16" => Ftype::F16,
        "f32" => Ftype::F32,
        other => {
            eprintln!("unknown type {other:?}: expected q4_0, q4_k_m, q8_0, f16 or f32");
            return ExitCode::from(2);
        }
    };
    let Ok(threads) = threads.parse::<usize>() else {
        eprintln!("THREADS must be a whole number, got {threads:?}");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    if let Err(e) = edgeact_oracle::quantize_model(Path::new(input), Path::new(output), ftype, threads) {
        eprintln!("llama_quantize: {e}");
        return ExitCode::FAILURE;
    }
    println!("{:.2}", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
