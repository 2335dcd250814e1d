//! A small safe API over llama.cpp/ggml (`llama-cpp-sys-2`), used only by tests and benches
//! as a reference implementation. Never linked into the release binary.
//!
//! What it offers, each a thin wrapper over one ggml/llama.cpp entry point:
//! - block formats: [`quantize_chunk`], [`dequantize_row`], [`type_size`], [`block_size`],
//!   and the CPU backend's dot products: [`vec_dot_type`], [`from_float`], [`vec_dot`];
//! - ggml's CPU matrix multiplication on a persistent thread pool: [`MulMat`];
//! - GGUF: [`write_gguf`] through ggml's own `gguf_*` writer;
//! - whole models: [`Model`] / [`Context`] (logits for every position, greedy decoding,
//!   timing; [`ContextOptions`]: flash attention on/off, F32 KV cache, and capture of every
//!   named intermediate tensor for per-layer comparisons), [`Model::tokenize`], and
//!   [`quantize_model`] (`llama_model_quantize`);
//! - batched decode of many sequences in one `llama_decode` per step: [`BatchedContext`];
//! - LoRA adapters applied by llama.cpp: [`LoraAdapter`], [`Context::with_lora`].
//!
//! ggml aborts the process on a failed assert, so every wrapper validates sizes on the Rust
//! side first. Set `GGML_NO_BACKTRACE=1` (the workspace's `.cargo/config.toml` does) so an
//! abort does not try to attach gdb.

mod repack;

use llama_cpp_sys_2 as sys;
use std::ffi::{c_char, c_void, CString};
use std::fmt;
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

/// An error reported by the oracle (bad arguments, or llama.cpp refusing a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleError(pub String);

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "llama.cpp oracle: {}", self.0)
    }
}

impl std::error::Error for OracleError {}

pub type Result<T> = std::result::Result<T, OracleError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(OracleError(msg.into()))
}

static INIT: Once = Once::new();

extern "C" fn drop_log(_level: sys::ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

/// Initialises the backends once and silences llama.cpp's logging unless
/// `EDGEACT_ORACLE_LOG=1`.
fn init() {
    INIT.call_once(|| {
        // SAFETY: plain global initialisation calls with no arguments, or a 'static callback.
        unsafe {
            if std::env::var_os("EDGEACT_ORACLE_LOG").is_none() {
                sys::llama_log_set(Some(drop_log), std::ptr::null_mut());
                sys::ggml_log_set(Some(drop_log), std::ptr::null_mut());
            }
            sys::llama_backend_init();
            sys::ggml_cpu_init();
        }
    });
}

/// ggml types this oracle may be asked about. Ids are `enum ggml_type` values.
fn check_type(ty: u32) -> Result<sys::ggml_type> {
    if ty >= sys::GGML_TYPE_COUNT {
        return err(format!("ggml type id {ty} out of range"));
    }
    // SAFETY: id checked against GGML_TYPE_COUNT; ggml returns a static table entry.
    let traits = unsafe { &*sys::ggml_get_type_traits(ty as sys::ggml_type) };
    if traits.blck_size == 0 || traits.type_size == 0 {
        return err(format!("ggml type id {ty} is a removed type"));
    }
    Ok(ty as sys::ggml_type)
}

/// Elements per block of a ggml type.
pub fn block_size(ty: u32) -> Result<usize> {
    let t = check_type(ty)?;
    // SAFETY: t is a valid ggml type.
    Ok(unsafe { sys::ggml_blck_size(t) } as usize)
}

/// Bytes per block of a ggml type.
pub fn type_size(ty: u32) -> Result<usize> {
    let t = check_type(ty)?;
    // SAFETY: t is a valid ggml type.
    Ok(unsafe { sys::ggml_type_size(t) })
}

/// ggml's name for a type (`q4_K`, `f16`, ...).
pub fn type_name(ty: u32) -> Result<String> {
    let t = check_type(ty)?;
    // SAFETY: valid type; ggml returns a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(sys::ggml_type_name(t)) };
    Ok(name.to_string_lossy().into_owned())
}

fn row_bytes(ty: u32, n: usize) -> Result<usize> {
    let bs = block_size(ty)?;
    if !n.is_multiple_of(bs) {
        return err(format!(
            "row length {n} is not a multiple of block size {bs} of type {ty}"
        ));
    }
    Ok(n / bs * type_size(ty)?)
}

/// `ggml_quantize_chunk` without an importance matrix: `n_rows` rows of `n_per_row` floats.
pub fn quantize_chunk(ty: u32, src: &[f32], n_rows: usize, n_per_row: usize) -> Result<Vec<u8>> {
    init();
    let t = check_type(ty)?;
    let rb = row_bytes(ty, n_per_row)?;
    if src.len() != n_rows * n_per_row {
        return err(format!(
            "source has {} floats, expected {n_rows} x {n_per_row}",
            src.len()
        ));
    }
    // SAFETY: valid type; returns whether quantization needs an importance matrix.
    if unsafe { sys::ggml_quantize_requires_imatrix(t) } {
        return err(format!("type {ty} requires an importance matrix"));
    }
    let mut dst = vec![0u8; n_rows * rb];
    // SAFETY: src holds n_rows*n_per_row floats, dst holds n_rows rows of rb bytes (the size
    // ggml_row_size gives for this type and row length); no imatrix.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            t,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    if written != dst.len() {
        return err(format!("ggml wrote {written} bytes, expected {}", dst.len()));
    }
    Ok(dst)
}

/// ggml's `to_float` for one row of `n` elements stored in `src`.
pub fn dequantize_row(ty: u32, src: &[u8], n: usize) -> Result<Vec<f32>> {
    init();
    let t = check_type(ty)?;
    if src.len() != row_bytes(ty, n)? {
        return err(format!(
            "row of {n} elements of type {ty} needs {} bytes, got {}",
            row_bytes(ty, n)?,
            src.len()
        ));
    }
    // SAFETY: valid type; static traits table.
    let traits = unsafe { &*sys::ggml_get_type_traits(t) };
    let Some(to_float) = traits.to_float else {
        return err(format!("type {ty} has no to_float"));
    };
    let mut out = vec![0f32; n];
    // SAFETY: src holds exactly one row of n elements of this type; out holds n floats.
    unsafe { to_float(src.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    Ok(out)
}

/// The activation type the CPU backend pairs with weights of type `ty` in `vec_dot`.
pub fn vec_dot_type(ty: u32) -> Result<u32> {
    init();
    let t = check_type(ty)?;
    // SAFETY: valid type; static CPU traits table.
    let traits = unsafe { &*sys::ggml_get_type_traits_cpu(t) };
    Ok(traits.vec_dot_type as u32)
}

/// The CPU backend's (SIMD) `from_float` for type `ty` (used to quantize activations).
pub fn from_float(ty: u32, x: &[f32]) -> Result<Vec<u8>> {
    init();
    let t = check_type(ty)?;
    let mut out = vec![0u8; row_bytes(ty, x.len())?];
    // SAFETY: valid type; static CPU traits table.
    let traits = unsafe { &*sys::ggml_get_type_traits_cpu(t) };
    let Some(f) = traits.from_float else {
        return err(format!("type {ty} has no CPU from_float"));
    };
    // SAFETY: x holds n floats; out holds one row of n elements of this type.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    Ok(out)
}

/// The CPU backend's `vec_dot` of one weight row (type `ty`) with one activation row already
/// in [`vec_dot_type`]`(ty)`, both of `n` elements.
pub fn vec_dot(ty: u32, n: usize, weights: &[u8], activations: &[u8]) -> Result<f32> {
    init();
    let t = check_type(ty)?;
    let act_ty = vec_dot_type(ty)?;
    if weights.len() != row_bytes(ty, n)? || activations.len() != row_bytes(act_ty, n)? {
        return err(format!(
            "vec_dot sizes: weights {} (want {}), activations {} (want {})",
            weights.len(),
            row_bytes(ty, n)?,
            activations.len(),
            row_bytes(act_ty, n)?
        ));
    }
    // SAFETY: valid type; static CPU traits table.
    let traits = unsafe { &*sys::ggml_get_type_traits_cpu(t) };
    let Some(dot) = traits.vec_dot else {
        return err(format!("type {ty} has no CPU vec_dot"));
    };
    let mut s = 0f32;
    // SAFETY: both rows hold n elements of their types (checked above); nrc = 1 computes one
    // dot product, so the stride arguments are unused.
    unsafe {
        dot(
            n as i32,
            &mut s,
            0,
            weights.as_ptr().cast(),
            0,
            activations.as_ptr().cast(),
            0,
            1,
        )
    };
    Ok(s)
}

/// ggml's CPU matrix multiplication `out = W · x` on a graph built once, computed on a
/// persistent ggml thread pool, for benchmarking our kernels beside ggml's in one run.
/// `W` is `rows x cols` of type `ty` (row-major, as in GGUF); `x` is `n_tokens x cols` f32.
pub struct MulMat {
    ctx: *mut sys::ggml_context,
    graph: *mut sys::ggml_cgraph,
    x: *mut sys::ggml_tensor,
    out: *mut sys::ggml_tensor,
    threadpool: *mut sys::ggml_threadpool,
    work: Vec<u8>,
    plan: sys::ggml_cplan,
    len_x: usize,
    len_out: usize,
}

impl MulMat {
    pub fn new(ty: u32, weights: &[u8], rows: usize, cols: usize, n_tokens: usize, threads: usize) -> Result<MulMat> {
        init();
        let t = check_type(ty)?;
        if rows == 0 || n_tokens == 0 || threads == 0 || weights.len() != rows * row_bytes(ty, cols)? {
            return err(format!(
                "mul_mat: {} weight bytes do not match {rows} x {cols} of type {ty}",
                weights.len()
            ));
        }
        let mem = weights.len() + 4 * cols * n_tokens + 4 * rows * n_tokens + 16 * 1024 * 1024;
        let params = sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        };
        // SAFETY: plain constructor; freed in Drop.
        let ctx = unsafe { sys::ggml_init(params) };
        if ctx.is_null() {
            return err("ggml_init failed");
        }
        // SAFETY: ctx has room for all three tensors and the graph (sized above); the weight
        // tensor's buffer holds exactly weights.len() bytes (checked above).
        unsafe {
            let w = sys::ggml_new_tensor_2d(ctx, t, cols as i64, rows as i64);
            std::ptr::copy_nonoverlapping(weights.as_ptr(), (*w).data.cast::<u8>(), weights.len());
            let x = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F32, cols as i64, n_tokens as i64);
            let out = sys::ggml_mul_mat(ctx, w, x);
            let graph = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(graph, out);
            let mut tp_params = sys::ggml_threadpool_params_default(threads as i32);
            let threadpool = sys::ggml_threadpool_new(&mut tp_params);
            if threadpool.is_null() {
                sys::ggml_free(ctx);
                return err("ggml_threadpool_new failed");
            }
            let mut plan = sys::ggml_graph_plan(graph, threads as i32, threadpool);
            let mut work = vec![0u8; plan.work_size];
            plan.work_data = work.as_mut_ptr();
            Ok(MulMat {
                ctx,
                graph,
                x,
                out,
                threadpool,
                work,
                plan,
                len_x: cols * n_tokens,
                len_out: rows * n_tokens,
            })
        }
    }

    /// Computes `W · x` and returns `n_tokens x rows` floats (token-major, like our `matmul`).
    pub fn compute(&mut self, x: &[f32]) -> Result<&[f32]> {
        if x.len() != self.len_x {
            return err(format!("mul_mat: {} activations, expected {}", x.len(), self.len_x));
        }
        // SAFETY: the x tensor holds len_x floats; the plan's work buffer (self.work) is alive
        // and sized by ggml_graph_plan; out holds len_out floats after a successful compute.
        unsafe {
            std::ptr::copy_nonoverlapping(x.as_ptr(), (*self.x).data.cast::<f32>(), x.len());
            self.plan.work_data = self.work.as_mut_ptr();
            let status = sys::ggml_graph_compute(self.graph, &mut self.plan);
            if status != sys::GGML_STATUS_SUCCESS {
                return err(format!("ggml_graph_compute returned {status}"));
            }
            Ok(std::slice::from_raw_parts((*self.out).data.cast::<f32>(), self.len_out))
        }
    }
}

impl Drop for MulMat {
    fn drop(&mut self) {
        // SAFETY: both were created in new() and are freed exactly once.
        unsafe {
            sys::ggml_threadpool_free(self.threadpool);
            sys::ggml_free(self.ctx);
        }
    }
}

/// A metadata value for [`write_gguf`].
#[derive(Clone, Debug)]
pub enum KvValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    ArrStr(Vec<String>),
}

/// A tensor for [`write_gguf`]: `dims` in ggml order (`dims[0]` contiguous), raw bytes of `ty`.
pub struct GgufTensor<'a> {
    pub name: &'a str,
    pub ty: u32,
    pub dims: &'a [u64],
    pub data: &'a [u8],
}

/// Writes a GGUF file with ggml's own writer (`gguf_write_to_file`).
pub fn write_gguf(path: &Path, kvs: &[(&str, KvValue)], tensors: &[GgufTensor<'_>]) -> Result<()> {
    init();
    let cpath = cstring(path.to_str().ok_or_else(|| OracleError("non-UTF-8 path".into()))?)?;
    let mut total = 0usize;
    for t in tensors {
        if t.dims.is_empty() || t.dims.len() > 4 {
            return err(format!("tensor {}: {} dims", t.name, t.dims.len()));
        }
        let n: u64 = t.dims.iter().product();
        let rows = (n / t.dims[0]) as usize;
        if t.data.len() != rows * row_bytes(t.ty, t.dims[0] as usize)? {
            return err(format!(
                "tensor {}: {} bytes of data do not match its shape",
                t.name,
                t.data.len()
            ));
        }
        total += t.data.len() + 1024;
    }
    let params = sys::ggml_init_params {
        mem_size: total + 1024 * 1024,
        mem_buffer: std::ptr::null_mut(),
        no_alloc: false,
    };
    // SAFETY: plain constructor; the context owns its memory until ggml_free below.
    let ctx = unsafe { sys::ggml_init(params) };
    if ctx.is_null() {
        return err("ggml_init failed");
    }
    // SAFETY: plain constructor, freed below.
    let gguf = unsafe { sys::gguf_init_empty() };
    let result = (|| -> Result<()> {
        for (key, value) in kvs {
            let k = cstring(key)?;
            // SAFETY: gguf is a live context; k and string values are NUL-terminated and
            // outlive the calls (gguf copies them); array pointers cover their lengths.
            unsafe {
                match value {
                    KvValue::U8(v) => sys::gguf_set_val_u8(gguf, k.as_ptr(), *v),
                    KvValue::I8(v) => sys::gguf_set_val_i8(gguf, k.as_ptr(), *v),
                    KvValue::U16(v) => sys::gguf_set_val_u16(gguf, k.as_ptr(), *v),
                    KvValue::I16(v) => sys::gguf_set_val_i16(gguf, k.as_ptr(), *v),
                    KvValue::U32(v) => sys::gguf_set_val_u32(gguf, k.as_ptr(), *v),
                    KvValue::I32(v) => sys::gguf_set_val_i32(gguf, k.as_ptr(), *v),
                    KvValue::F32(v) => sys::gguf_set_val_f32(gguf, k.as_ptr(), *v),
                    KvValue::Bool(v) => sys::gguf_set_val_bool(gguf, k.as_ptr(), *v),
                    KvValue::U64(v) => sys::gguf_set_val_u64(gguf, k.as_ptr(), *v),
                    KvValue::I64(v) => sys::gguf_set_val_i64(gguf, k.as_ptr(), *v),
                    KvValue::F64(v) => sys::gguf_set_val_f64(gguf, k.as_ptr(), *v),
                    KvValue::Str(s) => {
                        let s = cstring(s)?;
                        sys::gguf_set_val_str(gguf, k.as_ptr(), s.as_ptr())
                    }
                    KvValue::ArrI32(v) => {
                        sys::gguf_set_arr_data(gguf, k.as_ptr(), sys::GGUF_TYPE_INT32, v.as_ptr().cast(), v.len())
                    }
                    KvValue::ArrF32(v) => {
                        sys::gguf_set_arr_data(gguf, k.as_ptr(), sys::GGUF_TYPE_FLOAT32, v.as_ptr().cast(), v.len())
                    }
                    KvValue::ArrStr(v) => {
                        let owned = v.iter().map(|s| cstring(s)).collect::<Result<Vec<_>>>()?;
                        let mut ptrs: Vec<*const c_char> = owned.iter().map(|s| s.as_ptr()).collect();
                        sys::gguf_set_arr_str(gguf, k.as_ptr(), ptrs.as_mut_ptr(), ptrs.len())
                    }
                }
            }
        }
        for t in tensors {
            let ty = check_type(t.ty)?;
            let ne: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
            let name = cstring(t.name)?;
            // SAFETY: ctx has room for every tensor (sized above); ne has dims.len() entries;
            // the new tensor's data buffer holds exactly t.data.len() bytes (checked above).
            unsafe {
                let tensor = sys::ggml_new_tensor(ctx, ty, ne.len() as i32, ne.as_ptr());
                if tensor.is_null() {
                    return err(format!("ggml_new_tensor failed for {}", t.name));
                }
                sys::ggml_set_name(tensor, name.as_ptr());
                std::ptr::copy_nonoverlapping(t.data.as_ptr(), (*tensor).data.cast::<u8>(), t.data.len());
                sys::gguf_add_tensor(gguf, tensor);
            }
        }
        // SAFETY: live gguf context and NUL-terminated path.
        if !unsafe { sys::gguf_write_to_file(gguf, cpath.as_ptr(), false) } {
            return err(format!("gguf_write_to_file failed for {}", path.display()));
        }
        Ok(())
    })();
    // SAFETY: both were created above and are freed exactly once.
    unsafe {
        sys::gguf_free(gguf);
        sys::ggml_free(ctx);
    }
    result
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| OracleError(format!("string contains NUL: {s:?}")))
}

/// `llama_ftype` values for [`quantize_model`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftype {
    F32,
    F16,
    Q4_0,
    Q8_0,
    Q4KM,
}

impl Ftype {
    fn raw(self) -> sys::llama_ftype {
        match self {
            Ftype::F32 => sys::LLAMA_FTYPE_ALL_F32,
            Ftype::F16 => sys::LLAMA_FTYPE_MOSTLY_F16,
            Ftype::Q4_0 => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            Ftype::Q8_0 => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
            Ftype::Q4KM => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        }
    }
}

/// llama.cpp's own model quantizer (`llama-quantize`), for comparing quantized models.
pub fn quantize_model(input: &Path, output: &Path, ftype: Ftype, threads: usize) -> Result<()> {
    init();
    let inp = cstring(input.to_str().ok_or_else(|| OracleError("non-UTF-8 path".into()))?)?;
    let out = cstring(output.to_str().ok_or_else(|| OracleError("non-UTF-8 path".into()))?)?;
    // SAFETY: returns a plain struct of defaults.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = threads as i32;
    params.ftype = ftype.raw();
    params.allow_requantize = true;
    // SAFETY: NUL-terminated paths and a valid params struct living across the call.
    let rc = unsafe { sys::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        return err(format!("llama_model_quantize({}) returned {rc}", input.display()));
    }
    Ok(())
}

/// A model loaded by llama.cpp (CPU only, mmap'ed).
pub struct Model {
    raw: *mut sys::llama_model,
}

// SAFETY: a llama_model is immutable after loading and documented as shareable between
// contexts on different threads.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

/// Where llama.cpp keeps a loaded model's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBuffers {
    /// In place in the file mapping (`llama-bench --no-repack`), as edgeact's default reads
    /// most formats.
    Mapped,
    /// Repacked for llama.cpp's CPU kernels (its default), leaving out the AMX buffer type on
    /// AMX CPUs (see `repack`).
    Repacked,
    /// llama.cpp's default untouched: on AMX CPUs its AMX buffer type too, whose matmul
    /// crashed in every prompt batch on an Intel Xeon VM. For decode-only runs.
    RepackedWithAmx,
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, false, WeightBuffers::Repacked)
    }

    /// Loads a model without llama.cpp's weight repacking (`llama-bench --no-repack`): the
    /// CPU backend then reads the weights in place from the file mapping, as edgeact does by
    /// default.
    pub fn load_no_repack(path: &Path) -> Result<Model> {
        Self::load_with(path, false, WeightBuffers::Mapped)
    }

    /// Loads a model with its weights where `buffers` says.
    pub fn load_into(path: &Path, buffers: WeightBuffers) -> Result<Model> {
        Self::load_with(path, false, buffers)
    }

    /// Loads only the vocabulary (tokenizer comparisons on vocab-only GGUFs).
    pub fn load_vocab_only(path: &Path) -> Result<Model> {
        Self::load_with(path, true, WeightBuffers::Mapped)
    }

    fn load_with(path: &Path, vocab_only: bool, buffers: WeightBuffers) -> Result<Model> {
        init();
        if !path.is_file() {
            return err(format!("{} is not a file", path.display()));
        }
        let p = cstring(path.to_str().ok_or_else(|| OracleError("non-UTF-8 path".into()))?)?;
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.n_gpu_layers = 0;
        params.vocab_only = vocab_only;
        // "Extra buffer types" are where llama.cpp repacks weights for its CPU kernels; on
        // AMX CPUs only its CPU_REPACK one is used unless asked for (see `repack`). A vocabulary
        // loads no weights (`load_vocab_only` asks for them mapped).
        let (extra_bufts, overrides) = match buffers {
            WeightBuffers::Mapped => (false, None),
            WeightBuffers::RepackedWithAmx => (true, None),
            WeightBuffers::Repacked if !repack::cpu_has_amx() => (true, None),
            WeightBuffers::Repacked => (false, repack::overrides(path)?),
        };
        params.use_extra_bufts = extra_bufts;
        if let Some(overrides) = &overrides {
            params.tensor_buft_overrides = overrides.as_ptr();
        }
        // SAFETY: NUL-terminated path, valid params; the overrides they point to live past the call.
        let raw = unsafe { sys::llama_model_load_from_file(p.as_ptr(), params) };
        if raw.is_null() {
            return err(format!("llama.cpp could not load {}", path.display()));
        }
        Ok(Model { raw })
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: live model.
        unsafe { sys::llama_model_get_vocab(self.raw) }
    }

    pub fn n_vocab(&self) -> usize {
        // SAFETY: live vocab.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) as usize }
    }

    pub fn bos(&self) -> u32 {
        // SAFETY: live vocab.
        unsafe { sys::llama_vocab_bos(self.vocab()) as u32 }
    }

    pub fn eos(&self) -> u32 {
        // SAFETY: live vocab.
        unsafe { sys::llama_vocab_eos(self.vocab()) as u32 }
    }

    /// `llama_tokenize` (`add_special` adds BOS where the model asks for it).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut cap = text.len() + 8;
        loop {
            let mut out = vec![0i32; cap];
            // SAFETY: text pointer/length describe a valid UTF-8 buffer; out holds cap tokens.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    text.len() as i32,
                    out.as_mut_ptr(),
                    cap as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out.into_iter().map(|t| t as u32).collect());
            }
            if n == i32::MIN {
                return err("tokenization overflow");
            }
            cap = (-n) as usize;
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: created by llama_model_load_from_file, freed once.
        unsafe { sys::llama_model_free(self.raw) }
    }
}

/// How llama.cpp computes attention in a [`Context`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashAttention {
    /// llama.cpp's default: flash attention where the backend supports it (the CPU does).
    #[default]
    Auto,
    /// The separate `K·Q`, softmax, `V·softmax` graph (llama.cpp's default before mid-2025).
    Off,
}

/// Options of a [`Context`] beyond its size.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextOptions {
    pub flash_attention: FlashAttention,
    /// Keep the KV cache in F32 instead of llama.cpp's default F16.
    pub kv_f32: bool,
    /// Record the F32 intermediate tensors of every graph (see [`Context::captured`]).
    pub capture: bool,
}

/// One intermediate tensor as llama.cpp computed it: its graph name (`"attn_norm-3"`,
/// `"kqv_out-3"`, `"result_output"`, ...), its sizes `ne` (ggml order, innermost first), and
/// its values in ggml's row-major order.
#[derive(Clone, Debug)]
pub struct CapturedTensor {
    pub name: String,
    pub ne: [usize; 4],
    pub data: Vec<f32>,
}

/// The tensors captured so far, shared with the eval callback.
type Captures = std::sync::Mutex<Vec<CapturedTensor>>;

/// `cb_eval`: asked first whether a node is wanted (every contiguous F32 node is), then called
/// again with the node computed.
unsafe extern "C" fn capture_tensor(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: ggml passes a live tensor; `user` is the `Captures` boxed by the context, which
    // outlives it.
    let (tensor, captures) = unsafe { (&*t, &*(user as *const Captures)) };
    // SAFETY: live tensor.
    let wanted = tensor.type_ == sys::GGML_TYPE_F32 && unsafe { sys::ggml_is_contiguous(t) };
    if ask {
        return wanted;
    }
    if !wanted {
        // Returning false here would abort the graph.
        return true;
    }
    // SAFETY: the name is a NUL-terminated array inside the tensor.
    let name = unsafe { std::ffi::CStr::from_ptr(sys::ggml_get_name(t)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: live tensor.
    let bytes = unsafe { sys::ggml_nbytes(t) };
    let mut data = vec![0f32; bytes / 4];
    // SAFETY: `data` holds `bytes` bytes; the node has been computed (ask == false).
    unsafe { sys::ggml_backend_tensor_get(t, data.as_mut_ptr().cast(), 0, bytes) };
    let ne = tensor.ne.map(|n| n as usize);
    captures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(CapturedTensor { name, ne, data });
    true
}

/// A llama.cpp inference context over one sequence.
pub struct Context<'m> {
    model: &'m Model,
    raw: *mut sys::llama_context,
    n_past: usize,
    n_ctx: usize,
    n_batch: usize,
    captures: Option<Box<Captures>>,
}

impl<'m> Context<'m> {
    /// A context of `n_ctx` positions computing with `threads` threads (decode and batch).
    pub fn new(model: &'m Model, n_ctx: usize, threads: usize) -> Result<Context<'m>> {
        Self::with_options(model, n_ctx, threads, ContextOptions::default())
    }

    /// Like [`Context::new`] with attention, KV cache type and capture chosen by `opts`.
    pub fn with_options(model: &'m Model, n_ctx: usize, threads: usize, opts: ContextOptions) -> Result<Context<'m>> {
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_context_default_params() };
        let n_batch = n_ctx.clamp(1, 512);
        params.n_ctx = n_ctx as u32;
        params.n_batch = n_batch as u32;
        params.n_ubatch = n_batch as u32;
        params.n_threads = threads as i32;
        params.n_threads_batch = threads as i32;
        params.no_perf = true;
        params.flash_attn_type = match opts.flash_attention {
            FlashAttention::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        if opts.kv_f32 {
            params.type_k = sys::GGML_TYPE_F32;
            params.type_v = sys::GGML_TYPE_F32;
        }
        let captures = opts.capture.then(|| Box::new(Captures::default()));
        if let Some(c) = &captures {
            params.cb_eval = Some(capture_tensor);
            params.cb_eval_user_data = (&**c as *const Captures).cast_mut().cast();
        }
        // SAFETY: live model, valid params; the capture box outlives the context (dropped
        // after it, see Drop).
        let raw = unsafe { sys::llama_init_from_model(model.raw, params) };
        if raw.is_null() {
            return err("llama_init_from_model failed");
        }
        Ok(Context {
            model,
            raw,
            n_past: 0,
            n_ctx,
            n_batch,
            captures,
        })
    }

    /// Takes the tensors captured since the last call, in the order llama.cpp computed them
    /// (empty unless the context was made with `capture`).
    pub fn captured(&mut self) -> Vec<CapturedTensor> {
        match &self.captures {
            Some(c) => std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Forgets every cached position.
    pub fn clear(&mut self) {
        // SAFETY: live context; clears its KV memory.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.raw), true) };
        self.n_past = 0;
    }

    /// Appends `tokens` and returns the logits of every one of them (`tokens.len() * n_vocab`).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.decode(tokens, true)
    }

    /// Appends `tokens` and returns the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.decode(tokens, false)
    }

    fn decode(&mut self, tokens: &[u32], all: bool) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return err("eval of no tokens");
        }
        if self.n_past + tokens.len() > self.n_ctx {
            return err(format!(
                "context full: {} + {} > {}",
                self.n_past,
                tokens.len(),
                self.n_ctx
            ));
        }
        let n_vocab = self.model.n_vocab();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return err(format!("token {bad} out of vocabulary ({n_vocab})"));
        }
        let mut logits = Vec::with_capacity(if all { tokens.len() * n_vocab } else { n_vocab });
        let n_chunks = tokens.len().div_ceil(self.n_batch);
        for (chunk_idx, chunk) in tokens.chunks(self.n_batch).enumerate() {
            // SAFETY: allocates a batch for chunk.len() tokens of one sequence; freed below.
            let mut batch = unsafe { sys::llama_batch_init(chunk.len() as i32, 0, 1) };
            for (i, &tok) in chunk.iter().enumerate() {
                let last = chunk_idx + 1 == n_chunks && i + 1 == chunk.len();
                // SAFETY: every array of the batch holds chunk.len() entries; seq_id[i] holds 1.
                unsafe {
                    *batch.token.add(i) = tok as i32;
                    *batch.pos.add(i) = (self.n_past + i) as i32;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = 0;
                    *batch.logits.add(i) = (all || last) as i8;
                }
            }
            batch.n_tokens = chunk.len() as i32;
            // SAFETY: live context and a fully initialised batch.
            let rc = unsafe { sys::llama_decode(self.raw, batch) };
            if rc != 0 {
                // SAFETY: batch from llama_batch_init, freed once.
                unsafe { sys::llama_batch_free(batch) };
                return err(format!("llama_decode returned {rc}"));
            }
            for i in 0..chunk.len() {
                // SAFETY: as above; reads the logits flag we set.
                let wanted = unsafe { *batch.logits.add(i) } != 0;
                if wanted {
                    // SAFETY: row i was requested, so llama.cpp holds n_vocab logits for it.
                    let row =
                        unsafe { std::slice::from_raw_parts(sys::llama_get_logits_ith(self.raw, i as i32), n_vocab) };
                    logits.extend_from_slice(row);
                }
            }
            // SAFETY: batch from llama_batch_init, freed once.
            unsafe { sys::llama_batch_free(batch) };
            self.n_past += chunk.len();
        }
        Ok(logits)
    }

    /// Greedy decoding: evaluates `prompt`, then appends the argmax token `n` times (stopping at
    /// EOS), returning the generated ids.
    pub fn greedy(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut logits = self.eval(prompt)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let next = argmax(&logits);
            out.push(next);
            if next == self.model.eos() || self.n_past >= self.n_ctx {
                break;
            }
            logits = self.eval(&[next])?;
        }
        Ok(out)
    }

    /// Forgets the cached positions from `n` on (keeps `0..n`).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.n_past {
            return;
        }
        // SAFETY: live context; removes positions n.. of sequence 0 from its KV memory.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.raw), 0, n as i32, -1) };
        self.n_past = n;
    }

    /// llama-bench's two tests on this context at context depth `n_depth` (llama-bench's `-d`):
    /// a prompt of `n_prompt` tokens in batches (pp) and `n_gen` single-token decodes (tg), each
    /// after the same `n_depth` tokens in the KV cache, returning (pp tokens/s, tg tokens/s).
    /// The depth is evaluated (not timed) only when the cache holds fewer than `n_depth`
    /// positions; otherwise the cache is truncated back to `n_depth` (speed does not depend on
    /// which ids fill it), so repetitions pay for the depth once.
    pub fn bench(&mut self, n_prompt: usize, n_gen: usize, n_depth: usize) -> Result<(f64, f64)> {
        let bos = self.model.bos();
        let n_vocab = self.model.n_vocab() as u32;
        if n_depth + n_prompt.max(n_gen) > self.n_ctx {
            return err(format!(
                "bench at depth {n_depth} with pp{n_prompt}/tg{n_gen} needs more than the context's {} positions",
                self.n_ctx
            ));
        }
        // Position i holds the same id in every call.
        let token = |i: usize| {
            if i == 0 {
                bos
            } else {
                (i as u32).wrapping_mul(7919) % n_vocab
            }
        };
        if self.n_past < n_depth {
            self.clear();
            if n_depth > 0 {
                let depth: Vec<u32> = (0..n_depth).map(token).collect();
                self.eval(&depth)?;
            }
        }
        let prompt: Vec<u32> = (n_depth..n_depth + n_prompt).map(token).collect();
        self.truncate(n_depth);
        let pp = if n_prompt > 0 {
            let t = Instant::now();
            self.eval(&prompt)?;
            n_prompt as f64 / secs(t.elapsed())
        } else {
            0.0
        };
        self.truncate(n_depth);
        let tg = if n_gen > 0 {
            let t = Instant::now();
            let mut tok = bos;
            for _ in 0..n_gen {
                let logits = self.eval(&[tok])?;
                tok = argmax(&logits);
            }
            n_gen as f64 / secs(t.elapsed())
        } else {
            0.0
        };
        Ok((pp, tg))
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model, freed once.
        unsafe { sys::llama_free(self.raw) }
    }
}

/// llama.cpp's largest `n_seq_max` (`LLAMA_MAX_SEQ`).
pub const MAX_SEQUENCES: usize = 256;

/// A `llama_batch` from `llama_batch_init` for up to `cap` tokens of one sequence id each,
/// freed on drop.
struct Batch {
    raw: sys::llama_batch,
    cap: usize,
}

impl Batch {
    fn new(cap: usize) -> Batch {
        // SAFETY: allocates token/pos/n_seq_id/logits arrays of `cap` entries and `cap` seq_id
        // arrays of one id each (no embeddings); freed once in Drop.
        let raw = unsafe { sys::llama_batch_init(cap as i32, 0, 1) };
        Batch { raw, cap }
    }

    /// Sets the batch to `entries`: (token, position, sequence id, logits wanted).
    fn set(&mut self, entries: impl ExactSizeIterator<Item = (u32, usize, usize, bool)>) {
        assert!(
            entries.len() <= self.cap,
            "batch of {} tokens, room for {}",
            entries.len(),
            self.cap
        );
        self.raw.n_tokens = entries.len() as i32;
        for (i, (tok, pos, seq, logits)) in entries.enumerate() {
            // SAFETY: i < cap (asserted above), and every array of the batch holds cap entries;
            // seq_id[i] points at room for one id.
            unsafe {
                *self.raw.token.add(i) = tok as i32;
                *self.raw.pos.add(i) = pos as i32;
                *self.raw.n_seq_id.add(i) = 1;
                *(*self.raw.seq_id.add(i)) = seq as i32;
                *self.raw.logits.add(i) = logits as i8;
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: from llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

/// A llama.cpp context over `n_seqs` sequences decoded together, as llama-batched-bench runs
/// them: `n_seq_max = n_seqs`, `n_ctx = n_seqs * per_seq` split into one KV stream per sequence
/// (not unified; llama.cpp rounds each stream up to a multiple of 256 cells), and each decode
/// step one `llama_decode` over a batch holding one token of every sequence (token i at
/// sequence id i), logits requested for all of them.
pub struct BatchedContext<'m> {
    model: &'m Model,
    raw: *mut sys::llama_context,
    n_seqs: usize,
    per_seq: usize,
}

impl<'m> BatchedContext<'m> {
    /// `n_seqs` sequences (1..=[`MAX_SEQUENCES`]) of up to `per_seq` positions each, computing
    /// with `threads` threads.
    pub fn new(model: &'m Model, n_seqs: usize, per_seq: usize, threads: usize) -> Result<BatchedContext<'m>> {
        if n_seqs == 0 || n_seqs > MAX_SEQUENCES {
            return err(format!("{n_seqs} sequences; llama.cpp takes 1..={MAX_SEQUENCES}"));
        }
        if per_seq == 0 || threads == 0 {
            return err("a batched context needs positions and threads");
        }
        let n_ctx = n_seqs
            .checked_mul(per_seq)
            .filter(|&n| n <= u32::MAX as usize / 2)
            .ok_or_else(|| OracleError(format!("{n_seqs} x {per_seq} positions overflow")))?;
        // Big enough for every sequence's whole context in one batch (the prefill).
        let n_batch = n_ctx.max(512);
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.n_ctx = n_ctx as u32;
        params.n_batch = n_batch as u32;
        params.n_ubatch = n_batch as u32;
        params.n_seq_max = n_seqs as u32;
        params.kv_unified = false;
        params.n_threads = threads as i32;
        params.n_threads_batch = threads as i32;
        params.no_perf = true;
        // SAFETY: live model, valid params (n_seq_max checked against LLAMA_MAX_SEQ above).
        let raw = unsafe { sys::llama_init_from_model(model.raw, params) };
        if raw.is_null() {
            return err("llama_init_from_model failed");
        }
        Ok(BatchedContext {
            model,
            raw,
            n_seqs,
            per_seq,
        })
    }

    pub fn n_seqs(&self) -> usize {
        self.n_seqs
    }

    /// The prompt sequence `seq` starts from in [`BatchedContext::bench`]: BOS and a token of
    /// its own (the same ids as `edgeact bench --parallel`).
    pub fn prompt(&self, seq: usize) -> [u32; 2] {
        let n_vocab = self.model.n_vocab() as u32;
        [
            self.model.bos(),
            (seq as u32).wrapping_mul(7919).wrapping_add(1) % n_vocab,
        ]
    }

    fn decode(&mut self, batch: &Batch) -> Result<()> {
        // SAFETY: live context and a batch whose first n_tokens entries are set.
        let rc = unsafe { sys::llama_decode(self.raw, batch.raw) };
        if rc != 0 {
            return err(format!("llama_decode returned {rc}"));
        }
        Ok(())
    }

    /// Argmax of the logits of batch row `i` (requested when the batch was set).
    fn argmax_row(&self, i: usize) -> Result<u32> {
        let n_vocab = self.model.n_vocab();
        // SAFETY: live context; returns null for a row without logits, else n_vocab floats.
        let ptr = unsafe { sys::llama_get_logits_ith(self.raw, i as i32) };
        if ptr.is_null() {
            return err(format!("no logits for batch row {i}"));
        }
        // SAFETY: non-null row of n_vocab logits owned by the context, read before the next
        // decode.
        Ok(argmax(unsafe { std::slice::from_raw_parts(ptr, n_vocab) }))
    }

    /// Aggregate decode speed: clears every sequence, prefills each with its
    /// [`BatchedContext::prompt`] in one untimed `llama_decode`, then times `n_gen` steps, each
    /// one `llama_decode` of one token per sequence (the argmax of its last logits). Returns
    /// `n_seqs * n_gen / seconds`.
    pub fn bench(&mut self, n_gen: usize) -> Result<f64> {
        if n_gen == 0 {
            return err("a batched bench needs generated tokens");
        }
        let prompt_len = self.prompt(0).len();
        if prompt_len + n_gen > self.per_seq {
            return err(format!(
                "{prompt_len} prompt + {n_gen} generated positions do not fit {} per sequence",
                self.per_seq
            ));
        }
        // SAFETY: live context; clears its KV memory of every sequence.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.raw), true) };
        let n = self.n_seqs;
        let mut batch = Batch::new(n * prompt_len);
        let prefill: Vec<_> = (0..n)
            .flat_map(|seq| {
                let p = self.prompt(seq);
                (0..p.len()).map(move |pos| (p[pos], pos, seq, pos + 1 == p.len()))
            })
            .collect();
        batch.set(prefill.into_iter());
        self.decode(&batch)?;
        let mut next: Vec<u32> = (0..n)
            .map(|s| self.argmax_row(s * prompt_len + prompt_len - 1))
            .collect::<Result<_>>()?;
        let start = Instant::now();
        for step in 0..n_gen {
            batch.set(
                next.iter()
                    .enumerate()
                    .map(|(seq, &tok)| (tok, prompt_len + step, seq, true)),
            );
            self.decode(&batch)?;
            for (i, tok) in next.iter_mut().enumerate() {
                *tok = self.argmax_row(i)?;
            }
        }
        Ok((n * n_gen) as f64 / secs(start.elapsed()))
    }
}

impl Drop for BatchedContext<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model, freed once.
        unsafe { sys::llama_free(self.raw) }
    }
}

/// Index of the largest logit (the first one on ties, as llama.cpp's greedy sampler does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A LoRA adapter loaded by llama.cpp (`llama_adapter_lora_init`) for one [`Model`]; use it
/// in contexts with [`Context::with_lora`]. Freed on drop, which the borrow keeps before the
/// model's.
pub struct LoraAdapter<'m> {
    raw: *mut sys::llama_adapter_lora,
    _model: &'m Model,
}

impl<'m> LoraAdapter<'m> {
    /// Loads a GGUF LoRA adapter file for `model` (llama.cpp checks its type, architecture
    /// and every tensor's shape against the model, and refuses it otherwise).
    pub fn load(model: &'m Model, path: &Path) -> Result<LoraAdapter<'m>> {
        if !path.is_file() {
            return err(format!("{} is not a file", path.display()));
        }
        let p = cstring(path.to_str().ok_or_else(|| OracleError("non-UTF-8 path".into()))?)?;
        // SAFETY: live model, NUL-terminated path; returns NULL on any error.
        let raw = unsafe { sys::llama_adapter_lora_init(model.raw, p.as_ptr()) };
        if raw.is_null() {
            return err(format!("llama.cpp could not load the LoRA adapter {}", path.display()));
        }
        Ok(LoraAdapter { raw, _model: model })
    }
}

impl Drop for LoraAdapter<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_adapter_lora_init, freed once, before its model (borrowed).
        unsafe { sys::llama_adapter_lora_free(self.raw) }
    }
}

impl<'m> Context<'m> {
    /// A context like [`Context::with_options`] whose forward pass adds each adapter's
    /// `scale · alpha/r · B·A` term (`llama_set_adapters_lora`). The adapters must outlive the
    /// context.
    pub fn with_lora(
        model: &'m Model,
        n_ctx: usize,
        threads: usize,
        opts: ContextOptions,
        adapters: &[(&'m LoraAdapter<'m>, f32)],
    ) -> Result<Context<'m>> {
        let ctx = Self::with_options(model, n_ctx, threads, opts)?;
        let mut raws: Vec<*mut sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.raw).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|&(_, s)| s).collect();
        // SAFETY: live context; `raws` and `scales` hold `adapters.len()` entries each, and
        // every adapter belongs to this context's model and outlives the context ('m).
        let rc = unsafe { sys::llama_set_adapters_lora(ctx.raw, raws.as_mut_ptr(), raws.len(), scales.as_mut_ptr()) };
        if rc != 0 {
            return err(format!("llama_set_adapters_lora returned {rc}"));
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table_matches_ggml_common() {
        assert_eq!(block_size(2).unwrap(), 32); // Q4_0
        assert_eq!(type_size(2).unwrap(), 18);
        assert_eq!(type_size(12).unwrap(), 144); // Q4_K
        assert_eq!(type_name(14).unwrap(), "q6_K");
        assert!(block_size(4).is_err()); // removed Q4_2
        assert!(block_size(10_000).is_err());
    }

    #[test]
    fn q8_0_round_trip() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 7.0).collect();
        let q = quantize_chunk(8, &x, 2, 32).unwrap();
        assert_eq!(q.len(), 2 * 34);
        let y = dequantize_row(8, &q[..34], 32).unwrap();
        for (a, b) in x[..32].iter().zip(&y) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        assert!(quantize_chunk(8, &x, 1, 33).is_err());
    }

    #[test]
    fn vec_dot_matches_float_dot() {
        let w: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let a: Vec<f32> = (0..256).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
        for ty in [2u32, 8, 12, 14] {
            let wq = quantize_chunk(ty, &w, 1, 256).unwrap();
            let aq = from_float(vec_dot_type(ty).unwrap(), &a).unwrap();
            let d = vec_dot(ty, 256, &wq, &aq).unwrap();
            assert!(
                (d - exact).abs() < 0.05 * exact.abs().max(1.0) + 1.0,
                "type {ty}: {d} vs {exact}"
            );
        }
    }

    #[test]
    fn llama_cpp_reproduces_stories260k_golden_ids() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K/stories260K-f32-v3.gguf");
        let model = Model::load(&path).unwrap();
        assert_eq!(model.n_vocab(), 512);
        let mut ctx = Context::new(&model, 256, 2).unwrap();
        let ids = ctx.greedy(&[model.bos()], 20).unwrap();
        let golden = [
            403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
        ];
        assert_eq!(ids, golden);
        ctx.clear();
        let all = ctx.eval_all(&[1, 403, 407]).unwrap();
        assert_eq!(all.len(), 3 * 512);
        assert!((all[403] - 17.02352).abs() < 1e-3, "position-0 logit {}", all[403]);
    }

    #[test]
    fn context_options_and_capture() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K/stories260K-f32-v3.gguf");
        let model = Model::load(&path).unwrap();
        for flash_attention in [FlashAttention::Auto, FlashAttention::Off] {
            for kv_f32 in [false, true] {
                let opts = ContextOptions {
                    flash_attention,
                    kv_f32,
                    capture: true,
                };
                let mut ctx = Context::with_options(&model, 64, 2, opts).unwrap();
                let logits = ctx.eval(&[1, 403, 407]).unwrap();
                let captured = ctx.captured();
                let names: Vec<&str> = captured.iter().map(|t| t.name.as_str()).collect();
                for want in ["attn_norm-0", "kqv_out-0", "ffn_out-4", "l_out-4", "result_norm"] {
                    assert!(names.contains(&want), "{want} not among {names:?}");
                }
                // The graph's last node is the logits we were handed.
                let out = captured.iter().rev().find(|t| t.name == "result_output").unwrap();
                assert_eq!(out.ne[0], 512);
                assert_eq!(&out.data[out.data.len() - 512..], &logits[..]);
                // Flash attention off builds the separate softmax node.
                let softmax = names.iter().any(|n| n.starts_with("kq_soft_max"));
                assert_eq!(softmax, flash_attention == FlashAttention::Off, "{flash_attention:?}");
                assert!(ctx.captured().is_empty(), "taken once");
                ctx.clear();
                let ids = ctx.greedy(&[model.bos()], 5).unwrap();
                assert_eq!(ids, [403, 407, 261, 378, 432], "{flash_attention:?} kv_f32={kv_f32}");
            }
        }
    }

    #[test]
    fn bench_at_depth_keeps_the_depth_and_bounds_the_context() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K/stories260K-f32-v3.gguf");
        let model = Model::load(&path).unwrap();
        let mut ctx = Context::new(&model, 40, 2).unwrap();
        let (pp, tg) = ctx.bench(8, 4, 24).unwrap();
        assert!(pp > 0.0 && tg > 0.0, "{pp} {tg}");
        // The cache ends at depth + tg; the next run truncates back to the depth.
        assert_eq!(ctx.n_past(), 28);
        // pp16 fills the context exactly; it is truncated back to the depth afterwards.
        ctx.bench(16, 0, 24).unwrap();
        assert_eq!(ctx.n_past(), 24);
        assert!(ctx.bench(17, 0, 24).is_err());
        // Truncation keeps the prefix: the next token's logits equal a fresh evaluation's.
        ctx.clear();
        let fresh = ctx.eval(&[1, 403, 407]).unwrap();
        ctx.eval(&[261, 378]).unwrap();
        ctx.truncate(2);
        assert_eq!(ctx.n_past(), 2);
        let again = ctx.eval(&[407]).unwrap();
        let diff = fresh
            .iter()
            .zip(&again)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn batched_bench_decodes_many_sequences() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K/stories260K-f32-v3.gguf");
        let model = Model::load(&path).unwrap();
        let mut ctx = BatchedContext::new(&model, 3, 8, 2).unwrap();
        assert_eq!(ctx.prompt(0)[0], model.bos());
        assert_ne!(ctx.prompt(1), ctx.prompt(2));
        let tps = ctx.bench(6).unwrap();
        assert!(tps.is_finite() && tps > 0.0, "{tps}");
        // Reusable, and the context bounds the generated length.
        assert!(ctx.bench(6).unwrap() > 0.0);
        assert!(ctx.bench(7).is_err());
        assert!(BatchedContext::new(&model, 0, 8, 2).is_err());
        assert!(BatchedContext::new(&model, MAX_SEQUENCES + 1, 8, 2).is_err());
    }

    #[test]
    fn ggml_writes_a_gguf_file() {
        let dir = std::env::temp_dir().join(format!("edgeact-oracle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.gguf");
        let data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        write_gguf(
            &path,
            &[
                ("general.architecture", KvValue::Str("llama".into())),
                ("x.list", KvValue::ArrStr(vec!["a".into(), "b".into()])),
            ],
            &[GgufTensor {
                name: "t",
                ty: 0,
                dims: &[16, 4],
                data: &data,
            }],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mul_mat_matches_vec_dot() {
        let (rows, cols, n) = (8usize, 256usize, 3usize);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let wq = quantize_chunk(8, &w, rows, cols).unwrap();
        let mut mm = MulMat::new(8, &wq, rows, cols, n, 2).unwrap();
        let out = mm.compute(&x).unwrap().to_vec();
        assert_eq!(out.len(), rows * n);
        let rb = 34 * cols / 32;
        for t in 0..n {
            let act = from_float(vec_dot_type(8).unwrap(), &x[t * cols..(t + 1) * cols]).unwrap();
            for r in 0..rows {
                let d = vec_dot(8, cols, &wq[r * rb..(r + 1) * rb], &act).unwrap();
                assert!(
                    (out[t * rows + r] - d).abs() < 1e-3,
                    "token {t} row {r}: {} vs {d}",
                    out[t * rows + r]
                );
            }
        }
        assert!(MulMat::new(8, &wq[1..], rows, cols, n, 2).is_err());
    }
}
