//! The types the kernels and the matmul runner share: the weight matrix ([`QMatrix`]) and its
//! repacked form ([`PackedMatrix`], made by `repack.rs`), activation handling
//! ([`Activations`], [`PackedActivations`]), and the pointer the pool's tasks write through
//! ([`SyncPtr`]). A leaf: it imports no kernel, so imports flow one way, from the runner
//! (`matmul.rs`) to the kernels to this module.

use super::table::supported;
use super::KernelError;
use crate::quant::GgmlType;

/// The most activation rows one tile kernel call takes.
pub const DOT_MAX_T: usize = 8;

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

/// A row-major weight matrix borrowed from a model file: each of `rows` rows is `cols`
/// elements of `ty`; optionally also the same matrix repacked (see [`PackedMatrix`]), which the
/// SIMD paths with panel kernels (AVX2, AVX-512, NEON) then read instead of `data`.
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
        if !supported(ty) {
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

/// Rows per panel: the 16 i32 lanes of a 512-bit vector (two 256-bit vectors with AVX2).
pub const PANEL_ROWS: usize = 16;

/// One 64-byte line, aligned for 512-bit (and aligned 256-bit) loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line(pub(super) [u8; 64]);

/// Lines per panel before a Q4_K or Q5_K super-block's quant lines: one of `d`/`dmin`, then
/// three of the file's 12 bytes of packed 6-bit scales and mins per row (`repack.rs`).
pub(super) const K_HEAD_LINES: usize = 4;

/// Lines per panel and Q4_K super-block: [`K_HEAD_LINES`], then 32 of quants: exactly the
/// file's 16 x 144 bytes.
pub(super) const Q4K_LINES: usize = K_HEAD_LINES + 32;

/// Lines per panel and Q5_K super-block: Q4_K's [`K_HEAD_LINES`], then per sub-block of 32
/// elements 5 lines laid out as a Q5_0 block's: its 4 quant lines (low 4 bits) and one line of
/// the fifth bits (exactly the file's 16 x 176 bytes).
pub(super) const Q5K_LINES: usize = K_HEAD_LINES + 5 * 8;

/// Lines per panel and Q6_K super-block: `d`, 4 of scales, then per group of 16 elements two
/// quant lines (low 4 bits) and one line of the high 2 bits.
pub(super) const Q6K_LINES: usize = 5 + 3 * 16;

/// Lines per panel and block of a 32-element ("legacy") format: Q4_0 and Q4_1 4 quant lines;
/// Q5_0 and Q5_1 the same 4 plus one line of the fifth bits; Q8_0 8 lines of one element quad
/// each.
pub(super) const fn legacy_lines(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q5_0 | GgmlType::Q5_1 => 5,
        GgmlType::Q8_0 => 8,
        _ => 4,
    }
}

/// f16 values per panel and block of a 32-element format in [`PackedMatrix::scales`]: the 16
/// rows' `d`, then (Q4_1, Q5_1) their 16 mins `m`.
pub(super) const fn legacy_scales(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => 2 * PANEL_ROWS,
        _ => PANEL_ROWS,
    }
}

/// A Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K matrix in the panel layout (see `repack.rs`,
/// which makes it).
pub struct PackedMatrix {
    pub(super) ty: GgmlType,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// The 32-element formats only: the f16 block scales (and Q4_1's and Q5_1's mins), see
    /// [`legacy_scales`].
    pub(super) scales: PanelBuf<u16>,
    pub(super) lines: PanelBuf<Line>,
}

/// Element types a [`PanelBuf`] holds: plain data, valid for any byte pattern, no drop.
///
/// # Safety
/// Implementors must be `Copy` types for which every bit pattern of their size is a value.
pub(super) unsafe trait PanelElem: Copy {}
// SAFETY: a Line is 64 plain bytes; a u16 any 2 bytes.
unsafe impl PanelElem for Line {}
// SAFETY: as above.
unsafe impl PanelElem for u16 {}

/// The storage of a repacked matrix's lines or scales: a private memory mapping, page-aligned
/// (so 64-byte aligned for [`Line`]s). Made two ways:
/// - [`PanelBuf::zeroed`]: anonymous zero pages, committed by whichever thread first writes
///   them (repacking on all threads faults them in in parallel, where a `Vec` would be
///   zero-filled by one thread first), and on Linux advised for transparent huge pages (512x
///   fewer page faults while repacking, fewer TLB misses while the kernels stream the weights);
/// - [`PanelBuf::map_file`]: a copy-on-write mapping of a range of a file written earlier (the
///   repack cache): its pages are the page cache's, shared with other processes, nothing to
///   zero or copy at load.
pub(super) struct PanelBuf<T> {
    /// `None` for zero elements (an empty mapping is an error).
    map: Option<memmap2::MmapMut>,
    len: usize,
    _elem: std::marker::PhantomData<T>,
}

/// The repacked form's line buffer.
pub(super) type LineBuf = PanelBuf<Line>;

impl<T: PanelElem> PanelBuf<T> {
    pub(super) fn zeroed(len: usize) -> Result<PanelBuf<T>, super::KernelError> {
        let bytes = len * std::mem::size_of::<T>();
        if len == 0 {
            return Ok(PanelBuf::empty());
        }
        let map = memmap2::MmapMut::map_anon(bytes).map_err(|e| super::KernelError::Allocation {
            bytes,
            reason: e.to_string(),
        })?;
        Ok(PanelBuf::of(map, len))
    }

    /// `len` elements of `file` from byte `offset` (a multiple of `T`'s alignment), mapped
    /// copy-on-write: writes through the buffer never reach the file.
    pub(super) fn map_file(file: &std::fs::File, offset: u64, len: usize) -> Result<PanelBuf<T>, super::KernelError> {
        let bytes = len * std::mem::size_of::<T>();
        if !offset.is_multiple_of(std::mem::align_of::<T>() as u64) {
            return Err(super::KernelError::Allocation {
                bytes,
                reason: format!("offset {offset} is not aligned to {}", std::mem::align_of::<T>()),
            });
        }
        if len == 0 {
            return Ok(PanelBuf::empty());
        }
        // SAFETY: the mapping is private (copy-on-write), so no write of ours reaches the
        // file; the cache file is ours and written once (renamed into place complete). If
        // another process truncated it, reading the missing pages would fault (SIGBUS), as for
        // the mapped model file itself; any bytes are valid elements (`PanelElem`).
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(bytes).map_copy(file) }.map_err(|e| {
            super::KernelError::Allocation {
                bytes,
                reason: e.to_string(),
            }
        })?;
        Ok(PanelBuf::of(map, len))
    }

    /// `len` elements in `map`, advised for huge pages: only a hint (anonymous memory gets
    /// them where transparent huge pages are on; the page cache's large folios are mapped so
    /// on file systems that have them); without, the buffer works the same, with more page
    /// faults and TLB misses.
    fn of(map: memmap2::MmapMut, len: usize) -> PanelBuf<T> {
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        PanelBuf {
            map: Some(map),
            len,
            _elem: std::marker::PhantomData,
        }
    }

    fn empty() -> PanelBuf<T> {
        PanelBuf {
            map: None,
            len: 0,
            _elem: std::marker::PhantomData,
        }
    }

    /// The elements as bytes (what the repack cache stores).
    pub(super) fn as_bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[..self.len * std::mem::size_of::<T>()],
            None => &[],
        }
    }
}

impl<T: PanelElem> std::ops::Deref for PanelBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.map {
            // SAFETY: the mapping is page-aligned plus an offset aligned for T (`map_file`
            // checks it; memmap2 maps from the page below and points at the offset), holds
            // `len * size_of::<T>()` bytes, and any bytes are a valid T (`PanelElem`).
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<T>(), self.len) },
            None => &[],
        }
    }
}

impl<T: PanelElem> std::ops::DerefMut for PanelBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.map {
            // SAFETY: as in `deref`; the mapping is uniquely borrowed through `self`.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.as_mut_ptr().cast::<T>(), self.len) },
            None => &mut [],
        }
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// One token's activation row (Q8_0 for Q4_0, Q5_0 and Q8_0 weights, Q8_1 for Q4_1 and Q5_1,
/// Q8_K for Q4_K, Q5_K and Q6_K) prepared for the kernels for repacked weights.
#[cfg(target_arch = "x86_64")]
pub(super) struct PackedActivations {
    /// The quads (4 quants each) of every block, as little-endian u32.
    pub(super) quads: Vec<u32>,
    /// Per block (Q8_0) or super-block (Q8_K): the activation scale.
    pub(super) scales: Vec<f32>,
    /// Q8_0: per block, `-offset * sum(y)`, the start of each row's integer sum (the
    /// weights' offset: 8 for Q4_0, 16 for Q5_0, 128 for Q8_0, whose quants are stored + 128).
    /// Q8_1 (Q4_1, Q5_1): per block 0 (no offset; the min enters through `block_s`).
    /// Q8_K for Q4_K and Q5_K: per sub-block of 32, `sum(y)` (from `bsums`), paired with the
    /// mins.
    /// Q8_K for Q6_K: per group of 16, `sum(y)` (the `bsums`), for the offset of 32.
    pub(super) sums: Vec<i32>,
    /// Q8_1 only: per block, its f16 `s = d * sum(y)` as f32, which the weights' min `m`
    /// multiplies (as ggml's dot product and the scalar specification use it).
    pub(super) block_s: Vec<f32>,
}

/// Sum `i` of a Q8_K block's 16 `bsums` (the sums of quants `16i..16i + 16`), from the
/// block's bytes (f32 `d`, 256 quants, then the sums as little-endian i16).
pub(super) fn q8_k_bsum(blk: &[u8], i: usize) -> i32 {
    let at = 4 + crate::quant::QK_K + 2 * i;
    i16::from_le_bytes([blk[at], blk[at + 1]]) as i32
}

/// The sum of the quants of 32-element sub-block `j` of a Q8_K block's bytes.
pub(super) fn q8_k_sub_block_sum(blk: &[u8], j: usize) -> i32 {
    q8_k_bsum(blk, 2 * j) + q8_k_bsum(blk, 2 * j + 1)
}

#[cfg(target_arch = "x86_64")]
impl PackedActivations {
    /// From one activation row in the partner format of weights of type `ty`.
    pub(super) fn new(ty: GgmlType, act: &[u8]) -> PackedActivations {
        // Sized up front and filled without a temporary per block: a small model's pass
        // prepares a few hundred of these rows, and the allocations showed in its profile.
        let act_ty = super::table::act_type(ty);
        let blocks = act.len() / act_ty.type_size();
        // Row sums per block: Q8_K's per 16 (Q6_K) or per 32 quants, one for the others.
        let sums_per_block = match (act_ty, ty) {
            (GgmlType::Q8_K, GgmlType::Q6_K) => 16,
            (GgmlType::Q8_K, _) => 8,
            _ => 1,
        };
        let mut x = PackedActivations {
            quads: Vec::with_capacity(act.len() / 4),
            scales: Vec::with_capacity(blocks),
            sums: Vec::with_capacity(blocks * sums_per_block),
            block_s: Vec::new(),
        };
        fn quads_of(q: &[u8]) -> impl Iterator<Item = u32> + '_ {
            q.chunks_exact(4).map(|q| u32::from_le_bytes([q[0], q[1], q[2], q[3]]))
        }
        let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        if act_ty == GgmlType::Q8_1 {
            x.block_s.reserve_exact(blocks);
            for blk in act.chunks_exact(36) {
                x.scales.push(f16_at(blk, 0));
                x.block_s.push(f16_at(blk, 2));
                x.sums.push(0);
                x.quads.extend(quads_of(&blk[4..]));
            }
        } else if act_ty == GgmlType::Q8_0 {
            let offset = match ty {
                GgmlType::Q4_0 => 8,
                GgmlType::Q5_0 => 16,
                _ => 128,
            };
            for blk in act.chunks_exact(34) {
                x.scales.push(f16_at(blk, 0));
                x.sums
                    .push(-offset * blk[2..].iter().map(|&q| q as i8 as i32).sum::<i32>());
                x.quads.extend(quads_of(&blk[2..]));
            }
        } else {
            // Q8_K: f32 d, 256 quants, 16 i16 sums of 16 quants each.
            let per_group = ty == GgmlType::Q6_K;
            for blk in act.chunks_exact(292) {
                x.scales.push(f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]));
                x.quads.extend(quads_of(&blk[4..260]));
                if per_group {
                    x.sums.extend((0..16).map(|i| q8_k_bsum(blk, i)));
                } else {
                    x.sums.extend((0..8).map(|j| q8_k_sub_block_sum(blk, j)));
                }
            }
        }
        x
    }
}

impl PackedMatrix {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (about the file's bytes for the same weights).
    pub fn bytes(&self) -> usize {
        self.scales.len() * 2 + self.lines.len() * 64
    }

    // Only the x86 and NEON kernels walk panels; elsewhere the repacked form is never read.
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
    pub(super) fn n_panels(&self) -> usize {
        self.rows.div_ceil(PANEL_ROWS)
    }

    /// Block `b` of panel `p` of a 32-element format: its [`legacy_scales`] f16 values and its
    /// [`legacy_lines`] lines.
    #[inline]
    pub(super) fn legacy_block(&self, p: usize, b: usize) -> (&[u16], &[Line]) {
        let i = p * (self.cols / 32) + b;
        let (ns, nl) = (legacy_scales(self.ty), legacy_lines(self.ty));
        (&self.scales[i * ns..(i + 1) * ns], &self.lines[i * nl..(i + 1) * nl])
    }

    /// Every block of panel `p` of a 32-element format, one after another: block `b`'s
    /// [`legacy_scales`] f16 values and [`legacy_lines`] lines start at `b` times those counts.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline]
    pub(super) fn legacy_panel(&self, p: usize) -> (&[u16], &[Line]) {
        let blocks = self.cols / 32;
        let (ns, nl) = (legacy_scales(self.ty) * blocks, legacy_lines(self.ty) * blocks);
        (&self.scales[p * ns..(p + 1) * ns], &self.lines[p * nl..(p + 1) * nl])
    }

    /// Q4_K super-block `b` of panel `p`: its [`Q4K_LINES`] lines.
    #[inline]
    pub(super) fn q4_k_block(&self, p: usize, b: usize) -> &[Line] {
        let i = p * (self.cols / 256) + b;
        &self.lines[i * Q4K_LINES..(i + 1) * Q4K_LINES]
    }

    /// Row lane `r`'s 12 bytes of packed 6-bit scales and mins in the [`K_HEAD_LINES`] of a
    /// Q4_K or Q5_K super-block's `lines`: the file's bytes 4..16 of that row's super-block.
    #[inline]
    pub(super) fn k_packed_scales(lines: &[Line], r: usize) -> [u8; 12] {
        std::array::from_fn(|i| lines[1 + i / 4].0[4 * r + i % 4])
    }

    /// Q5_K super-block `b` of panel `p`: its [`Q5K_LINES`] lines.
    #[inline]
    pub(super) fn q5_k_block(&self, p: usize, b: usize) -> &[Line] {
        let i = p * (self.cols / 256) + b;
        &self.lines[i * Q5K_LINES..(i + 1) * Q5K_LINES]
    }

    /// Q6_K super-block `b` of panel `p`: its [`Q6K_LINES`] lines.
    #[inline]
    pub(super) fn q6_k_block(&self, p: usize, b: usize) -> &[Line] {
        let i = p * (self.cols / 256) + b;
        &self.lines[i * Q6K_LINES..(i + 1) * Q6K_LINES]
    }
}
