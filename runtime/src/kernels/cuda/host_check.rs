//! Host-side check of the weight-format accessors in `quant.cuh` (the part of the kernels
//! most likely to be subtly wrong: ggml's block layouts) without a GPU.
//!
//! The accessors are plain C++ apart from `__device__`, so this test compiles them with the
//! host C++ compiler (`$CXX`, else `c++`) behind a small shim, feeds them random quantized
//! rows, and compares `get` and `dot32` with `quant::dequantize_row`. Skips (with a message)
//! when no C++ compiler is installed.

use crate::quant::{dequantize_row, quantize_row, GgmlType};
use std::io::Write;
use std::process::Command;

/// Stands in for the device prelude: the same names, host implementations.
const SHIM: &str = r#"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#define __device__
#define __forceinline__ inline
typedef unsigned char u8; typedef signed char i8; typedef unsigned short u16; typedef unsigned int u32;
typedef long long i64;
static float h2f(u16 h) {
    u32 s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = std::ldexp((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = std::ldexp((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
static float ld_half(const u8* p) { return h2f((u16)p[0] | ((u16)p[1] << 8)); }
"#;

const MAIN: &str = r#"
template <class W> static void run(const u8* w, const float* x, int rows, int cols, long row_bytes, FILE* out) {
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) { float v = W::get(w + r * row_bytes, k); fwrite(&v, 4, 1, out); }
    for (int r = 0; r < rows; r++) {
        float s = 0; for (int i = 0; i < cols / 32; i++) s += W::dot32(w + r * row_bytes, i, x + 32 * i);
        fwrite(&s, 4, 1, out);
    }
}
int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb"); int hdr[4]; if (fread(hdr, 4, 4, f) != 4) return 2;
    int ty = hdr[0], rows = hdr[1], cols = hdr[2]; long rb = hdr[3];
    std::vector<u8> w(rows * rb); std::vector<float> x(cols);
    if (fread(w.data(), 1, w.size(), f) != w.size() || fread(x.data(), 4, cols, f) != (size_t)cols) return 3;
    FILE* out = fopen(argv[2], "wb");
    switch (ty) {
        case 0: run<WF32>(w.data(), x.data(), rows, cols, rb, out); break;
        case 1: run<WF16>(w.data(), x.data(), rows, cols, rb, out); break;
        case 2: run<WQ8_0>(w.data(), x.data(), rows, cols, rb, out); break;
        case 3: run<WQ4_0>(w.data(), x.data(), rows, cols, rb, out); break;
        case 4: run<WQ4_K>(w.data(), x.data(), rows, cols, rb, out); break;
        case 5: run<WQ6_K>(w.data(), x.data(), rows, cols, rb, out); break;
        case 6: run<WQ4_1>(w.data(), x.data(), rows, cols, rb, out); break;
        case 7: run<WQ5_K>(w.data(), x.data(), rows, cols, rb, out); break;
        default: return 4;
    }
    fclose(out); return 0;
}
"#;

#[test]
fn weight_accessors_match_reference_on_host() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("check.cpp");
    let exe = dir.path().join("check");
    std::fs::write(&src, format!("{SHIM}\n{}\n{MAIN}", include_str!("quant.cuh"))).unwrap();
    let built = Command::new(&cxx).arg("-O1").arg("-o").arg(&exe).arg(&src).output();
    match built {
        Err(e) => {
            eprintln!("skipped: no C++ compiler ({cxx}: {e})");
            return;
        }
        Ok(o) if !o.status.success() => panic!(
            "quant.cuh does not compile on the host:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_1,
        GgmlType::Q5_K,
    ];
    let (rows, cols) = (3usize, 512usize);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        // xorshift64*: deterministic inputs without a dependency.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    for (idx, ty) in types.into_iter().enumerate() {
        let w: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rows * rb];
        quantize_row(ty, &w, &mut bytes).unwrap();
        let mut deq = vec![0f32; rows * cols];
        dequantize_row(ty, &bytes, &mut deq).unwrap();

        let input = dir.path().join("in.bin");
        let output = dir.path().join("out.bin");
        let mut f = std::fs::File::create(&input).unwrap();
        for v in [idx as i32, rows as i32, cols as i32, rb as i32] {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        f.write_all(&bytes).unwrap();
        for v in &x {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        drop(f);
        let st = Command::new(&exe).arg(&input).arg(&output).status().unwrap();
        assert!(st.success(), "{ty}: harness failed ({st})");
        let raw = std::fs::read(&output).unwrap();
        let vals: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals.len(), rows * cols + rows, "{ty}: output size");
        for (i, (&g, &d)) in vals[..rows * cols].iter().zip(&deq).enumerate() {
            assert!(
                (g - d).abs() <= 1e-6 * (1.0 + d.abs()),
                "{ty}: get({i}) = {g}, dequantize_row = {d}"
            );
        }
        for r in 0..rows {
            let want: f32 = (0..cols).map(|k| deq[r * cols + k] * x[k]).sum();
            let got = vals[rows * cols + r];
            let mag: f32 = (0..cols).map(|k| (deq[r * cols + k] * x[k]).abs()).sum();
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + mag),
                "{ty}: dot32 row {r}: {got} vs {want}"
            );
        }
    }
}
