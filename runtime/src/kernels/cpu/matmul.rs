//! The quantized matrix multiply the model uses: `out[t*rows + r] = w[r] . x[t]`; the runner
//! that validates a call, picks its path ([`choose_path`], in `dispatch.rs`) and runs it.
//!
//! Activations are quantized once per call to the weight type's partner format (the table's
//! `act` column: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants; float
//! weights keep f32 activations), as ggml does, then every dot product is an integer kernel.
//! Decode (`n_tokens == 1`) splits rows over the pool. Prefill tiles rows x tokens: a task owns
//! a block of rows and a block of tokens, and every weight row is multiplied with several
//! tokens per kernel call (each weight block is unpacked once per tile), while the token
//! block's activations stay in L2.

use super::act_quant;
use super::dispatch::{choose_path, CpuFeatures, MatmulPath};
use super::scalar;
use super::table::act_type;
use super::types::{Activations, QMatrix, SyncPtr, DOT_MAX_T};
use super::{backend, Backend, KernelError, ThreadPool};
use crate::quant::{dequantize_row, GgmlType};

#[cfg(target_arch = "x86_64")]
use super::{
    avx2, avx2_packed, avx512, avx512_gemv,
    types::{PackedActivations, PackedMatrix, PANEL_ROWS},
};
#[cfg(target_arch = "aarch64")]
use super::{
    neon, neon_packed,
    neon_packed::PanelActivations,
    types::{PackedMatrix, PANEL_ROWS},
};

/// Rows per prefill task.
const ROW_BLOCK: usize = 16;
/// Tokens per prefill task: their quantized activations (~4.5 KiB per 4096-wide token) stay
/// in L2 while the task's rows stream past.
const TOKEN_BLOCK: usize = 32;

fn act_row_bytes(ty: GgmlType, cols: usize) -> usize {
    let a = act_type(ty);
    cols / a.block_size() * a.type_size()
}

/// Weight bytes below which a decode task is not worth waking a worker for (~10 µs of work).
const MIN_TASK_BYTES: usize = 128 << 10;

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
    /// Bytes per token.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
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
            GgmlType::Q8_0 => act_quant::row_q8_0(xs, bytemuck::cast_slice_mut(row)),
            GgmlType::Q8_1 => act_quant::row_q8_1(xs, bytemuck::cast_slice_mut(row)),
            _ => act_quant::row_q8_k(xs, bytemuck::cast_slice_mut(row)),
        };
        r.expect("activation rows are sized by their own block size");
    };
    // Below ~32K elements (a few tokens of a 4096-wide model, or a 135M model's decode
    // batch) waking the workers costs more than the rounding.
    if n_tokens * cols >= 1 << 15 {
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
pub(super) fn checked_call<'a>(
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
    let call = Call {
        backend,
        pool,
        w: &w,
        acts,
        arb,
        n_tokens,
    };
    let cpu = CpuFeatures::detect();
    let path = choose_path(backend, cpu, w.ty, w.packed.is_some(), n_tokens);
    // SAFETY: `checked_call` checked `backend.is_available()` and `path` comes from
    // `choose_path` for this backend, this CPU and this matrix.
    let out = match unsafe { decode_plan(&call, path, out) } {
        Ok(plan) => {
            plan.run(pool);
            return Ok(());
        }
        Err(out) => out,
    };
    match path {
        MatmulPath::FileDecode
        | MatmulPath::PackedDecodeVnni
        | MatmulPath::PackedDecodeAvx2
        | MatmulPath::PackedDecodeNeon => unreachable!("decode paths run as plans"),
        MatmulPath::FileTiles => run_file_tiles(&call, out),
        // SAFETY (all x86 paths): `checked_call` checked `backend.is_available()` (AVX2, FMA,
        // F16C, and AVX-512 F/BW/VL for avx512), `choose_path` returns the VNNI paths only
        // when the CPU has VNNI and the `Packed*` paths only when `w.packed` is set,
        // `cpu.amx_int8` is `amx::available()`; `acts`
        // holds n_tokens activation rows of `w.cols` elements and `out` n_tokens * rows floats.
        #[cfg(target_arch = "x86_64")]
        MatmulPath::PackedTilesAvx2 => unsafe { run_packed_tiles_avx2(&call, out) },
        // The panels read `w.packed` when it is set and the file layout otherwise.
        #[cfg(target_arch = "x86_64")]
        MatmulPath::PackedPanelsVnni | MatmulPath::FilePanelsVnni => unsafe {
            avx512::matmul_panels(pool, &w, acts, arb, n_tokens, out, cpu.amx_int8)
        },
        #[cfg(not(target_arch = "x86_64"))]
        MatmulPath::PackedTilesAvx2 | MatmulPath::PackedPanelsVnni | MatmulPath::FilePanelsVnni => {
            unreachable!("choose_path picks x86 paths only for the x86 backends, unavailable here")
        }
        // SAFETY: `choose_path` returns it only for the Neon backend (available: aarch64), with
        // `w.packed` set and a type with NEON panels; `acts` holds n_tokens activation rows of
        // `w.cols` elements and `out` n_tokens * rows floats.
        #[cfg(target_arch = "aarch64")]
        MatmulPath::PackedTilesNeon => unsafe { run_packed_tiles_neon(&call, out) },
        #[cfg(not(target_arch = "aarch64"))]
        MatmulPath::PackedTilesNeon => {
            unreachable!("choose_path picks NEON paths only for the Neon backend, unavailable here")
        }
    }
    Ok(())
}

/// One validated matmul call, as the runners take it: `acts` holds `n_tokens` activation rows
/// of `arb` bytes each (quantized, or the f32 input for float weights).
pub(super) struct Call<'c, 'w> {
    pub(super) backend: Backend,
    pub(super) pool: &'c ThreadPool,
    pub(super) w: &'c QMatrix<'w>,
    pub(super) acts: &'c [u8],
    pub(super) arb: usize,
    pub(super) n_tokens: usize,
}

/// The tasks of one matmul as a parallel-for, to run alone ([`Plan::run`]) or, with the plans
/// of other matrices that read the same activations, in one pool run (`group.rs`): a pool
/// run's wake-up and final wait cost microseconds, a large share of a small model's matvec.
pub(super) struct Plan<'a> {
    pub(super) n_tasks: usize,
    pub(super) task: Box<dyn Fn(usize) + Sync + 'a>,
}

impl Plan<'_> {
    pub(super) fn run(&self, pool: &ThreadPool) {
        pool.run(self.n_tasks, &*self.task);
    }
}

impl Call<'_, '_> {
    fn act(&self, t: usize) -> &[u8] {
        &self.acts[t * self.arb..(t + 1) * self.arb]
    }

    /// Every token's activation row prepared for the kernels for repacked weights.
    #[cfg(target_arch = "x86_64")]
    fn packed_acts(&self) -> Vec<PackedActivations> {
        (0..self.n_tokens)
            .map(|t| PackedActivations::new(self.w.ty, self.act(t)))
            .collect()
    }
}

/// The plan of a decode path ([`MatmulPath::is_decode`]), or `out` back for the other paths,
/// which run their own pool jobs.
///
/// # Safety
/// `path` must be what `choose_path` returns for `c.backend` (available on this CPU), this CPU's
/// features and `c.w`; `c.acts` must hold `c.n_tokens` activation rows of `c.w.cols` elements
/// and `out` `c.n_tokens * c.w.rows` floats.
pub(super) unsafe fn decode_plan<'a>(
    c: &'a Call,
    path: MatmulPath,
    out: &'a mut [f32],
) -> Result<Plan<'a>, &'a mut [f32]> {
    // SAFETY (x86 and NEON plans): the caller's contract is each plan maker's.
    match path {
        MatmulPath::FileDecode => Ok(file_decode_plan(c, out)),
        #[cfg(target_arch = "x86_64")]
        MatmulPath::PackedDecodeVnni => Ok(unsafe { packed_decode_plan(c, true, out) }),
        #[cfg(target_arch = "x86_64")]
        MatmulPath::PackedDecodeAvx2 => Ok(unsafe { packed_decode_plan(c, false, out) }),
        #[cfg(target_arch = "aarch64")]
        MatmulPath::PackedDecodeNeon => Ok(unsafe { packed_decode_neon_plan(c, out) }),
        _ => Err(out),
    }
}

/// [`MatmulPath::FileDecode`]: one token, the path's tile kernel per row.
fn file_decode_plan<'a>(c: &'a Call, out: &'a mut [f32]) -> Plan<'a> {
    let (w, backend) = (c.w, c.backend);
    let (rows, n) = (w.rows, w.cols);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // A few chunks per thread so the dynamic scheduler can even out stragglers.
    let n_chunks = decode_tasks(c.pool, w.data.len(), rows);
    let per = rows.div_ceil(n_chunks);
    let a0 = c.act(0);
    let task = move |chunk: usize| {
        let mut o = [0f32];
        for r in chunk * per..((chunk + 1) * per).min(rows) {
            tile(backend, w.ty, n, w.row(r), &[a0], &mut o);
            // SAFETY: r < rows, so the index is inside `out`, and row r belongs to this chunk
            // only; the plan borrows `out` for as long as it can run.
            unsafe { *out_ptr.get().add(r) = o[0] };
        }
    };
    Plan {
        n_tasks: rows.div_ceil(per),
        task: Box::new(task),
    }
}

/// [`MatmulPath::FileTiles`]: tasks of [`ROW_BLOCK`] rows x [`TOKEN_BLOCK`] tokens, each row
/// times up to the path's tile width of tokens per kernel call.
fn run_file_tiles(c: &Call, out: &mut [f32]) {
    let (w, backend, n_tokens) = (c.w, c.backend, c.n_tokens);
    let (rows, n) = (w.rows, w.cols);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let n_rb = rows.div_ceil(ROW_BLOCK);
    let n_tb = n_tokens.div_ceil(TOKEN_BLOCK);
    c.pool.run(n_rb * n_tb, &|task| {
        // Token block outermost, so threads working at the same time share activations.
        let (tb, rb) = (task / n_rb, task % n_rb);
        let tokens = tb * TOKEN_BLOCK..((tb + 1) * TOKEN_BLOCK).min(n_tokens);
        for r in rb * ROW_BLOCK..((rb + 1) * ROW_BLOCK).min(rows) {
            row_times_tokens(
                backend,
                w.ty,
                n,
                w.row(r),
                tokens.clone(),
                |t| c.act(t),
                |t, v| {
                    // SAFETY: t < n_tokens and r < rows, so the index is inside `out`, and each
                    // (t, r) pair is written by exactly one task; `out` outlives the pool's `run`.
                    unsafe { *out_ptr.get().add(t * rows + r) = v };
                },
            );
        }
    });
}

/// [`MatmulPath::PackedDecodeVnni`] (`vnni`) and [`MatmulPath::PackedDecodeAvx2`]: chunks of
/// panels of the repacked weights, every token of the call against each panel.
///
/// # Safety
/// `w.packed` must be set; the CPU must have AVX2/FMA/F16C, and with `vnni` AVX-512
/// F/BW/VL/VNNI (then up to [`SMALL_BATCH`](super::dispatch::SMALL_BATCH) tokens, else one).
#[cfg(target_arch = "x86_64")]
unsafe fn packed_decode_plan<'a>(c: &'a Call, vnni: bool, out: &'a mut [f32]) -> Plan<'a> {
    let (w, n_tokens) = (c.w, c.n_tokens);
    let packed: &PackedMatrix = w.packed.expect("choose_path: a Packed* path needs the repacked form");
    let xs = c.packed_acts();
    let n_panels = packed.n_panels();
    // A few chunks per thread so the dynamic scheduler can even out stragglers. Each panel is
    // read once for all tokens but multiplied with each: the work grows with the token count,
    // so a matrix too small to split for one token (a 135M model's) is split for several.
    let per = n_panels.div_ceil(decode_tasks(c.pool, w.data.len() * n_tokens, n_panels));
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let rows = w.rows;
    let q4_0_streams = super::prefetch::policy().q4_0_streams();
    debug_assert!(vnni || n_tokens == 1);
    let task = move |chunk: usize| {
        let first = chunk * per * PANEL_ROWS;
        let end = ((chunk + 1) * per * PANEL_ROWS).min(rows);
        // SAFETY: chunk owns rows first..end of every token's output row, which no other task
        // writes, and the plan borrows `out` (n_tokens * rows floats) for as long as it can
        // run; the plan's maker checked the CPU, and each of `xs` was made from an activation
        // row of this matrix's width.
        unsafe {
            if vnni {
                avx512_gemv::matvec_packed(packed, &xs, chunk * per, end - first, out_ptr.get(), rows, q4_0_streams);
            } else {
                let o = std::slice::from_raw_parts_mut(out_ptr.get().add(first), end - first);
                avx2_packed::matvec_packed(packed, &xs[0], chunk * per, o);
            }
        }
    };
    Plan {
        n_tasks: n_panels.div_ceil(per),
        task: Box::new(task),
    }
}

/// [`MatmulPath::PackedTilesAvx2`]: micro-tiles of tokens over the repacked weights.
///
/// # Safety
/// `w.packed` must be set and the CPU must have AVX2/FMA/F16C.
#[cfg(target_arch = "x86_64")]
unsafe fn run_packed_tiles_avx2(c: &Call, out: &mut [f32]) {
    let packed = c.w.packed.expect("choose_path: a Packed* path needs the repacked form");
    let xs = c.packed_acts();
    // SAFETY: the caller checked AVX2/FMA/F16C; each of `xs` comes from an activation row of
    // `w.cols` elements, and `out` holds n_tokens * rows floats.
    unsafe { avx2_packed::matmul_packed(c.pool, packed, &xs, out) };
}

/// [`MatmulPath::PackedDecodeNeon`]: chunks of panels of the repacked weights, one token.
///
/// # Safety
/// `w.packed` must be set, of a type with NEON panels (the table's `neon_panels`), and
/// `n_tokens == 1`.
#[cfg(target_arch = "aarch64")]
unsafe fn packed_decode_neon_plan<'a>(c: &'a Call, out: &'a mut [f32]) -> Plan<'a> {
    let w = c.w;
    let packed: &PackedMatrix = w.packed.expect("choose_path: a Packed* path needs the repacked form");
    debug_assert!(c.n_tokens == 1 && super::table::neon_panels(w.ty));
    let x = PanelActivations::new(w.ty, c.act(0));
    let n_panels = packed.n_panels();
    // A few chunks per thread so the dynamic scheduler can even out stragglers.
    let per = n_panels.div_ceil(decode_tasks(c.pool, w.data.len(), n_panels));
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let rows = w.rows;
    let task = move |chunk: usize| {
        let first = chunk * per * PANEL_ROWS;
        let end = ((chunk + 1) * per * PANEL_ROWS).min(rows);
        // SAFETY: chunk owns rows first..end of the output, which no other task writes, and
        // the plan borrows `out` (rows floats) for as long as it can run; the plan's maker
        // checked the type, and `x` was made from an activation row of this matrix's width.
        unsafe {
            let o = std::slice::from_raw_parts_mut(out_ptr.get().add(first), end - first);
            neon_packed::matvec_packed(packed, &x, chunk * per, o);
        }
    };
    Plan {
        n_tasks: n_panels.div_ceil(per),
        task: Box::new(task),
    }
}

/// [`MatmulPath::PackedTilesNeon`]: micro-tiles of tokens over the repacked weights.
///
/// # Safety
/// `w.packed` must be set, of a type with NEON panels (the table's `neon_panels`).
#[cfg(target_arch = "aarch64")]
unsafe fn run_packed_tiles_neon(c: &Call, out: &mut [f32]) {
    let packed = c.w.packed.expect("choose_path: a Packed* path needs the repacked form");
    debug_assert!(super::table::neon_panels(c.w.ty));
    let xs: Vec<PanelActivations> = (0..c.n_tokens)
        .map(|t| PanelActivations::new(c.w.ty, c.act(t)))
        .collect();
    // SAFETY: the caller checked the type; each of `xs` comes from an activation row of
    // `w.cols` elements, and `out` holds n_tokens * rows floats.
    unsafe { neon_packed::matmul_packed(c.pool, packed, &xs, out) };
}

/// One weight row against up to [`DOT_MAX_T`] activation rows through `backend`: the tile
/// kernel of that instruction set for `ty` (each kernel file's `tile` picks it by type).
/// The caller guarantees `backend.is_available()` and the row lengths.
pub(crate) fn tile(backend: Backend, ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    match backend {
        // SAFETY: callers only pass backends for which `is_available()` returned true, so the
        // CPU has the features these functions are compiled for; row sizes were validated.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { avx2::tile(ty, n, w, acts, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { avx512::tile(ty, n, w, acts, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Backend::Neon => unsafe { neon::tile(ty, n, w, acts, out) },
        _ => scalar::tile(ty, n, w, acts, out),
    }
}
