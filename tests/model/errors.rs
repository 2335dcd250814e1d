//! Loading checks: malformed or unsupported model files give errors naming the key, tensor or
//! type, and tied embeddings behave like an explicit copy of `token_embd` as `output`.

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use std::sync::Arc;

const DIM: u64 = 32;
const FFN: u64 = 64;
const VOCAB: u64 = 16;

enum V {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<String>),
}

/// A tensor: name, dims (ggml order), ggml type id, bytes.
type T = (String, Vec<u64>, u32, Vec<u8>);

fn gguf(kvs: &[(&str, V)], tensors: &[T]) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        s(&mut b, k);
        match v {
            V::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            V::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            V::Str(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
            V::Strs(items) => {
                b.extend(9u32.to_le_bytes());
                b.extend(8u32.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                for x in items {
                    s(&mut b, x);
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    for (_, _, _, data) in tensors {
        b.extend(data);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
    }
    b
}

fn f32_tensor(name: &str, dims: &[u64], seed: u32) -> T {
    let n: u64 = dims.iter().product();
    let data = (0..n as u32)
        .flat_map(|i| {
            let x = ((i.wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503))) % 1000) as f32 / 1000.0 - 0.5;
            (x * 0.2).to_le_bytes()
        })
        .collect();
    (name.into(), dims.to_vec(), 0, data)
}

fn kvs() -> Vec<(&'static str, V)> {
    vec![
        ("general.architecture", V::Str("llama")),
        ("llama.context_length", V::U32(64)),
        ("llama.embedding_length", V::U32(DIM as u32)),
        ("llama.block_count", V::U32(1)),
        ("llama.feed_forward_length", V::U32(FFN as u32)),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.vocab_size", V::U32(VOCAB as u32)),
    ]
}

fn tensors(with_output: bool) -> Vec<T> {
    let kv = DIM / 2;
    let mut t = vec![
        f32_tensor("token_embd.weight", &[DIM, VOCAB], 1),
        f32_tensor("output_norm.weight", &[DIM], 2),
        f32_tensor("blk.0.attn_norm.weight", &[DIM], 3),
        f32_tensor("blk.0.attn_q.weight", &[DIM, DIM], 4),
        f32_tensor("blk.0.attn_k.weight", &[DIM, kv], 5),
        f32_tensor("blk.0.attn_v.weight", &[DIM, kv], 6),
        f32_tensor("blk.0.attn_output.weight", &[DIM, DIM], 7),
        f32_tensor("blk.0.ffn_norm.weight", &[DIM], 8),
        f32_tensor("blk.0.ffn_gate.weight", &[DIM, FFN], 9),
        f32_tensor("blk.0.ffn_up.weight", &[DIM, FFN], 10),
        f32_tensor("blk.0.ffn_down.weight", &[FFN, DIM], 11),
    ];
    if with_output {
        let mut out = t[0].clone();
        out.0 = "output.weight".into();
        t.push(out);
    }
    t
}

fn load(kvs: &[(&str, V)], tensors: &[T]) -> Result<LlamaModel, String> {
    let file = GgufFile::from_bytes(gguf(kvs, tensors)).map_err(|e| e.to_string())?;
    LlamaModel::load(Arc::new(file)).map_err(|e| e.to_string())
}

#[test]
fn tied_embeddings_equal_an_explicit_output_copy() {
    let tied = Arc::new(load(&kvs(), &tensors(false)).unwrap());
    let explicit = Arc::new(load(&kvs(), &tensors(true)).unwrap());
    assert!(tied.tied_embeddings());
    assert!(!explicit.tied_embeddings());
    let a = Session::new(tied, SessionOptions::default())
        .unwrap()
        .eval(&[1, 5, 9])
        .unwrap();
    let b = Session::new(explicit, SessionOptions::default())
        .unwrap()
        .eval(&[1, 5, 9])
        .unwrap();
    assert_eq!(a.len(), VOCAB as usize);
    assert_eq!(a, b);
}

#[test]
fn missing_key_is_named() {
    let k: Vec<_> = kvs().into_iter().filter(|(k, _)| *k != "llama.block_count").collect();
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(err.contains("llama.block_count"), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let mut k = kvs();
    k[0].1 = V::Str("gpt2");
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(err.contains("gpt2") && err.contains("llama"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let t: Vec<_> = tensors(false)
        .into_iter()
        .filter(|t| t.0 != "blk.0.ffn_up.weight")
        .collect();
    let err = load(&kvs(), &t).err().unwrap();
    assert!(err.contains("blk.0.ffn_up.weight"), "{err}");
}

#[test]
fn wrong_shape_is_named() {
    let mut t = tensors(false);
    t[4] = f32_tensor("blk.0.attn_k.weight", &[DIM, DIM], 5);
    let err = load(&kvs(), &t).err().unwrap();
    assert!(err.contains("blk.0.attn_k.weight") && err.contains("shape"), "{err}");
}

#[test]
fn unsupported_type_is_named() {
    // Q8_1 (id 9, 36 bytes per 32 weights): a valid GGUF type (ggml's activation format) with
    // no CPU matmul kernel for weights. (The k-quants without a kernel need 256-wide rows.)
    let mut t = tensors(false);
    t[3] = (
        "blk.0.attn_q.weight".into(),
        vec![DIM, DIM],
        9,
        vec![0u8; (DIM * DIM / 32 * 36) as usize],
    );
    let err = load(&kvs(), &t).err().unwrap();
    assert!(
        err.contains("blk.0.attn_q.weight") && err.contains("Q8_1") && err.contains("matmul"),
        "{err}"
    );
}

#[test]
fn unsupported_rope_scaling_is_an_error() {
    let mut k = kvs();
    k.push(("llama.rope.scaling.type", V::Str("yarn")));
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(err.contains("yarn"), "{err}");
    // Linear scaling is accepted and changes the logits beyond position 0.
    let mut k = kvs();
    k.push(("llama.rope.scaling.type", V::Str("linear")));
    k.push(("llama.rope.scaling.factor", V::F32(4.0)));
    let scaled = Arc::new(load(&k, &tensors(false)).unwrap());
    let plain = Arc::new(load(&kvs(), &tensors(false)).unwrap());
    let a = Session::new(scaled, SessionOptions::default())
        .unwrap()
        .eval(&[1, 5, 9])
        .unwrap();
    let b = Session::new(plain, SessionOptions::default())
        .unwrap()
        .eval(&[1, 5, 9])
        .unwrap();
    assert_ne!(a, b);
}

#[test]
fn bad_head_counts_are_errors() {
    let mut k = kvs();
    k[6].1 = V::U32(3); // 4 heads are not a multiple of 3 KV heads
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(err.contains("head_count"), "{err}");
}

#[test]
fn absurd_block_count_is_an_error_not_an_allocation() {
    // 10^8 blocks used to size the layer vector before any tensor was looked up (55 GB, abort).
    let mut k = kvs();
    k[3].1 = V::U32(100_000_000);
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(err.contains("block_count") && err.contains("100000000"), "{err}");
}

#[test]
fn token_list_must_match_the_vocabulary_size() {
    // A vocab_size key that disagrees with the token list (llama.cpp sizes the vocabulary by
    // the list) is refused instead of indexing past the list later.
    let tokens = |n: u64| V::Strs((0..n).map(|i| format!("t{i}")).collect());
    let mut k = kvs();
    k.push(("tokenizer.ggml.tokens", tokens(VOCAB - 1)));
    let err = load(&k, &tensors(false)).err().unwrap();
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains(&(VOCAB - 1).to_string()),
        "{err}"
    );
    let mut k = kvs();
    k.push(("tokenizer.ggml.tokens", tokens(VOCAB)));
    assert!(load(&k, &tensors(false)).is_ok());
}

#[test]
fn absurd_context_is_an_error_not_an_abort() {
    // A file claiming a 4e9-token training context, opened at its maximum: the KV cache size
    // is checked before allocating (it used to abort on the failed allocation).
    let mut k = kvs();
    k[1].1 = V::U32(4_000_000_000);
    let model = Arc::new(load(&k, &tensors(false)).unwrap());
    let err = Session::new(model, SessionOptions::default()).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("context"), "{msg}");
}

#[test]
fn context_larger_than_memory_is_refused_with_its_size() {
    // Under the hard limit but far beyond memory: 2^24 positions of a 2^20-wide KV.
    let cfg_kvs = |k: &mut Vec<(&'static str, V)>| {
        k[1].1 = V::U32(1 << 24);
    };
    let mut k = kvs();
    cfg_kvs(&mut k);
    let model = Arc::new(load(&k, &tensors(false)).unwrap());
    let cfg = model.config().clone();
    let need = edgeact_runtime::model::context_memory_bytes(&cfg, 1 << 24, edgeact_runtime::model::KvType::F32)
        .expect("no overflow");
    // 1 layer x 2^24 x 16 x 4 bytes x 2 + RoPE: about 2.5 GiB; refused only where memory is short.
    assert!(need > 2 << 30);
    let wide = edgeact_runtime::model::LlamaConfig {
        n_layers: usize::MAX / 2,
        ..cfg
    };
    assert!(
        edgeact_runtime::model::context_memory_bytes(&wide, 1 << 24, edgeact_runtime::model::KvType::F16).is_none()
    );
}

#[test]
fn huge_thread_count_is_clamped_not_a_panic() {
    let model = Arc::new(load(&kvs(), &tensors(false)).unwrap());
    let session = Session::new(
        model,
        SessionOptions {
            threads: 100_000,
            ..Default::default()
        },
    )
    .expect("session");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    assert!(session.n_threads() <= cpus);
}

/// Tied embeddings in a repackable type: the output projection (which reads `token_embd`) is
/// repacked like any other matrix, while the embedding lookup keeps reading its rows from the
/// mapping (whose pages of the tensor were released after repacking): the logits stay those
/// of the mapped model, within the packed kernels' float order.
#[test]
fn tied_embeddings_in_a_panel_type_repack_the_output_and_still_embed() {
    use edgeact_runtime::model::RepackChoice;
    use edgeact_runtime::quant::{quantize_row, GgmlType};
    let mut t = tensors(false);
    let floats: Vec<f32> = t[0]
        .3
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut q8 = vec![0u8; (DIM * VOCAB / 32 * 34) as usize];
    quantize_row(GgmlType::Q8_0, &floats, &mut q8).unwrap();
    t[0] = ("token_embd.weight".into(), vec![DIM, VOCAB], GgmlType::Q8_0 as u32, q8);
    let mapped = Arc::new(load(&kvs(), &t).unwrap());
    assert!(mapped.tied_embeddings());
    let mut repacked = load(&kvs(), &t).unwrap();
    let report = repacked.repack(RepackChoice::All, 2, &mut |_, _| {}).unwrap();
    if !edgeact_runtime::kernels::cpu::repack_supported() {
        assert_eq!(report.tensors, 0);
        return;
    }
    // The F32 block matrices have no panel form: the tied output is the one repacked matrix.
    assert_eq!(report.tensors, 1);
    let eval = |m: Arc<LlamaModel>| {
        Session::new(m, SessionOptions::default())
            .unwrap()
            .eval(&[1, 5, 9, 15])
            .unwrap()
    };
    let (a, b) = (eval(mapped), eval(Arc::new(repacked)));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-3 * scale, "logits differ by {worst} (scale {scale})");
}
