//! Runs the real CUDA kernel sources on the CPU, one OS thread per CUDA thread, and checks
//! each kernel against a naive reference (no GPU needed).
//!
//! The sources are compiled as C++20 by the host compiler (`$CXX`, else `c++`) behind a shim
//! that supplies `threadIdx`/`blockIdx`, `__syncthreads` (a block barrier), `__shfl_xor_sync`
//! (an exchange through memory between two warp barriers), `__shared__` (function statics:
//! blocks run one at a time), half conversions via `_Float16`, and dynamic shared memory. This
//! exercises the index arithmetic, tiling, masking, reductions and launch geometry exactly as
//! written; what it cannot show is GPU-only behaviour (races the barrier placement hides,
//! FMA contraction, the PTX half conversions). The weight accessors themselves are checked
//! against `quant::dequantize_row` by `host_check`. Skips when no C++20 compiler is found.

use super::{PRELUDE, SOURCES};
use std::process::Command;

const SHIM: &str = r#"
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>
#define EDGEACT_HOST_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__ __restrict
#define __shared__ static
struct Dim { int x, y, z; };
thread_local Dim threadIdx, blockIdx;
static Dim blockDim, gridDim;
static std::barrier<>* emu_block;
static std::vector<std::unique_ptr<std::barrier<>>> emu_warps;
static float emu_xf[1024];
static double emu_xd[1024];
alignas(16) static char emu_dyn[1 << 16];
static inline void __syncthreads() { emu_block->arrive_and_wait(); }
template <class T> static T emu_shfl(T* slots, T v, int o) {
    int t = threadIdx.x; auto& b = *emu_warps[t >> 5];
    slots[t] = v; b.arrive_and_wait(); T r = slots[t ^ o]; b.arrive_and_wait(); return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int o) { return emu_shfl(emu_xf, v, o); }
static inline double __shfl_xor_sync(unsigned, double v, int o) { return emu_shfl(emu_xd, v, o); }
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float h2f(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
static inline unsigned short f2h(float f) { _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h; }
#define EDGEACT_DYNAMIC_SHARED(T, name) T* name = (T*)emu_dyn

template <class F> static void launch(Dim grid, int threads, F f) {
    gridDim = grid; blockDim = Dim{threads, 1, 1};
    for (int by = 0; by < grid.y; by++)
        for (int bx = 0; bx < grid.x; bx++) {
            std::barrier<> block(threads);
            emu_block = &block;
            emu_warps.clear();
            for (int w = 0; w < threads / 32; w++) emu_warps.emplace_back(new std::barrier<>(32));
            std::vector<std::thread> ts;
            for (int t = 0; t < threads; t++)
                ts.emplace_back([&, t] { threadIdx = Dim{t, 0, 0}; blockIdx = Dim{bx, by, 0}; f(); });
            for (auto& t : ts) t.join();
        }
}
"#;

const MAIN: &str = r#"
static std::mt19937 rng(42);
static float urand(float a) { return std::uniform_real_distribution<float>(-a, a)(rng); }
static int failures = 0;
static void check(const char* what, const float* got, const double* want, const double* mag, size_t n, double tol) {
    for (size_t i = 0; i < n; i++) {
        double m = mag ? mag[i] : std::fabs(want[i]);
        if (!(std::fabs(got[i] - want[i]) <= tol * (1.0 + m))) {
            std::printf("FAIL %s[%zu]: kernel %.7g, reference %.7g\n", what, i, got[i], want[i]);
            failures++;
            return;
        }
    }
    std::printf("ok %s (%zu values)\n", what, n);
}

// Random row bytes for a type with sane f16 scales at the offsets the format keeps them.
static std::vector<u8> random_rows(int ty, int rows, int cols, long* rb) {
    const int bs[] = {4 * 32, 2 * 32, 34, 18, 20, 144, 210, 176}, be[] = {32, 32, 32, 32, 32, 256, 256, 256};
    // F32 and F16 rows may have any width; quantized rows hold whole blocks.
    *rb = ty < 2 ? (long)cols * (bs[ty] / 32) : (long)cols / be[ty] * bs[ty];
    std::vector<u8> w(rows * *rb);
    for (auto& b : w) b = (u8)(rng() & 255);
    auto put = [&](size_t off, float v) { unsigned short h = f2h(v); w[off] = h & 255; w[off + 1] = h >> 8; };
    if (ty < 2) {
        for (long e = 0; e < rows * (long)cols; e++) {
            float v = urand(1);
            if (ty == 0) std::memcpy(&w[4 * e], &v, 4); else put(2 * e, v);
        }
        return w;
    }
    for (int r = 0; r < rows; r++)
        for (long blk = 0; blk < *rb / bs[ty]; blk++) {
            size_t o = r * *rb + blk * bs[ty];
            switch (ty) {
                case 2: case 3: put(o, urand(0.05f)); break;
                case 4: case 5: case 7: put(o, urand(0.05f)); put(o + 2, urand(0.05f)); break;
                case 6: put(o + 208, urand(0.01f)); break;
            }
        }
    return w;
}

template <class W, class MV, class MM> static void test_matrix(const char* name, int ty, MV mv, MM mm, int cols = 512) {
    int rows = 67; long rb;
    auto w = random_rows(ty, rows, cols, &rb);
    for (int ntok : {1, 5, 40}) {
        std::vector<float> x(ntok * cols), y(ntok * rows, NAN);
        for (auto& v : x) v = urand(1);
        std::vector<double> want(ntok * rows), mag(ntok * rows);
        for (int t = 0; t < ntok; t++)
            for (int r = 0; r < rows; r++) {
                double s = 0, m = 0;
                for (int k = 0; k < cols; k++) { double p = (double)W::get(&w[r * rb], k) * x[t * cols + k]; s += p; m += std::fabs(p); }
                want[t * rows + r] = s; mag[t * rows + r] = m;
            }
        if (ntok == 1) launch(Dim{(rows + 3) / 4, 1, 1}, 128, [&] { mv(w.data(), x.data(), y.data(), rows, cols, (i64)rb); });
        else launch(Dim{(rows + 63) / 64, (ntok + 31) / 32, 1}, 256, [&] { mm(w.data(), x.data(), y.data(), rows, cols, ntok, (i64)rb); });
        char what[64]; std::snprintf(what, sizeof what, "%s %dx%d x%d", name, rows, cols, ntok);
        check(what, y.data(), want.data(), mag.data(), y.size(), 1e-5);
    }
}

int main() {
#define T(name, W, id) test_matrix<W>(#name, id, matvec_##name, matmul_##name);
    T(f32, WF32, 0) T(f16, WF16, 1) T(q8_0, WQ8_0, 2) T(q4_0, WQ4_0, 3) T(q4_1, WQ4_1, 4) T(q4_k, WQ4_K, 5) T(q6_k, WQ6_K, 6) T(q5_k, WQ5_K, 7)
    // Float rows whose width is not a multiple of 32 (stories260K's ffn_down has 172 columns),
    // and one narrower than a single item.
    for (int cols : {172, 7}) {
        test_matrix<WF32>("f32", 0, matvec_f32, matmul_f32, cols);
        test_matrix<WF16>("f16", 1, matvec_f16, matmul_f16, cols);
    }

    int rows = 3, n = 1000;
    std::vector<float> x(rows * n), w(n), up(rows * n), out(rows * n);
    for (auto& v : x) v = urand(3);
    for (auto& v : w) v = urand(1);
    for (auto& v : up) v = urand(2);
    std::vector<double> want(rows * n);
    for (int r = 0; r < rows; r++) {
        double ss = 0; for (int i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
        float s = (float)(1.0 / std::sqrt(ss / n + 1e-5));
        for (int i = 0; i < n; i++) want[r * n + i] = x[r * n + i] * s * w[i];
    }
    launch(Dim{rows, 1, 1}, 256, [&] { rms_norm(x.data(), w.data(), out.data(), n, 1e-5f); });
    check("rms_norm", out.data(), want.data(), nullptr, out.size(), 1e-6);

    for (int i = 0; i < rows * n; i++) want[i] = x[i] / (1.0 + std::exp(-(double)x[i])) * up[i];
    launch(Dim{12, 1, 1}, 256, [&] { swiglu(x.data(), up.data(), out.data(), (i64)rows * n); });
    check("swiglu (grid-stride)", out.data(), want.data(), nullptr, out.size(), 1e-5);

    std::vector<float> acc = x;
    for (int i = 0; i < rows * n; i++) want[i] = (double)x[i] + up[i];
    launch(Dim{2, 1, 1}, 256, [&] { add_inplace(acc.data(), up.data(), (i64)rows * n); });
    check("add_inplace", acc.data(), want.data(), nullptr, acc.size(), 1e-7);

    std::vector<float> sm = x;
    for (int i = 2 * n; i < 3 * n; i++) sm[i] = -INFINITY;
    for (int r = 0; r < rows; r++) {
        double m = -INFINITY; for (int i = 0; i < n; i++) m = std::fmax(m, sm[r * n + i]);
        double s = 0; for (int i = 0; i < n; i++) s += std::isinf(m) ? 1 : std::exp(sm[r * n + i] - m);
        for (int i = 0; i < n; i++) want[r * n + i] = std::isinf(m) ? 1.0 / n : std::exp(sm[r * n + i] - m) / s;
    }
    launch(Dim{rows, 1, 1}, 256, [&] { softmax(sm.data(), n); });
    check("softmax", sm.data(), want.data(), nullptr, sm.size(), 1e-5);

    // RoPE: 4 tokens x 3 heads x 64 at positions 9.., table of 32 positions.
    int nt = 4, nh = 3, hd = 64, p0 = 9, npos = 32;
    std::vector<float> tab(npos * hd), q(nt * nh * hd);
    for (int p = 0; p < npos; p++)
        for (int i = 0; i < hd / 2; i++) {
            double th = p * std::pow(10000.0, -2.0 * i / hd);
            tab[2 * (p * hd / 2 + i)] = (float)std::cos(th); tab[2 * (p * hd / 2 + i) + 1] = (float)std::sin(th);
        }
    for (auto& v : q) v = urand(1);
    std::vector<double> rw(q.size());
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < hd / 2; i++) {
                int o = (t * nh + h) * hd + 2 * i; const float* c = &tab[2 * ((p0 + t) * hd / 2 + i)];
                rw[o] = q[o] * c[0] - q[o + 1] * c[1]; rw[o + 1] = q[o] * c[1] + q[o + 1] * c[0];
            }
    launch(Dim{1, 1, 1}, 256, [&] { rope(q.data(), tab.data(), nt, nh, hd, p0); });
    check("rope (grid-stride)", q.data(), rw.data(), nullptr, q.size(), 1e-6);

    // KV store + GQA attention: 8 heads over 2 KV heads, 6 cached positions + 3 new tokens.
    int H = 8, KV = 2, D = 64, P0 = 6, NT = 3, CAP = 16, dim = H * D, kvd = KV * D, tot = P0 + NT;
    std::vector<float> k(tot * kvd), v(tot * kvd), qa(NT * dim), o(NT * dim);
    for (auto& e : k) e = urand(1);
    for (auto& e : v) e = urand(1);
    for (auto& e : qa) e = urand(1);
    std::vector<unsigned short> kc(CAP * kvd), vc(CAP * kvd);
    launch(Dim{3, 1, 1}, 256, [&] { kv_store(k.data(), v.data(), kc.data(), vc.data(), P0, kvd, 0); });
    launch(Dim{1, 1, 1}, 256, [&] { kv_store(k.data() + P0 * kvd, v.data() + P0 * kvd, kc.data(), vc.data(), NT, kvd, P0); });
    std::vector<float> kh(tot * kvd); std::vector<double> kw(tot * kvd);
    for (int i = 0; i < tot * kvd; i++) { kh[i] = h2f(kc[i]); kw[i] = h2f(f2h(k[i])); }
    check("kv_store", kh.data(), kw.data(), nullptr, kh.size(), 0);
    std::vector<double> aw(NT * dim);
    for (int t = 0; t < NT; t++)
        for (int h = 0; h < H; h++) {
            int seen = P0 + t + 1, off = h / (H / KV) * D; std::vector<double> s(seen); double m = -INFINITY, z = 0;
            for (int j = 0; j < seen; j++) {
                double d = 0; for (int e = 0; e < D; e++) d += (double)h2f(kc[j * kvd + off + e]) * qa[(t * H + h) * D + e];
                s[j] = d / std::sqrt((double)D); m = std::fmax(m, s[j]);
            }
            for (int j = 0; j < seen; j++) { s[j] = std::exp(s[j] - m); z += s[j]; }
            for (int e = 0; e < D; e++) {
                double a = 0; for (int j = 0; j < seen; j++) a += s[j] / z * h2f(vc[j * kvd + off + e]);
                aw[(t * H + h) * D + e] = a;
            }
        }
    launch(Dim{H, NT, 1}, 128, [&] { attention(qa.data(), kc.data(), vc.data(), o.data(), H, KV, D, P0, 1.0f / std::sqrt((float)D)); });
    check("attention", o.data(), aw.data(), nullptr, o.size(), 1e-5);
    return failures ? 1 : 0;
}
"#;

#[test]
fn kernels_match_naive_reference_in_host_emulation() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("emu.cpp");
    let exe = dir.path().join("emu");
    let mut text = format!("{SHIM}\n{PRELUDE}\n");
    for (name, s) in SOURCES {
        text.push_str(&format!("// ---- {name}.cu ----\n{s}\n"));
    }
    text.push_str(MAIN);
    std::fs::write(&src, text).unwrap();
    let built = Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", "-o"])
        .arg(&exe)
        .arg(&src)
        .output();
    match built {
        Err(e) => {
            eprintln!("skipped: no C++ compiler ({cxx}: {e})");
            return;
        }
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            if err.contains("barrier") && err.contains("No such file") {
                eprintln!("skipped: {cxx} has no C++20 <barrier>");
                return;
            }
            panic!("kernel sources do not compile in host emulation:\n{err}");
        }
        Ok(_) => {}
    }
    let run = Command::new(&exe).output().unwrap();
    let log = String::from_utf8_lossy(&run.stdout);
    eprintln!("{log}");
    assert!(run.status.success(), "host emulation found kernel errors:\n{log}");
}
