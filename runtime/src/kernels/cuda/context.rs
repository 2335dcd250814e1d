//! A CUDA device ready to run the forward pass: its context and stream, the loaded kernels,
//! and one checked launcher per kernel.
//!
//! Every launcher validates its sizes against the buffers it is given before launching, so the
//! kernels (which trust their arguments) never index out of bounds; a bad call is a
//! [`CudaError::Invalid`], not undefined behaviour. All work goes to one stream, in order.

use super::compile::{compile_module, recompile};
use super::select::GpuInfo;
use super::{CudaError, SOURCES};
use crate::quant::GgmlType;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A device buffer (cudarc's `CudaSlice`).
pub type GpuBuffer<T> = CudaSlice<T>;

/// Weight types the GPU matrix kernels read directly (no dequantized copy is made).
pub const GPU_WEIGHT_TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Kernel-name suffix of a weight type (see `EDGEACT_FOR_EACH_WEIGHT` in quant.cuh).
fn type_suffix(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        _ => return None,
    })
}

/// Every kernel entry point, by module (must match the `extern "C"` names in the .cu files).
fn kernel_names(module: &str) -> Vec<String> {
    let typed = |prefix: &str| {
        GPU_WEIGHT_TYPES
            .iter()
            .filter_map(|&t| type_suffix(t))
            .map(|s| format!("{prefix}_{s}"))
            .collect()
    };
    match module {
        "matvec" => typed("matvec"),
        "matmul" => typed("matmul"),
        "ops" => ["rms_norm", "rope", "swiglu", "add_inplace", "softmax", "kv_store"]
            .map(String::from)
            .to_vec(),
        "attention" => vec!["attention".to_string()],
        _ => Vec::new(),
    }
}

/// A weight matrix in device memory, in its file (quantized) layout: `rows` rows of `cols`
/// elements, `row_bytes` bytes each.
pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    data: CudaSlice<u8>,
}

impl GpuMatrix {
    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// An open CUDA device with every kernel loaded.
pub struct GpuContext {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: GpuInfo,
    funcs: HashMap<String, CudaFunction>,
    /// Dynamic shared memory the attention kernel may use (bytes), which bounds the context.
    max_shared: usize,
}

const THREADS: u32 = 256;

fn grid_for(n: usize) -> u32 {
    // Grid-stride loops in the kernels cover anything past this many blocks.
    n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32
}

/// One thread per value over `n` values, in blocks of `THREADS`.
fn elementwise_config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_for(n), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i32(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("{what} = {v} does not fit the kernels' 32-bit index")))
}

fn need(what: &str, have: usize, want: usize) -> Result<(), CudaError> {
    if have < want {
        return Err(CudaError::Invalid(format!(
            "{what}: buffer holds {have} elements, {want} needed"
        )));
    }
    Ok(())
}

impl GpuContext {
    /// Opens device `ordinal`, compiles (or loads from the cache) every kernel module for its
    /// architecture and loads them.
    pub fn open(ordinal: usize) -> Result<GpuContext, CudaError> {
        super::ensure_toolchain()?;
        let avail = super::probe();
        let info = match avail.devices.get(ordinal) {
            Some(d) => d.clone(),
            None if avail.devices.is_empty() => {
                return Err(CudaError::NoDevice(
                    avail.problem.map(|p| format!(": {p}")).unwrap_or_default(),
                ))
            }
            None => {
                return Err(CudaError::BadOrdinal {
                    ordinal,
                    count: avail.devices.len(),
                })
            }
        };
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::driver(format!("opening cuda:{ordinal}"), e))?;
        // SAFETY: every buffer of this context is used on its one stream only, in order, so
        // cudarc's per-buffer events (for cross-stream synchronization) are pure overhead.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let mut funcs = HashMap::new();
        for (module, _) in SOURCES {
            let names = kernel_names(module);
            let compiled = compile_module(module, info.arch())?;
            let loaded = match ctx.load_module(cudarc::nvrtc::Ptx::from_src(compiled.ptx.clone())) {
                Ok(m) => m,
                // A stale disk-cache entry (e.g. PTX newer than this driver): compile afresh.
                Err(_) if compiled.from_disk => {
                    let fresh = recompile(module, info.arch())?;
                    ctx.load_module(cudarc::nvrtc::Ptx::from_src(fresh.ptx.clone()))
                        .map_err(|e| CudaError::driver(format!("loading {module}.cu"), e))?
                }
                Err(e) => return Err(CudaError::driver(format!("loading {module}.cu"), e)),
            };
            for name in names {
                let f = loaded
                    .load_function(&name)
                    .map_err(|e| CudaError::driver(format!("kernel {name}"), e))?;
                funcs.insert(name, f);
            }
        }
        let max_shared = attention_shared_limit(&ctx, &funcs)?;
        Ok(GpuContext {
            ctx,
            stream,
            info,
            funcs,
            max_shared,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx
            .mem_get_info()
            .map_err(|e| CudaError::driver("cuMemGetInfo", e))
    }

    /// Largest number of cache positions [`GpuContext::attention`] can attend over.
    pub fn max_attention_positions(&self) -> usize {
        self.max_shared / 4
    }

    fn func(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.funcs
            .get(name)
            .ok_or_else(|| CudaError::Invalid(format!("kernel {name} is not loaded")))
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(|e| CudaError::driver("synchronize", e))
    }

    /// Copies host data into a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.stream.clone_htod(data).map_err(|e| CudaError::driver("upload", e))
    }

    /// Copies host data into the start of an existing device buffer.
    pub fn upload_into<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> Result<(), CudaError> {
        need("upload_into", dst.len(), data.len())?;
        let mut view = dst.slice_mut(0..data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(|e| CudaError::driver("upload", e))
    }

    /// A zeroed device buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(|e| CudaError::driver(format!("allocating {n} elements"), e))
    }

    /// Copies the first `n` elements of a device buffer to the host (waits for queued work).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, src: &CudaSlice<T>, n: usize) -> Result<Vec<T>, CudaError> {
        need("download", src.len(), n)?;
        self.stream
            .clone_dtoh(&src.slice(0..n))
            .map_err(|e| CudaError::driver("download", e))
    }

    /// Uploads a weight matrix as stored in the file (quantized bytes, no conversion).
    pub fn upload_matrix(&self, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<GpuMatrix, CudaError> {
        if type_suffix(ty).is_none() {
            return Err(CudaError::Invalid(format!(
                "weight type {ty} has no CUDA kernel (supported: {})",
                GPU_WEIGHT_TYPES.map(|t| t.name()).join(", ")
            )));
        }
        // Quantized blocks hold 32 or 256 elements; F32 and F16 rows may have any width (the
        // kernels read the tail past the last 32 elements one by one).
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(CudaError::Invalid(format!(
                "{ty} matrix with {cols} columns: not a whole number of blocks"
            )));
        }
        let row_bytes = ty
            .row_bytes(cols as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| CudaError::Invalid(format!("{ty} matrix with {cols} columns: bad row length")))?;
        if Some(bytes.len()) != rows.checked_mul(row_bytes) {
            return Err(CudaError::Invalid(format!(
                "{ty} {rows}x{cols} matrix needs {} bytes, got {}",
                rows.saturating_mul(row_bytes),
                bytes.len()
            )));
        }
        to_i32("matrix rows", rows)?;
        to_i32("matrix cols", cols)?;
        Ok(GpuMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data: self.upload(bytes)?,
        })
    }

    /// `y[t * rows + r] = W[r] · x[t]` for `n_tok` tokens (`x` is `n_tok x cols`, row-major).
    /// One token uses the matrix-vector kernel, more use the tiled matmul.
    pub fn matmul(
        &self,
        w: &GpuMatrix,
        x: &CudaView<f32>,
        n_tok: usize,
        y: &mut CudaViewMut<f32>,
    ) -> Result<(), CudaError> {
        need("matmul x", x.len(), n_tok * w.cols)?;
        need("matmul y", y.len(), n_tok * w.rows)?;
        if n_tok == 0 {
            return Ok(());
        }
        let suffix = type_suffix(w.ty).ok_or_else(|| CudaError::Invalid(format!("no CUDA kernel for {}", w.ty)))?;
        let (rows, cols, rb) = (w.rows as i32, w.cols as i32, w.row_bytes as i64);
        let nt = to_i32("tokens", n_tok)?;
        if n_tok == 1 {
            let f = self.func(&format!("matvec_{suffix}"))?;
            let cfg = LaunchConfig {
                grid_dim: (w.rows.div_ceil(4) as u32, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches `matvec_<type>(const u8*, const float*, float*,
            // int, int, i64)`; x holds cols floats and y rows floats (checked above), and the
            // matrix buffer holds rows * row_bytes bytes (checked at upload).
            unsafe {
                self.stream
                    .launch_builder(f)
                    .arg(&w.data)
                    .arg(x)
                    .arg(y)
                    .arg(&rows)
                    .arg(&cols)
                    .arg(&rb)
                    .launch(cfg)
            }
            .map_err(|e| CudaError::driver("matvec launch", e))?;
        } else {
            let f = self.func(&format!("matmul_{suffix}"))?;
            let cfg = LaunchConfig {
                grid_dim: (w.rows.div_ceil(64) as u32, n_tok.div_ceil(32) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches `matmul_<type>(const u8*, const float*, float*, int, int, int,
            // i64)`; sizes checked above, tiles past rows/ntok are masked in the kernel.
            unsafe {
                self.stream
                    .launch_builder(f)
                    .arg(&w.data)
                    .arg(x)
                    .arg(y)
                    .arg(&rows)
                    .arg(&cols)
                    .arg(&nt)
                    .arg(&rb)
                    .launch(cfg)
            }
            .map_err(|e| CudaError::driver("matmul launch", e))?;
        }
        Ok(())
    }

    /// RMSNorm of `rows` rows of `n` values: `out = x / rms(x) * w`.
    pub fn rms_norm(
        &self,
        x: &CudaView<f32>,
        w: &CudaView<f32>,
        out: &mut CudaViewMut<f32>,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        need("rms_norm x", x.len(), rows * n)?;
        need("rms_norm w", w.len(), n)?;
        need("rms_norm out", out.len(), rows * n)?;
        if rows == 0 {
            return Ok(());
        }
        let ni = to_i32("rms_norm n", n)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `rms_norm(const float*, const float*, float*, int, float)`, one block
        // per row; sizes checked above.
        unsafe {
            self.stream
                .launch_builder(self.func("rms_norm")?)
                .arg(x)
                .arg(w)
                .arg(out)
                .arg(&ni)
                .arg(&eps)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("rms_norm launch", e))?;
        Ok(())
    }

    /// RoPE (adjacent pairs) over `n_tok` rows of `n_heads * head_dim` values at positions
    /// `pos0..pos0 + n_tok`. `table` holds `(cos, sin)` pairs, `head_dim / 2` per position,
    /// for `table_positions` positions (see [`rope_table`]).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &mut CudaViewMut<f32>,
        table: &CudaView<f32>,
        table_positions: usize,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
    ) -> Result<(), CudaError> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(CudaError::Invalid(format!("rope: head_dim {head_dim} must be even")));
        }
        need("rope x", x.len(), n_tok * n_heads * head_dim)?;
        need("rope table", table.len(), table_positions * head_dim)?;
        if pos0 + n_tok > table_positions {
            return Err(CudaError::Invalid(format!(
                "rope: positions up to {} but the table covers {table_positions}",
                pos0 + n_tok
            )));
        }
        let pairs = n_tok * n_heads * head_dim / 2;
        if pairs == 0 {
            return Ok(());
        }
        let (nt, nh, hd, p0) = (
            to_i32("tokens", n_tok)?,
            to_i32("heads", n_heads)?,
            to_i32("head_dim", head_dim)?,
            to_i32("pos0", pos0)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (grid_for(pairs), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `rope(float*, const float*, int, int, int, int)`; x and the table
        // cover every index the kernel forms (checked above).
        unsafe {
            self.stream
                .launch_builder(self.func("rope")?)
                .arg(x)
                .arg(table)
                .arg(&nt)
                .arg(&nh)
                .arg(&hd)
                .arg(&p0)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("rope launch", e))?;
        Ok(())
    }

    /// `out = silu(gate) * up` over `n` values.
    pub fn swiglu(
        &self,
        gate: &CudaView<f32>,
        up: &CudaView<f32>,
        out: &mut CudaViewMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("swiglu gate", gate.len(), n)?;
        need("swiglu up", up.len(), n)?;
        need("swiglu out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let ni = n as i64;
        let cfg = elementwise_config(n);
        // SAFETY: matches `swiglu(const float*, const float*, float*, i64)`; sizes checked.
        unsafe {
            self.stream
                .launch_builder(self.func("swiglu")?)
                .arg(gate)
                .arg(up)
                .arg(out)
                .arg(&ni)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("swiglu launch", e))?;
        Ok(())
    }

    /// `x += y` over `n` values.
    pub fn add_inplace(&self, x: &mut CudaViewMut<f32>, y: &CudaView<f32>, n: usize) -> Result<(), CudaError> {
        need("add x", x.len(), n)?;
        need("add y", y.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let ni = n as i64;
        let cfg = elementwise_config(n);
        // SAFETY: matches `add_inplace(float*, const float*, i64)`; sizes checked.
        unsafe {
            self.stream
                .launch_builder(self.func("add_inplace")?)
                .arg(x)
                .arg(y)
                .arg(&ni)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("add launch", e))?;
        Ok(())
    }

    /// In-place softmax of `rows` rows of `n` values.
    pub fn softmax(&self, x: &mut CudaViewMut<f32>, rows: usize, n: usize) -> Result<(), CudaError> {
        need("softmax x", x.len(), rows * n)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let ni = to_i32("softmax n", n)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `softmax(float*, int)`, one block per row; size checked.
        unsafe {
            self.stream
                .launch_builder(self.func("softmax")?)
                .arg(x)
                .arg(&ni)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("softmax launch", e))?;
        Ok(())
    }

    /// Stores `n_tok` rows of keys and values (`kv_dim` wide, f32) as f16 at positions
    /// `pos0..pos0 + n_tok` of one layer's caches (`kc`/`vc` start at that layer's position 0
    /// and hold `capacity` positions).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store(
        &self,
        k: &CudaView<f32>,
        v: &CudaView<f32>,
        kc: &mut CudaViewMut<u16>,
        vc: &mut CudaViewMut<u16>,
        n_tok: usize,
        kv_dim: usize,
        pos0: usize,
    ) -> Result<(), CudaError> {
        need("kv_store k", k.len(), n_tok * kv_dim)?;
        need("kv_store v", v.len(), n_tok * kv_dim)?;
        need("kv_store key cache", kc.len(), (pos0 + n_tok) * kv_dim)?;
        need("kv_store value cache", vc.len(), (pos0 + n_tok) * kv_dim)?;
        let n = n_tok * kv_dim;
        if n == 0 {
            return Ok(());
        }
        let (nt, kd, p0) = (
            to_i32("tokens", n_tok)?,
            to_i32("kv_dim", kv_dim)?,
            to_i32("pos0", pos0)?,
        );
        let cfg = elementwise_config(n);
        // SAFETY: matches `kv_store(const float*, const float*, u16*, u16*, int, int, int)`;
        // the caches hold (pos0 + n_tok) * kv_dim halves (checked above).
        unsafe {
            self.stream
                .launch_builder(self.func("kv_store")?)
                .arg(k)
                .arg(v)
                .arg(kc)
                .arg(vc)
                .arg(&nt)
                .arg(&kd)
                .arg(&p0)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("kv_store launch", e))?;
        Ok(())
    }

    /// Causal attention of `n_tok` query rows (`n_heads * head_dim` each, token t at position
    /// `pos0 + t`) over one layer's f16 caches, which must already hold positions
    /// `0..pos0 + n_tok`. Writes `n_tok x n_heads * head_dim` outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &CudaView<f32>,
        kc: &CudaView<u16>,
        vc: &CudaView<u16>,
        out: &mut CudaViewMut<f32>,
        n_tok: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        pos0: usize,
    ) -> Result<(), CudaError> {
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || head_dim == 0 || head_dim > 256 {
            return Err(CudaError::Invalid(format!(
                "attention: {n_heads} heads over {n_kv_heads} KV heads of {head_dim} (head_dim must be 1..=256 and \
                 the heads a multiple of the KV heads)"
            )));
        }
        let dim = n_heads * head_dim;
        let kv_dim = n_kv_heads * head_dim;
        let n_seen = pos0 + n_tok;
        need("attention q", q.len(), n_tok * dim)?;
        need("attention out", out.len(), n_tok * dim)?;
        need("attention key cache", kc.len(), n_seen * kv_dim)?;
        need("attention value cache", vc.len(), n_seen * kv_dim)?;
        if n_seen > self.max_attention_positions() {
            return Err(CudaError::Invalid(format!(
                "attention over {n_seen} positions exceeds this GPU's limit of {} (shared memory)",
                self.max_attention_positions()
            )));
        }
        if n_tok == 0 {
            return Ok(());
        }
        let scale = 1.0 / (head_dim as f32).sqrt();
        let (nh, nkv, hd, p0) = (
            to_i32("heads", n_heads)?,
            to_i32("kv heads", n_kv_heads)?,
            to_i32("head_dim", head_dim)?,
            to_i32("pos0", pos0)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (n_heads as u32, n_tok as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (n_seen * 4) as u32,
        };
        // SAFETY: matches `attention(const float*, const u16*, const u16*, float*, int, int,
        // int, int, float)`; the caches hold n_seen positions, the dynamic shared memory holds
        // n_seen scores (both checked above).
        unsafe {
            self.stream
                .launch_builder(self.func("attention")?)
                .arg(q)
                .arg(kc)
                .arg(vc)
                .arg(out)
                .arg(&nh)
                .arg(&nkv)
                .arg(&hd)
                .arg(&p0)
                .arg(&scale)
                .launch(cfg)
        }
        .map_err(|e| CudaError::driver("attention launch", e))?;
        Ok(())
    }
}

/// Static shared memory the attention kernel declares besides its dynamic scores (query row,
/// reduction slots), rounded up.
const ATTENTION_STATIC_SHARED: usize = 2048;

/// Raises the attention kernel's dynamic shared-memory limit to what the GPU allows with
/// opt-in (up to 227 KiB on recent GPUs, 56K positions) and returns it; falls back to the
/// default 48 KiB per block.
fn attention_shared_limit(ctx: &Arc<CudaContext>, funcs: &HashMap<String, CudaFunction>) -> Result<usize, CudaError> {
    use cudarc::driver::sys::{CUdevice_attribute as A, CUfunction_attribute as F};
    let attr = |a| ctx.attribute(a).map(|v| v.max(0) as usize);
    let default = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)
        .map_err(|e| CudaError::driver("querying shared memory", e))?;
    let optin = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).unwrap_or(default);
    let default_dyn = default.saturating_sub(ATTENTION_STATIC_SHARED);
    let optin_dyn = optin.saturating_sub(ATTENTION_STATIC_SHARED);
    if optin_dyn > default_dyn {
        if let Some(f) = funcs.get("attention") {
            if f.set_attribute(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin_dyn as i32)
                .is_ok()
            {
                return Ok(optin_dyn);
            }
        }
    }
    Ok(default_dyn)
}

/// The RoPE table the [`GpuContext::rope`] kernel reads: `(cos, sin)` of
/// `pos * freq_scale * base^(-2i / head_dim)` for every position and pair, computed in f64 and
/// rounded to f32 exactly as the CPU `RopeTable`, so both paths rotate identically.
pub fn rope_table(head_dim: usize, base: f32, freq_scale: f32, positions: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| (base as f64).powf(-2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut t = Vec::with_capacity(positions * head_dim);
    for pos in 0..positions {
        for &f in &inv {
            let theta = pos as f64 * freq_scale as f64 * f;
            t.push(theta.cos() as f32);
            t.push(theta.sin() as f32);
        }
    }
    t
}
