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

/// Keys and values laid out `[layer][kv_head][position][head_dim]`: one head's rows are
/// contiguous, so attention over a head streams them in address order (with the position-major
/// `[layer][position][kv_dim]` of earlier versions they lay a whole KV row apart, 8 KiB for
/// Llama-2-7B, a page each, where the hardware prefetchers stop: 7B Q4_0 decode at depth 2048
/// +37 %; docs/kernels.md "The KV cache layout and the attention kernels").
pub(crate) struct KvCache {
    n_ctx: usize,
    n_kv_heads: usize,
    head_dim: usize,
    store: Store,
}

impl KvCache {
    pub fn new(ty: KvType, n_layers: usize, n_ctx: usize, n_kv_heads: usize, head_dim: usize) -> KvCache {
        let n = n_layers * n_kv_heads * n_ctx * head_dim;
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
        KvCache {
            n_ctx,
            n_kv_heads,
            head_dim,
            store,
        }
    }

    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F16 { k, v } => (k.len() + v.len()) * 2,
            Store::F32 { k, v } => (k.len() + v.len()) * 4,
        }
    }

    fn offset(&self, layer: usize, kv_head: usize, pos: usize) -> usize {
        ((layer * self.n_kv_heads + kv_head) * self.n_ctx + pos) * self.head_dim
    }

    /// Stores position `pos`'s keys and values for `layer`: `key` and `value` hold all KV heads,
    /// head after head.
    pub fn store(&mut self, layer: usize, pos: usize, key: &[f32], value: &[f32]) {
        let hd = self.head_dim;
        debug_assert!(key.len() == self.n_kv_heads * hd && value.len() == key.len());
        let heads = key.chunks_exact(hd).zip(value.chunks_exact(hd)).take(self.n_kv_heads);
        for (h, (key, value)) in heads.enumerate() {
            let o = self.offset(layer, h, pos);
            let r = o..o + hd;
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
    }

    /// The keys of KV head `kv_head` of `layer` at positions `0..n`, one `head_dim` row per
    /// position.
    pub fn keys(&self, layer: usize, kv_head: usize, n: usize) -> Row<'_> {
        let r = self.offset(layer, kv_head, 0)..self.offset(layer, kv_head, n);
        match &self.store {
            Store::F16 { k, .. } => Row::F16(bytemuck::cast_slice(&k[r])),
            Store::F32 { k, .. } => Row::F32(&k[r]),
        }
    }

    /// The values of KV head `kv_head` of `layer` at positions `0..n`.
    pub fn values(&self, layer: usize, kv_head: usize, n: usize) -> Row<'_> {
        let r = self.offset(layer, kv_head, 0)..self.offset(layer, kv_head, n);
        match &self.store {
            Store::F16 { v, .. } => Row::F16(bytemuck::cast_slice(&v[r])),
            Store::F32 { v, .. } => Row::F32(&v[r]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_f32(row: Row) -> Vec<f32> {
        match row {
            Row::F16(r) => r.iter().map(|x| x.to_f32()).collect(),
            Row::F32(r) => r.to_vec(),
        }
    }

    /// Each head's keys and values come back as stored, position after position, whatever
    /// the order the positions and layers were stored in (values exact in f16).
    #[test]
    fn each_head_reads_back_its_rows_in_position_order() {
        let (layers, n_ctx, heads, hd) = (3, 5, 4, 8);
        // Distinct for every layer, position and element, and exact in f16 (below 2048).
        let value = |layer: usize, pos: usize, i: usize, v: bool| {
            ((layer * n_ctx + pos) * heads * hd + i) as f32 + if v { 0.5 } else { 0.0 }
        };
        for ty in [KvType::F16, KvType::F32] {
            let mut cache = KvCache::new(ty, layers, n_ctx, heads, hd);
            assert_eq!(
                cache.bytes(),
                2 * layers * n_ctx * heads * hd * if ty == KvType::F16 { 2 } else { 4 }
            );
            for pos in (0..n_ctx).rev() {
                for layer in [2, 0, 1] {
                    let k: Vec<f32> = (0..heads * hd).map(|i| value(layer, pos, i, false)).collect();
                    let v: Vec<f32> = (0..heads * hd).map(|i| value(layer, pos, i, true)).collect();
                    cache.store(layer, pos, &k, &v);
                }
            }
            for layer in 0..layers {
                for h in 0..heads {
                    for n in [0, 1, n_ctx] {
                        let want = |v: bool| -> Vec<f32> {
                            (0..n)
                                .flat_map(|pos| (h * hd..(h + 1) * hd).map(move |i| value(layer, pos, i, v)))
                                .collect()
                        };
                        assert_eq!(
                            as_f32(cache.keys(layer, h, n)),
                            want(false),
                            "{ty:?} layer {layer} head {h} n {n}"
                        );
                        assert_eq!(
                            as_f32(cache.values(layer, h, n)),
                            want(true),
                            "{ty:?} layer {layer} head {h} n {n}"
                        );
                    }
                }
            }
        }
    }
}
