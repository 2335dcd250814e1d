//! The conversion pipeline: an HF model directory (or a GGUF file to requantize) to a GGUF file
//! of the chosen [`Mix`].
//!
//! The plan (metadata, tensor table, one type per tensor) is made first; then each tensor is
//! streamed through the [`GgufWriter`] in chunks of rows: rows are read from the mapping as f32
//! (permuted for Q/K, dequantized for GGUF inputs), quantized on `threads` threads, measured
//! against the source for the RMSE summary, and written. Memory use is a few chunks, not the
//! model.
//!
//! [`convert_with_lora`] also merges a PEFT LoRA adapter: each adapted row gets
//! `scale * B[row] · A` added as it is read, before the Q/K permutation and quantization
//! (see [`crate::lora::merge`]); the adapter is the only thing held whole.

use crate::checkpoint::{map_file, Checkpoint, MappedFile, TensorMeta};
use crate::gguf_writer::{GgufWriter, TensorDecl, TensorSink};
use crate::hf::{map_name, permuted_row, LlamaConfig, BLOCK_TENSORS};
use crate::lora::merge::add_delta_row;
use crate::lora::LoraMerge;
use crate::mix::{Mix, MixPlanner};
use crate::vocab::Vocab;
use anyhow::{anyhow, bail, Context};
use edgeact_runtime::gguf::{GgufFile, Value};
use edgeact_runtime::quant::{dequantize_row, quantize_row, GgmlType, QuantError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Elements converted per thread per step: 1 Mi f32 (4 MiB) keeps memory small and threads busy.
const CHUNK_ELEMS_PER_THREAD: usize = 1 << 20;

/// What to produce.
#[derive(Clone, Debug)]
pub struct Options {
    pub mix: Mix,
    /// Worker threads for quantization (0 = all cores; more than the cores are not used).
    pub threads: usize,
    /// `general.name`; defaults to the input directory or file name.
    pub name: Option<String>,
    /// Convert an HF checkpoint without any tokenizer metadata.
    pub no_tokenizer: bool,
}

impl Options {
    pub fn new(mix: Mix) -> Options {
        Options {
            mix,
            threads: 0,
            name: None,
            no_tokenizer: false,
        }
    }
}

/// Per output type: how much went in and how far the quantized values are from the source.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeStats {
    pub ty: GgmlType,
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
    sq_err: f64,
    sq_ref: f64,
}

impl TypeStats {
    /// Root-mean-square error of the quantized weights against the source values.
    pub fn rmse(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            (self.sq_err / self.elements as f64).sqrt()
        }
    }

    /// RMSE relative to the RMS of the source values.
    pub fn relative_rmse(&self) -> f64 {
        if self.sq_ref == 0.0 {
            0.0
        } else {
            (self.sq_err / self.sq_ref).sqrt()
        }
    }
}

/// The closing summary of a conversion.
#[derive(Clone, Debug)]
pub struct Report {
    pub output: PathBuf,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub elements: u64,
    pub tensor_bytes: u64,
    pub per_type: Vec<TypeStats>,
    pub elapsed: Duration,
    /// Tensors a LoRA adapter was merged into.
    pub lora_merged: usize,
}

impl Report {
    /// Bits per weight of the tensor data.
    pub fn bits_per_weight(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.tensor_bytes as f64 * 8.0 / self.elements as f64
        }
    }
}

/// Progress notifications.
pub trait Progress {
    /// Before any data: the total number of elements to convert.
    fn start(&mut self, _total_elements: u64, _n_tensors: usize) {}
    /// A tensor begins.
    fn tensor(&mut self, _index: usize, _name: &str, _ty: GgmlType) {}
    /// `elements` more have been written.
    fn advance(&mut self, _elements: u64) {}
}

/// A no-op [`Progress`].
pub struct Silent;
impl Progress for Silent {}

enum Input {
    Hf(Checkpoint),
    /// The parsed file plus a second mapping of it that tensor data is read through, so the
    /// pages of finished tensors can be dropped (the reader's own mapping is never advised).
    Gguf(GgufFile, MappedFile),
}

impl Input {
    /// The bytes of a GGUF input tensor (bounds validated by the reader).
    fn gguf_tensor<'a>(f: &GgufFile, map: &'a MappedFile, name: &str) -> anyhow::Result<&'a [u8]> {
        let info = f.tensor(name)?.info;
        let start = (f.header().data_offset + info.offset) as usize;
        map.map
            .get(start..start + info.n_bytes() as usize)
            .ok_or_else(|| anyhow!("tensor {name:?}: the file changed while converting"))
    }
}

/// Where the rows of an output tensor come from.
#[derive(Clone, Debug)]
enum Src {
    Hf {
        name: String,
        permute_heads: Option<u32>,
        /// The adapter pair merged into this tensor (an index into the adapter's pairs).
        lora: Option<usize>,
    },
    Gguf {
        name: String,
    },
}

struct Item {
    src: Src,
    /// The source tensor's type for GGUF inputs (copied verbatim when unchanged).
    src_ty: Option<GgmlType>,
}

/// Converts `input` (an HF model directory or a `.gguf` file) into `output`.
pub fn convert(input: &Path, output: &Path, opts: &Options, progress: &mut dyn Progress) -> anyhow::Result<Report> {
    convert_with_lora(input, output, opts, None, progress)
}

/// [`convert`], merging the LoRA adapter `lora` (if any) into the weights it adapts. Merging
/// needs the base model's f16/f32 source, so a GGUF input with an adapter is refused.
pub fn convert_with_lora(
    input: &Path,
    output: &Path,
    opts: &Options,
    lora: Option<&LoraMerge>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    // Each thread gets its own chunk buffers, so an absurd count would be an absurd allocation.
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = if opts.threads == 0 {
        cpus
    } else {
        opts.threads.min(cpus)
    };
    let input_meta = std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
    let (source, writer, items) = if input_meta.is_dir() {
        plan_hf(input, opts, lora)?
    } else if input_meta.is_file() {
        if lora.is_some() {
            bail!(
                "{} is a GGUF file: merging a LoRA adapter needs the base model's f16/f32 Hugging Face checkpoint directory (or apply the adapter at load: `edgeact lora convert` writes it as a GGUF adapter)",
                input.display()
            );
        }
        plan_gguf(input, opts)?
    } else {
        bail!(
            "{} is {}: the input must be a model directory or a .gguf file",
            input.display(),
            edgeact_runtime::files::file_kind(input_meta.file_type())
        );
    };
    let input_paths: Vec<PathBuf> = match &source {
        Input::Hf(ck) => ck.paths().map(Path::to_path_buf).collect(),
        Input::Gguf(..) => vec![input.to_path_buf()],
    };
    let input_bytes = input_paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let total: u64 = writer.tensors().iter().map(TensorDecl::n_elements).sum();
    progress.start(total, writer.tensors().len());

    let mut stats: Vec<TypeStats> = Vec::new();
    // Every file the conversion reads is protected from `-o`, not only the weights.
    let mut protected = input_paths.clone();
    if let Input::Hf(_) = &source {
        for name in [
            "config.json",
            "tokenizer.model",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            protected.push(input.join(name));
        }
    }
    if let Some(l) = lora {
        protected.extend(l.adapter.files.iter().cloned());
    }
    let inputs: Vec<&Path> = protected.iter().map(PathBuf::as_path).collect();
    let summary = writer
        .write_file(output, &inputs, |i, decl, sink| -> anyhow::Result<()> {
            progress.tensor(i, &decl.name, decl.ty);
            let (e, s) = write_tensor(&source, &items[i], lora, decl, sink, threads, progress)
                .with_context(|| format!("converting tensor {:?}", decl.name))?;
            let entry = match stats.iter_mut().position(|t| t.ty == decl.ty) {
                Some(p) => &mut stats[p],
                None => {
                    stats.push(TypeStats {
                        ty: decl.ty,
                        tensors: 0,
                        elements: 0,
                        bytes: 0,
                        sq_err: 0.0,
                        sq_ref: 0.0,
                    });
                    stats.last_mut().expect("just pushed")
                }
            };
            entry.tensors += 1;
            entry.elements += decl.n_elements();
            entry.bytes += decl.n_bytes();
            entry.sq_err += e;
            entry.sq_ref += s;
            match (&source, &items[i].src) {
                (Input::Hf(ck), Src::Hf { name, .. }) => {
                    if let Some(t) = ck.get(name) {
                        ck.release(t);
                    }
                }
                (Input::Gguf(f, map), Src::Gguf { name }) => {
                    if let Ok(v) = f.tensor(name) {
                        map.release((f.header().data_offset + v.info.offset) as usize, v.data.len());
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .with_context(|| format!("writing {}", output.display()))?;
    stats.sort_by_key(|s| s.ty.id());
    Ok(Report {
        output: summary.path.unwrap_or_else(|| output.to_path_buf()),
        input_bytes,
        output_bytes: summary.file_size,
        elements: total,
        tensor_bytes: writer.tensors().iter().map(TensorDecl::n_bytes).sum(),
        per_type: stats,
        elapsed: start.elapsed(),
        lora_merged: items
            .iter()
            .filter(|it| matches!(it.src, Src::Hf { lora: Some(_), .. }))
            .count(),
    })
}

/// Plans the conversion of an HF Llama directory.
fn plan_hf(dir: &Path, opts: &Options, lora: Option<&LoraMerge>) -> anyhow::Result<(Input, GgufWriter, Vec<Item>)> {
    let cfg = LlamaConfig::from_file(&dir.join("config.json"))?;
    let ck = Checkpoint::open_dir(dir)?;
    let mut mapped = Vec::new();
    for t in ck.tensors() {
        if let Some(m) = map_name(&t.name, &cfg)? {
            mapped.push((m, t));
        }
    }
    mapped.sort_by_key(|(m, _)| m.order);
    let has = |g: &str| mapped.iter().any(|(m, _)| m.gguf_name == g);
    for required in ["token_embd.weight", "output_norm.weight"] {
        if !has(required) {
            bail!(
                "{}: the checkpoint has no {required} (model.embed_tokens / model.norm)",
                dir.display()
            );
        }
    }
    for l in 0..cfg.n_layer {
        for t in BLOCK_TENSORS {
            if !has(&format!("blk.{l}.{t}.weight")) {
                bail!("{}: layer {l} has no {t} weight", dir.display());
            }
        }
    }
    let h = cfg.hidden_size as usize;
    let hd = cfg.head_dim() as usize;
    let expect_shape = |g: &str| -> Option<Vec<usize>> {
        let ff = cfg.intermediate_size as usize;
        let kv = cfg.n_head_kv as usize * hd;
        let suffix = g.split('.').rev().nth(1).unwrap_or("");
        Some(match suffix {
            "attn_norm" | "ffn_norm" | "output_norm" => vec![h],
            "attn_q" | "attn_output" => vec![h, h],
            "attn_k" | "attn_v" => vec![kv, h],
            "ffn_gate" | "ffn_up" => vec![ff, h],
            "ffn_down" => vec![h, ff],
            _ => return None,
        })
    };
    for (m, t) in &mapped {
        if let Some(shape) = expect_shape(&m.gguf_name) {
            if t.shape != shape {
                bail!(
                    "tensor {:?} has shape {:?}, config.json implies {shape:?}",
                    t.name,
                    t.shape
                );
            }
        } else if t.shape.len() != 2 || t.shape[1] != h {
            bail!("tensor {:?} has shape {:?}, expected [vocab, {h}]", t.name, t.shape);
        }
    }
    let n_vocab = mapped
        .iter()
        .find(|(m, _)| m.gguf_name == "token_embd.weight")
        .map(|(_, t)| t.shape[0])
        .expect("checked above");
    // The runtime takes llama.vocab_size as the embedding's row count and refuses a mismatch.
    if n_vocab != cfg.vocab_size as usize {
        bail!(
            "config.json says vocab_size {}, but the embedding has {n_vocab} rows",
            cfg.vocab_size
        );
    }
    // The output matrix scores every token of the vocabulary; the runtime refuses other shapes.
    if let Some((_, t)) = mapped.iter().find(|(m, _)| m.gguf_name == "output.weight") {
        if t.shape[0] != n_vocab {
            bail!(
                "tensor {:?} has {} rows, but the vocabulary (config.json's vocab_size) has {n_vocab}",
                t.name,
                t.shape[0]
            );
        }
    }

    let mut w = GgufWriter::new();
    let name = opts
        .name
        .clone()
        .or_else(|| {
            dir.canonicalize()
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "model".into());
    let mut meta = cfg.metadata();
    meta.insert(1, ("general.name".into(), Value::String(name)));
    for (k, v) in meta {
        w.set(k, v)?;
    }
    w.set("general.file_type", Value::U32(opts.mix.file_type()))?;
    w.set("general.quantization_version", Value::U32(2))?;
    if !opts.no_tokenizer {
        let mut vocab = Vocab::from_dir(dir)?;
        if vocab.tokens.len() > n_vocab {
            bail!(
                "the tokenizer has {} tokens but the embedding only {n_vocab} rows",
                vocab.tokens.len()
            );
        }
        vocab.pad_to(n_vocab);
        if let (Some(b), None) = (cfg.bos_token_id, vocab.bos) {
            vocab.bos = Some(b);
        }
        if let (Some(e), None) = (cfg.eos_token_id, vocab.eos) {
            vocab.eos = Some(e);
        }
        // The runtime's tokenizer refuses special ids outside the vocabulary.
        for (which, id) in [("BOS", vocab.bos), ("EOS", vocab.eos)] {
            if let Some(id) = id.filter(|&id| id as usize >= n_vocab) {
                bail!("the {which} token id {id} is outside the vocabulary of {n_vocab} tokens");
            }
        }
        for (k, v) in vocab.metadata() {
            w.set(k, v)?;
        }
    }

    if let Some(l) = lora {
        l.check_against_base(&cfg, |name| ck.get(name).map(|t| t.shape.clone()))?;
    }
    let lora_pair = |hf_name: &str| -> Option<usize> {
        let pairs = &lora?.adapter.pairs;
        pairs.iter().position(|p| p.hf_weight_name() == hf_name)
    };

    let names: Vec<&str> = mapped.iter().map(|(m, _)| m.gguf_name.as_str()).collect();
    let mut planner = MixPlanner::new(opts.mix, cfg.n_layer, names);
    let mut items = Vec::new();
    for (m, t) in &mapped {
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let ty = planner
            .choose(&m.gguf_name, &dims, GgmlType::F32)
            .map_err(|e| anyhow!(e))?;
        w.add_tensor(m.gguf_name.clone(), &dims, ty)?;
        items.push(Item {
            src: Src::Hf {
                name: t.name.clone(),
                permute_heads: m.permute_heads,
                lora: lora_pair(&t.name),
            },
            src_ty: None,
        });
    }
    Ok((Input::Hf(ck), w, items))
}

/// Plans requantizing a GGUF file: metadata copied, types re-chosen, tensor order kept.
fn plan_gguf(path: &Path, opts: &Options) -> anyhow::Result<(Input, GgufWriter, Vec<Item>)> {
    let f = GgufFile::open(path)?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k.clone(), v.clone())?;
    }
    if let Some(name) = &opts.name {
        w.set_str("general.name", name.clone())?;
    }
    w.set("general.file_type", Value::U32(opts.mix.file_type()))?;
    w.set("general.quantization_version", Value::U32(2))?;
    let n_layer = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .and_then(|a| f.get(&format!("{a}.block_count")))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let mut planner = MixPlanner::new(opts.mix, n_layer, f.tensors().iter().map(|t| t.name.as_str()));
    let mut items = Vec::new();
    for t in f.tensors() {
        let ty = planner.choose(&t.name, &t.dims, t.ty).map_err(|e| anyhow!(e))?;
        w.add_tensor(t.name.clone(), &t.dims, ty)?;
        items.push(Item {
            src: Src::Gguf { name: t.name.clone() },
            src_ty: Some(t.ty),
        });
    }
    let map = map_file(path)?;
    Ok((Input::Gguf(f, map), w, items))
}

/// Streams one tensor; returns (sum of squared errors, sum of squared source values).
fn write_tensor(
    source: &Input,
    item: &Item,
    lora: Option<&LoraMerge>,
    decl: &TensorDecl,
    sink: &mut TensorSink<'_>,
    threads: usize,
    progress: &mut dyn Progress,
) -> anyhow::Result<(f64, f64)> {
    // A GGUF tensor whose type does not change is copied byte for byte (as llama.cpp does).
    if let (Input::Gguf(f, map), Src::Gguf { name }, Some(src_ty)) = (source, &item.src, item.src_ty) {
        if src_ty == decl.ty {
            sink.write_all(Input::gguf_tensor(f, map, name)?)?;
            progress.advance(decl.n_elements());
            return Ok((0.0, 0.0));
        }
    }
    let row_len = decl.dims[0] as usize;
    let n_rows = (decl.n_elements() / decl.dims[0]) as usize;
    let row_bytes = decl.ty.row_bytes(decl.dims[0]).expect("validated by add_tensor") as usize;
    let chunk_rows = (CHUNK_ELEMS_PER_THREAD * threads / row_len).clamp(1, n_rows);
    let mut src = vec![0f32; chunk_rows * row_len];
    let mut dst = vec![0u8; chunk_rows * row_bytes];
    let (mut sq_err, mut sq_ref) = (0f64, 0f64);
    let mut first = 0;
    while first < n_rows {
        let n = chunk_rows.min(n_rows - first);
        let src = &mut src[..n * row_len];
        let dst = &mut dst[..n * row_bytes];
        // Each worker reads (converts to f32, merges, permutes) its own rows before quantizing
        // them, so that reading a GGUF's F16 data is spread over the threads too.
        let read = |row0: usize, rows: usize, out: &mut [f32]| {
            read_rows(source, &item.src, lora, first + row0, rows, n_rows, row_len, out)
        };
        let (e, s) =
            quantize_parallel(decl.ty, &read, src, dst, row_len, row_bytes, threads).map_err(
                |failure| match failure {
                    WorkerError::Read(err) => err,
                    WorkerError::Quantize(row, QuantError::NonFinite { index }) => anyhow!(
                        "non-finite value (NaN or infinity) at row {}, column {} of the source tensor",
                        first + row + index / row_len,
                        index % row_len
                    ),
                    WorkerError::Quantize(_, other) => anyhow!(other),
                },
            )?;
        sq_err += e;
        sq_ref += s;
        sink.write_all(dst)?;
        progress.advance((n * row_len) as u64);
        first += n;
    }
    Ok((sq_err, sq_ref))
}

/// Fills `out` with rows `first..first + n` of the output tensor, as f32 (merged with the
/// LoRA update first, when the tensor has one).
#[allow(clippy::too_many_arguments)]
fn read_rows(
    source: &Input,
    src: &Src,
    lora: Option<&LoraMerge>,
    first: usize,
    n: usize,
    n_rows: usize,
    row_len: usize,
    out: &mut [f32],
) -> anyhow::Result<()> {
    match (source, src) {
        (
            Input::Hf(ck),
            Src::Hf {
                name,
                permute_heads,
                lora: pair,
            },
        ) => {
            let t: &TensorMeta = ck.require(name)?;
            // The update of source row `from`, added before the permutation moves the row.
            let merge = pair.and_then(|i| {
                let l = lora?;
                Some((&l.adapter.pairs[i], l.scale() as f32))
            });
            let add = |from: usize, row: &mut [f32]| {
                if let Some((p, scale)) = merge {
                    add_delta_row(p, scale, from, row);
                }
            };
            match permute_heads {
                None => {
                    ck.read_rows_f32(t, first, out)?;
                    for (r, row) in out.chunks_exact_mut(row_len).enumerate() {
                        add(first + r, row);
                    }
                }
                Some(heads) => {
                    for (r, row) in out.chunks_exact_mut(row_len).enumerate() {
                        let from = permuted_row(first + r, n_rows, *heads as usize);
                        ck.read_rows_f32(t, from, row)?;
                        add(from, row);
                    }
                }
            }
        }
        (Input::Gguf(f, map), Src::Gguf { name }) => {
            let ty = f.tensor(name)?.ty();
            let data = Input::gguf_tensor(f, map, name)?;
            let rb = ty.row_bytes(row_len as u64).expect("validated by the reader") as usize;
            dequantize_row(ty, &data[first * rb..(first + n) * rb], out)
                .map_err(|e| anyhow!("cannot dequantize the {ty} source: {e}"))?;
        }
        _ => unreachable!("items are planned from their own input"),
    }
    Ok(())
}

/// `(sum((x - y)^2), sum(x^2))` in f64, over 8 interleaved partial sums so the loop vectorizes
/// (one serial f64 chain per sum made this statistic cost as much as quantizing Q4_0).
fn squared_sums(x: &[f32], y: &[f32]) -> (f64, f64) {
    const LANES: usize = 8;
    let (mut err, mut norm) = ([0f64; LANES], [0f64; LANES]);
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (x_rest, y_rest) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for k in 0..LANES {
            let d = (a[k] - b[k]) as f64;
            err[k] += d * d;
            norm[k] += a[k] as f64 * a[k] as f64;
        }
    }
    for (&a, &b) in x_rest.iter().zip(y_rest) {
        let d = (a - b) as f64;
        err[0] += d * d;
        norm[0] += a as f64 * a as f64;
    }
    (err.iter().sum(), norm.iter().sum())
}

/// Fills `out` with `rows` rows of the current chunk from the given first row.
type ReadRows<'a> = dyn Fn(usize, usize, &mut [f32]) -> anyhow::Result<()> + Sync + 'a;

/// Why a worker of [`quantize_parallel`] stopped.
enum WorkerError {
    /// Reading its rows failed.
    Read(anyhow::Error),
    /// Quantizing failed at this row (relative to the chunk).
    Quantize(usize, QuantError),
}

/// Reads whole rows of a chunk (`read(first_row, rows, out)`), quantizes them on up to
/// `threads` threads (each reading and quantizing its own slice) and measures the error.
/// On failure returns the first failing slice's error.
fn quantize_parallel(
    ty: GgmlType,
    read: &ReadRows<'_>,
    src: &mut [f32],
    dst: &mut [u8],
    row_len: usize,
    row_bytes: usize,
    threads: usize,
) -> Result<(f64, f64), WorkerError> {
    let n_rows = src.len() / row_len;
    let per = n_rows.div_ceil(threads.max(1)).max(1);
    let work = |row0: usize, x: &mut [f32], y: &mut [u8]| -> Result<(f64, f64), WorkerError> {
        read(row0, x.len() / row_len, x).map_err(WorkerError::Read)?;
        quantize_row(ty, x, y).map_err(|e| WorkerError::Quantize(row0, e))?;
        if ty == GgmlType::F32 {
            return Ok((0.0, x.iter().map(|&v| (v as f64) * (v as f64)).sum()));
        }
        // One row at a time into a small buffer: a whole-chunk one would be megabytes of
        // fresh zeroed pages per call.
        let mut back = vec![0f32; row_len];
        let (mut e, mut s) = (0f64, 0f64);
        for (xr, yr) in x.chunks_exact(row_len).zip(y.chunks_exact(row_bytes)) {
            dequantize_row(ty, yr, &mut back).map_err(|e| WorkerError::Quantize(row0, e))?;
            let (re, rs) = squared_sums(xr, &back);
            e += re;
            s += rs;
        }
        Ok((e, s))
    };
    if threads <= 1 || n_rows == 1 {
        return work(0, src, dst);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = src
            .chunks_mut(per * row_len)
            .zip(dst.chunks_mut(per * row_bytes))
            .enumerate()
            .map(|(i, (x, y))| scope.spawn(move || work(i * per, x, y)))
            .collect();
        let mut total = (0f64, 0f64);
        let mut first_err = None;
        for h in handles {
            match h.join().expect("quantize worker panicked") {
                Ok((e, s)) => {
                    total.0 += e;
                    total.1 += s;
                }
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    })
}
