//! The key/value cache of one sequence: for every layer and position, the RoPE'd keys and the
//! values of all KV heads, stored in half precision by default (halves the memory and the
//! bandwidth attention needs, at a precision cost far below the weights' quantization error).

use super::ops;
use half::f16;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(format!("unknown KV cache type {s:?} (f16 or f32)")),
        }
    }
}

/// F16 data is held as `u16` so the zeroed allocation comes straight from the allocator's
/// zeroed pages (`vec![0u16; n]`): a 2 GiB cache costs nothing until positions are written.
/// It is viewed as `f16` through `bytemuck` (same size and alignment, every bit pattern valid).
enum Store {
    F16 { k: Vec<u16>, v: Vec<u16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

/// One row of cached keys or values for one position, in the cache's element type.
pub(crate) enum Row<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// Keys and values laid out `[layer][position][kv_dim]`.
pub(crate) struct KvCache {
    n_ctx: usize,
    kv_dim: usize,
    store: Store,
}

impl KvCache {
    pub fn new(ty: KvType, n_layers: usize, n_ctx: usize, kv_dim: usize) -> KvCache {
        let n = n_layers * n_ctx * kv_dim;
        let store = match ty {
            KvType::F16 => Store::F16 {
                k: vec![0u16; n],
                v: vec![0u16; n],
            },
            KvType::F32 => Store::F32 {
                k: vec![0.0; n],
                v: vec![0.0; n],
            },
        };
        KvCache { n_ctx, kv_dim, store }
    }

    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F16 { k, v } => (k.len() + v.len()) * 2,
            Store::F32 { k, v } => (k.len() + v.len()) * 4,
        }
    }

    fn offset(&self, layer: usize, pos: usize) -> usize {
        (layer * self.n_ctx + pos) * self.kv_dim
    }

    /// Stores position `pos`'s keys and values for `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, key: &[f32], value: &[f32]) {
        let o = self.offset(layer, pos);
        let r = o..o + self.kv_dim;
        match &mut self.store {
            Store::F16 { k, v } => {
                ops::f32_to_f16_row(key, bytemuck::cast_slice_mut(&mut k[r.clone()]));
                ops::f32_to_f16_row(value, bytemuck::cast_slice_mut(&mut v[r]));
            }
            Store::F32 { k, v } => {
                k[r.clone()].copy_from_slice(key);
                v[r].copy_from_slice(value);
            }
        }
    }

    /// The keys of positions `0..n` of `layer`, one `kv_dim` row per position.
    pub fn keys(&self, layer: usize, n: usize) -> Row<'_> {
        let r = self.offset(layer, 0)..self.offset(layer, n);
        match &self.store {
            Store::F16 { k, .. } => Row::F16(bytemuck::cast_slice(&k[r])),
            Store::F32 { k, .. } => Row::F32(&k[r]),
        }
    }

    /// The values of positions `0..n` of `layer`.
    pub fn values(&self, layer: usize, n: usize) -> Row<'_> {
        let r = self.offset(layer, 0)..self.offset(layer, n);
        match &self.store {
            Store::F16 { v, .. } => Row::F16(bytemuck::cast_slice(&v[r])),
            Store::F32 { v, .. } => Row::F32(&v[r]),
        }
    }
}
