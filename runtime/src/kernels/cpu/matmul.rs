//! The quantized matrix multiply the model uses: `out[t*rows + r] = w[r] . x[t]`.
//!
//! Activations are quantized once per call to the weight type's partner format, as ggml
//! does (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants; float weights keep f32
//! activations), then every dot product is an integer kernel. Decode (`n_tokens == 1`) splits
//! rows over the pool. Prefill tiles rows x tokens: a task owns a block of rows and a block of
//! tokens, and every weight row is multiplied with several tokens per kernel call (each weight
//! block is unpacked once per tile), while the token block's activations stay in L2.

use super::repack::PackedMatrix;
use super::{backend, tile, Backend, KernelError, ThreadPool, DOT_MAX_T};
use crate::quant::{dequantize_row, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, GgmlType};

/// How a matmul with quantized weights treats the activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activations {
    /// Quantized per token to the weight type's partner format ([`act_type`]), then integer
    /// dot products: ggml's CPU arithmetic, and the fast one.
    #[default]
    Quantized,
    /// Kept in f32 against weight rows dequantized to f32.
    F32,
}

impl Activations {
    pub fn name(self) -> &'static str {
        match self {
            Activations::Quantized => "quantized",
            Activations::F32 => "f32",
        }
    }
}

impl std::str::FromStr for Activations {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quantized" | "q8" => Ok(Activations::Quantized),
            "f32" => Ok(Activations::F32),
            _ => Err(format!(
                "unknown activation arithmetic `{s}` (expected quantized or f32)"
            )),
        }
    }
}

impl std::fmt::Display for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Weight types with a matmul kernel.
pub const SUPPORTED: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Whether [`matmul`] has a kernel for weights of type `ty` (check at model load).
pub fn supported(ty: GgmlType) -> bool {
    SUPPORTED.contains(&ty)
}

/// Rows per prefill task.
const ROW_BLOCK: usize = 16;
/// Tokens per prefill task: their quantized activations (~4.5 KiB per 4096-wide token) stay
/// in L2 while the task's rows stream past.
const TOKEN_BLOCK: usize = 32;

/// A row-major weight matrix borrowed from a model file: each of `rows` rows is `cols`
/// elements of `ty`; optionally also the same matrix repacked (see [`PackedMatrix`]), which the
/// x86 SIMD paths (AVX2, AVX-512) then read instead of `data`.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub packed: Option<&'a PackedMatrix>,
}

impl<'a> QMatrix<'a> {
    /// Checks the type has a kernel, `cols` is a whole number of blocks and `data` holds
    /// exactly `rows` rows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, KernelError> {
        if !SUPPORTED.contains(&ty) {
            return Err(KernelError::UnsupportedType(ty));
        }
        let block = ty.block_size();
        if !cols.is_multiple_of(block) {
            return Err(KernelError::Columns { ty, cols, block });
        }
        let expected = (cols / block)
            .checked_mul(ty.type_size())
            .and_then(|rb| rb.checked_mul(rows));
        if expected != Some(data.len()) {
            return Err(KernelError::DataSize {
                ty,
                rows,
                cols,
                expected: expected.unwrap_or(usize::MAX),
                got: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
            packed: None,
        })
    }

    /// Attaches the repacked form of this same matrix.
    pub fn with_packed(self, packed: &'a PackedMatrix) -> Result<Self, KernelError> {
        if self.ty != packed.ty() || packed.rows() != self.rows || packed.cols() != self.cols {
            return Err(KernelError::Packed {
                ty: self.ty,
                rows: self.rows,
                cols: self.cols,
            });
        }
        Ok(QMatrix {
            packed: Some(packed),
            ..self
        })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// The activation format paired with weights of type `ty`.
pub fn act_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => GgmlType::Q8_K,
        _ => GgmlType::F32,
    }
}

fn act_row_bytes(ty: GgmlType, cols: usize) -> usize {
    let a = act_type(ty);
    cols / a.block_size() * a.type_size()
}

/// A raw pointer the pool's tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr<T>(pub(super) *mut T);
// SAFETY: only used for writes to disjoint elements (each task's own rows/tokens), and the
// pool's `run` returns only after every task is done.
unsafe impl<T> Sync for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Send for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// Through a method so closures capture the whole (Sync) wrapper, not the raw field.
    pub(super) fn get(&self) -> *mut T {
        self.0
    }
}

/// Weight bytes below which a decode task is not worth waking a worker for (~10 µs of work).
const MIN_TASK_BYTES: usize = 128 << 10;

/// Most tokens the repacked VNNI decode kernel takes at once (a batch of decodes of several
/// sequences): each weight panel is read from memory once for all of them, and each token's
/// result is the one it gets alone. Larger chunks (prefill) go to the panel GEMM.
const SMALL_BATCH: usize = 16;

/// How many tasks a decode matvec over `bytes` of weights in `units` rows (or panels) is split
/// into: a few per thread, so the dynamic scheduler evens out stragglers, but none smaller
/// than [`MIN_TASK_BYTES`] (tiny models run faster on one thread than with wake-ups).
fn decode_tasks(pool: &ThreadPool, bytes: usize, units: usize) -> usize {
    (pool.n_threads() * 4).min(units).min(bytes / MIN_TASK_BYTES).max(1)
}

/// Quantized activations: 4-byte-aligned storage (Q8_K holds an f32), `row_bytes` per token.
pub struct QuantizedActivations {
    buf: Vec<u32>,
    len: usize,
    row_bytes: usize,
}

impl QuantizedActivations {
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.buf)[..self.len]
    }
    pub fn row(&self, t: usize) -> &[u8] {
        &self.bytes()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Quantizes `n_tokens` rows of `cols` floats to the partner format of `ty` (tokens spread
/// over the pool). Returns `None` for float weights, which use `x` as is.
pub fn quantize_activations(pool: &ThreadPool, ty: GgmlType, x: &[f32], cols: usize) -> Option<QuantizedActivations> {
    let aty = act_type(ty);
    if aty == GgmlType::F32 || cols == 0 {
        return None;
    }
    let n_tokens = x.len() / cols;
    let row_bytes = act_row_bytes(ty, cols);
    let len = n_tokens * row_bytes;
    let mut buf = vec![0u32; len.div_ceil(4)];
    let base = SyncPtr(bytemuck::cast_slice_mut::<u32, u8>(&mut buf).as_mut_ptr());
    let quantize = |t: usize| {
        // SAFETY: token t's row lies inside `buf` (len <= 4 * buf.len()) and no other task
        // writes it; the pool finishes all tasks before `buf` is used again.
        let row = unsafe { std::slice::from_raw_parts_mut(base.get().add(t * row_bytes), row_bytes) };
        let xs = &x[t * cols..(t + 1) * cols];
        // Rows start at multiples of the block size from a 4-aligned base, and every partner
        // block size (34, 36, 292) keeps the block alignment, so the casts cannot fail; the
        // lengths match by construction, so neither can the quantizers.
        let r = match aty {
            GgmlType::Q8_0 => quantize_row_q8_0(xs, bytemuck::cast_slice_mut(row)),
            GgmlType::Q8_1 => quantize_row_q8_1(xs, bytemuck::cast_slice_mut(row)),
            _ => quantize_row_q8_k(xs, bytemuck::cast_slice_mut(row)),
        };
        r.expect("activation rows are sized by their own block size");
    };
    if n_tokens >= 4 {
        pool.run(n_tokens, &quantize);
    } else {
        (0..n_tokens).for_each(quantize);
    }
    Some(QuantizedActivations { buf, len, row_bytes })
}

/// Dot product of one weight row of type `ty` (`n` elements) with one activation row already
/// in [`act_type`]`(ty)` (little-endian f32 bytes for float weights), through `backend`.
/// The building block of [`matmul`], exposed for tests against ggml.
pub fn vec_dot(backend: Backend, ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Result<f32, KernelError> {
    if !backend.is_available() {
        return Err(KernelError::Unavailable(backend));
    }
    let m = QMatrix::new(ty, 1, n, w)?;
    let arb = act_row_bytes(ty, n);
    if a.len() != arb {
        return Err(KernelError::Length {
            what: "activation row bytes",
            expected: arb,
            got: a.len(),
        });
    }
    let mut out = [0f32];
    tile(backend, ty, n, m.data, &[a], &mut out);
    Ok(out[0])
}

/// `out[t*rows + r] = dot(row r of w, x[t*cols..(t+1)*cols])` for `t` in `0..n_tokens`,
/// on the process-wide [`backend`].
///
/// # Panics
/// If `x` or `out` has the wrong length (see [`try_matmul`] for the checked form).
pub fn matmul(pool: &ThreadPool, w: &QMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    if let Err(e) = try_matmul(pool, w, x, n_tokens, out) {
        panic!("matmul: {e}");
    }
}

/// [`matmul`] returning length errors instead of panicking.
pub fn try_matmul(
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    try_matmul_with(backend(), pool, w, x, n_tokens, out)
}

/// [`matmul`] through an explicit path (tests and benches compare paths in one process).
///
/// # Panics
/// If the lengths are wrong or `backend` is not available on this CPU.
pub fn matmul_with(backend: Backend, pool: &ThreadPool, w: &QMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    if let Err(e) = try_matmul_with(backend, pool, w, x, n_tokens, out) {
        panic!("matmul: {e}");
    }
}

/// Validates a matmul call; `None` when there is nothing to compute (`out` is then final).
fn checked_call<'a>(
    backend: Backend,
    w: &QMatrix<'a>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<Option<QMatrix<'a>>, KernelError> {
    if !backend.is_available() {
        return Err(KernelError::Unavailable(backend));
    }
    // Re-validate: the fields are public, so `w` need not come from `QMatrix::new`.
    let w = match w.packed {
        Some(p) => QMatrix::new(w.ty, w.rows, w.cols, w.data)?.with_packed(p)?,
        None => QMatrix::new(w.ty, w.rows, w.cols, w.data)?,
    };
    let check = |what, expected: Option<usize>, got| match expected {
        Some(e) if e == got => Ok(()),
        _ => Err(KernelError::Length {
            what,
            expected: expected.unwrap_or(usize::MAX),
            got,
        }),
    };
    check("x", n_tokens.checked_mul(w.cols), x.len())?;
    check("out", n_tokens.checked_mul(w.rows), out.len())?;
    if n_tokens == 0 || w.rows == 0 {
        return Ok(None);
    }
    if w.cols == 0 {
        out.fill(0.0);
        return Ok(None);
    }
    Ok(Some(w))
}

/// [`try_matmul_with`] with the activation arithmetic chosen by `activations`.
pub fn try_matmul_as(
    backend: Backend,
    activations: Activations,
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    // Float weights never quantize their activations: both arithmetics are the same.
    if activations == Activations::Quantized || act_type(w.ty) == GgmlType::F32 {
        return try_matmul_with(backend, pool, w, x, n_tokens, out);
    }
    let Some(w) = checked_call(backend, w, x, n_tokens, out)? else {
        return Ok(());
    };
    let (rows, cols) = (w.rows, w.cols);
    let x_bytes: &[u8] = bytemuck::cast_slice(x);
    let act = |t: usize| &x_bytes[t * cols * 4..(t + 1) * cols * 4];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Each task dequantizes its rows once and multiplies every token with them.
    let per = if n_tokens == 1 {
        rows.div_ceil(decode_tasks(pool, w.data.len(), rows))
    } else {
        ROW_BLOCK
    };
    pool.run(rows.div_ceil(per), &|c| {
        let mut row = vec![0f32; cols];
        for r in c * per..((c + 1) * per).min(rows) {
            // `QMatrix::new` checked the type has a kernel (all dequantize) and the row size.
            dequantize_row(w.ty, w.row(r), &mut row).expect("validated row");
            let wr: &[u8] = bytemuck::cast_slice(&row);
            row_times_tokens(backend, GgmlType::F32, cols, wr, 0..n_tokens, act, |t, v| {
                // SAFETY: row r belongs to this task only and t < n_tokens, so the index is
                // inside `out` and written once; `out` outlives the pool's `run`.
                unsafe { *out_ptr.get().add(t * rows + r) = v };
            });
        }
    });
    Ok(())
}

/// One weight row `wr` (`n` elements of `ty`) times the activation rows `act(t)` of `tokens`,
/// in tiles of up to the path's tile width; `write(t, product)` receives each result.
fn row_times_tokens<'a>(
    backend: Backend,
    ty: GgmlType,
    n: usize,
    wr: &[u8],
    tokens: std::ops::Range<usize>,
    act: impl Fn(usize) -> &'a [u8],
    mut write: impl FnMut(usize, f32),
) {
    let tt = backend.tile_tokens().min(DOT_MAX_T);
    let mut o = [0f32; DOT_MAX_T];
    let mut a: [&[u8]; DOT_MAX_T] = [&[]; DOT_MAX_T];
    let mut t0 = tokens.start;
    while t0 < tokens.end {
        let nt = tt.min(tokens.end - t0);
        for (i, s) in a[..nt].iter_mut().enumerate() {
            *s = act(t0 + i);
        }
        tile(backend, ty, n, wr, &a[..nt], &mut o[..nt]);
        for (i, &v) in o[..nt].iter().enumerate() {
            write(t0 + i, v);
        }
        t0 += nt;
    }
}

/// The checked form of [`matmul_with`].
pub fn try_matmul_with(
    backend: Backend,
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Some(w) = checked_call(backend, w, x, n_tokens, out)? else {
        return Ok(());
    };
    let quantized = quantize_activations(pool, w.ty, x, w.cols);
    let (acts, arb): (&[u8], usize) = match &quantized {
        Some(q) => (q.bytes(), q.row_bytes),
        None => (bytemuck::cast_slice(x), w.cols * 4),
    };
    // Repacked weights: AVX-512 VNNI kernels where the CPU has VNNI and the path is avx512,
    // the AVX2 ones for avx2 (and avx512 without VNNI); scalar and NEON read `w.data`.
    #[cfg(target_arch = "x86_64")]
    if let Some(packed) = w
        .packed
        .filter(|_| matches!(backend, Backend::Avx2 | Backend::Avx512) && super::repack::repack_supported())
    {
        use super::repack::{PackedActivations, PANEL_ROWS};
        let vnni = backend == Backend::Avx512 && is_x86_feature_detected!("avx512vnni");
        if n_tokens == 1 || (vnni && n_tokens <= SMALL_BATCH) {
            let xs: Vec<PackedActivations> = (0..n_tokens)
                .map(|t| PackedActivations::new(w.ty, &acts[t * arb..(t + 1) * arb]))
                .collect();
            let n_panels = packed.n_panels();
            // A few chunks per thread so the dynamic scheduler can even out stragglers.
            let per = n_panels.div_ceil(decode_tasks(pool, w.data.len(), n_panels));
            let out_ptr = SyncPtr(out.as_mut_ptr());
            let rows = w.rows;
            pool.run(n_panels.div_ceil(per), &|c| {
                let first = c * per * PANEL_ROWS;
                let end = ((c + 1) * per * PANEL_ROWS).min(rows);
                // SAFETY: chunk c owns rows first..end of every token's output row, which no
                // other task writes, and `out` (n_tokens * rows floats, checked above) outlives
                // the pool's `run`; `backend.is_available()` (and for the VNNI kernel the
                // feature check above) checked the CPU, and each of `xs` was made from an
                // activation row of this matrix's width.
                unsafe {
                    if vnni {
                        super::avx512_gemv::matvec_packed(packed, &xs, c * per, end - first, out_ptr.get(), rows);
                    } else {
                        let o = std::slice::from_raw_parts_mut(out_ptr.get().add(first), end - first);
                        super::avx2_packed::matvec_packed(packed, &xs[0], c * per, o);
                    }
                }
            });
        } else if vnni {
            // SAFETY: as below; the panel path reads the repacked form.
            unsafe { super::avx512::matmul_panels(pool, &w, acts, arb, n_tokens, out) };
        } else {
            let xs: Vec<PackedActivations> = (0..n_tokens)
                .map(|t| PackedActivations::new(w.ty, &acts[t * arb..(t + 1) * arb]))
                .collect();
            // SAFETY: `backend.is_available()` checked AVX2/FMA/F16C (both paths require them);
            // each of `xs` comes from an activation row of `w.cols` elements, and `out` holds
            // n_tokens * rows floats (checked above).
            unsafe { super::avx2_packed::matmul_packed(pool, packed, &xs, out) };
        }
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx512 && n_tokens >= super::avx512::MIN_TOKENS && super::avx512::panel_supported(w.ty) {
        // SAFETY: `backend.is_available()` was checked above and `panel_supported` checked
        // VNNI; `acts` holds n_tokens rows of `arb` bytes and `out` n_tokens * rows floats.
        unsafe { super::avx512::matmul_panels(pool, &w, acts, arb, n_tokens, out) };
        return Ok(());
    }
    let act = |t: usize| &acts[t * arb..(t + 1) * arb];
    let rows = w.rows;
    let n = w.cols;
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let write = |t: usize, r: usize, v: f32| {
        // SAFETY: t < n_tokens and r < rows, so the index is inside `out`, and each (t, r)
        // pair is written by exactly one task; `out` outlives the pool's `run`.
        unsafe { *out_ptr.get().add(t * rows + r) = v };
    };

    if n_tokens == 1 {
        // Decode: a few chunks per thread so the dynamic scheduler can even out stragglers.
        let n_chunks = decode_tasks(pool, w.data.len(), rows);
        let per = rows.div_ceil(n_chunks);
        let a0 = act(0);
        pool.run(rows.div_ceil(per), &|c| {
            let mut o = [0f32];
            for r in c * per..((c + 1) * per).min(rows) {
                tile(backend, w.ty, n, w.row(r), &[a0], &mut o);
                write(0, r, o[0]);
            }
        });
        return Ok(());
    }

    let n_rb = rows.div_ceil(ROW_BLOCK);
    let n_tb = n_tokens.div_ceil(TOKEN_BLOCK);
    pool.run(n_rb * n_tb, &|task| {
        // Token block outermost, so threads working at the same time share activations.
        let (tb, rb) = (task / n_rb, task % n_rb);
        let tokens = tb * TOKEN_BLOCK..((tb + 1) * TOKEN_BLOCK).min(n_tokens);
        for r in rb * ROW_BLOCK..((rb + 1) * ROW_BLOCK).min(rows) {
            row_times_tokens(backend, w.ty, n, w.row(r), tokens.clone(), act, |t, v| write(t, r, v));
        }
    });
    Ok(())
}
