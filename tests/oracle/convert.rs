//! llama.cpp as the oracle for the converter (`cargo test --features oracle --test
//! oracle convert::`): llama.cpp loads every file `edgeact_quantize::convert` writes and gives
//! finite logits, and llama.cpp's own quantizer (`llama_model_quantize`), run on our F32
//! conversion, picks the same type for every tensor as our mixes do, with identical bytes.
#![cfg(feature = "oracle")]

use crate::convert_support;
use convert_support::*;

use edgeact_oracle::{quantize_model, Context, Ftype, Model};
use edgeact_quantize::{convert, Mix, Options};
use edgeact_runtime::gguf::GgufFile;

fn opts(mix: Mix) -> Options {
    let mut o = Options::new(mix);
    o.threads = 2;
    o
}

#[test]
fn llama_cpp_loads_our_output_and_agrees_on_the_mix() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    write_checkpoint(&ck, false, None);
    let f32_path = dir.path().join("f32.gguf");
    convert(&ck, &f32_path, &opts(Mix::F32), &mut edgeact_quantize::convert::Silent).unwrap();

    for (mix, ftype) in [
        (Mix::F16, Ftype::F16),
        (Mix::Q8_0, Ftype::Q8_0),
        (Mix::Q4_0, Ftype::Q4_0),
        (Mix::Q4KM, Ftype::Q4KM),
    ] {
        let ours = dir.path().join(format!("ours-{mix}.gguf"));
        convert(&ck, &ours, &opts(mix), &mut edgeact_quantize::convert::Silent).unwrap();

        // llama.cpp loads it and produces finite, non-constant logits.
        let model = Model::load(&ours).unwrap_or_else(|e| panic!("{mix}: {e}"));
        assert_eq!(model.n_vocab(), VOCAB);
        let mut ctx = Context::new(&model, 32, 2).unwrap();
        let logits = ctx.eval(&[1, 15043, 3186]).unwrap();
        assert_eq!(logits.len(), VOCAB);
        assert!(logits.iter().all(|x| x.is_finite()), "{mix}: non-finite logits");
        assert!(logits.iter().any(|&x| x != logits[0]), "{mix}: constant logits");

        // llama.cpp's quantizer on the same F32 weights: same types, same bytes.
        let theirs = dir.path().join(format!("llama-cpp-{mix}.gguf"));
        quantize_model(&f32_path, &theirs, ftype, 2).unwrap();
        let (a, b) = (GgufFile::open(&ours).unwrap(), GgufFile::open(&theirs).unwrap());
        assert_eq!(a.tensors().len(), b.tensors().len());
        for t in b.tensors() {
            let o = a
                .tensor(&t.name)
                .unwrap_or_else(|_| panic!("{mix}: we lack {}", t.name));
            assert_eq!((o.ty(), &o.info.dims), (t.ty, &t.dims), "{mix}: {}", t.name);
            let theirs = b.tensor(&t.name).unwrap().data;
            // The oracle's llama.cpp is built unfused (.cargo/config.toml), like upstream x86
            // builds of ggml-base, so every type's bytes must be identical.
            assert!(
                o.data == theirs,
                "{mix}: bytes of {} ({}) differ from llama.cpp's",
                t.name,
                t.ty
            );
        }
        assert_eq!(
            a.require_u64("general.file_type").unwrap(),
            b.require_u64("general.file_type").unwrap()
        );
    }
}
