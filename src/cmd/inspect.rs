//! `edgeact inspect`: a GGUF file's header, metadata (long arrays and strings summarised) and
//! tensor table (type, ggml-order shape, size, absolute offset), as text or `--json`.

use anyhow::Context;
use edgeact_runtime::gguf::{GgufFile, Value};
use serde_json::{json, Value as Json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arrays longer than this are summarised (length, element type, first items).
const ARRAY_HEAD: usize = 8;

#[derive(clap::Args)]
pub struct Args {
    /// The .gguf file.
    pub path: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let f = GgufFile::open(&args.path).with_context(|| format!("cannot inspect {}", args.path.display()))?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &to_json(&f))
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_text(&mut out, &f)
    };
    match written {
        // A closed pipe (`edgeact inspect m.gguf | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(items) if items.len() > ARRAY_HEAD => json!({
            "array_of": format!("{:?}", items.elem_type()),
            "len": items.len(),
            "head": items.iter().take(ARRAY_HEAD).map(|item| value_json(&item.to_value())).collect::<Vec<_>>(),
        }),
        Value::Array(items) => Json::Array(items.iter().map(|item| value_json(&item.to_value())).collect()),
    }
}

fn to_json(f: &GgufFile) -> Json {
    let h = f.header();
    let metadata: serde_json::Map<String, Json> = f
        .metadata()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!({"type": format!("{:?}", v.value_type()), "value": value_json(v)}),
            )
        })
        .collect();
    let tensors: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.dims,
                "elements": t.n_elements(),
                "bytes": t.n_bytes(),
                "offset": h.data_offset + t.offset,
            })
        })
        .collect();
    json!({
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "file_size": f.file_size(),
        "metadata": metadata,
        "tensors": tensors,
    })
}

fn print_text(out: &mut impl Write, f: &GgufFile) -> std::io::Result<()> {
    let h = f.header();
    writeln!(
        out,
        "GGUF v{} | {} metadata keys | {} tensors | alignment {} | data at {} | {} bytes",
        h.version,
        f.metadata().len(),
        f.tensors().len(),
        h.alignment,
        h.data_offset,
        f.file_size()
    )?;
    writeln!(out)?;
    let width = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.metadata() {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    writeln!(out)?;
    let nw = f.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<nw$}  {:<5}  {:<24}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    )?;
    let mut total = 0u64;
    let mut elements = 0u64;
    for t in f.tensors() {
        let shape = t.dims.iter().map(u64::to_string).collect::<Vec<_>>().join(" x ");
        writeln!(
            out,
            "{:<nw$}  {:<5}  {:<24}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            shape,
            t.n_bytes(),
            h.data_offset + t.offset
        )?;
        total += t.n_bytes();
        elements += t.n_elements();
    }
    if elements > 0 {
        writeln!(
            out,
            "\n{} weights, {} bytes of tensor data, {:.3} bits/weight",
            elements,
            total,
            total as f64 * 8.0 / elements as f64
        )?;
    }
    Ok(())
}
