//! Shared by the model and oracle tests: stories260K re-quantized to one block type by our
//! quantizer and GGUF writer (`edgeact quantize` has no mix for every type).

use edgeact_quantize::GgufWriter;
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::quant::{quantize_row, GgmlType};
use std::io::Write;
use std::path::Path;

/// `stories` (stories260K, or another F32 GGUF) with every 2-D weight whose rows are whole
/// blocks of `ty` in `ty` (stories260K's 172-wide ffn_down rows stay F32), written by our GGUF
/// writer from our quantizer's bytes.
pub fn stories_all(stories: &Path, ty: GgmlType, out: &Path) {
    let src = GgufFile::open(stories).expect("open stories260K");
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        // The writer sets the alignment itself.
        if k != "general.alignment" {
            w.set(k.clone(), v.clone()).expect("copy metadata");
        }
    }
    let pick = |info: &edgeact_runtime::gguf::TensorInfo| {
        if info.dims.len() == 2 && info.dims[0].is_multiple_of(ty.block_size() as u64) {
            ty
        } else {
            info.ty
        }
    };
    for info in src.tensors() {
        w.add_tensor(info.name.clone(), &info.dims, pick(info))
            .expect("declare tensor");
    }
    w.write_file(out, &[stories], |i, decl, sink| {
        let info = &src.tensors()[i];
        let data = src.tensor(&info.name).expect("tensor").data;
        if decl.ty == info.ty {
            return sink.write_all(data);
        }
        let x: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut q = vec![0u8; decl.n_bytes() as usize];
        quantize_row(decl.ty, &x, &mut q).map_err(std::io::Error::other)?;
        sink.write_all(&q)
    })
    .expect("write GGUF");
}
