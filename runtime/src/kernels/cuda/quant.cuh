// Weight formats, one struct per ggml type, each with the two accessors the matrix kernels
// are written against (byte layouts as ggml-common.h / runtime/src/quant/blocks.rs):
//
//   dot32(row, i, x): sum over the 32 weights 32*i .. 32*i+31 of `row` times x[0..32]
//   get(row, k):      weight k of `row`, dequantized
//
// Every supported type splits a row into 32-element "items" (a Q4_0/Q8_0 block, half of a
// Q4_1 block, half of a Q4_K/Q5_K 64-element scale pair, two Q6_K 16-element sub-blocks, or 32 plain values), so the
// kernels need no per-type loop structure.

struct WF32 {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const float* w = (const float*)row + i * 32;
        float s = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; l++) s += w[l] * x[l];
        return s;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) { return ((const float*)row)[k]; }
};

struct WF16 {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u16* w = (const u16*)row + i * 32;
        float s = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; l++) s += h2f(w[l]) * x[l];
        return s;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) { return h2f(((const u16*)row)[k]); }
};

// block_q8_0 { half d; int8 qs[32]; } = 34 bytes
struct WQ8_0 {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + i * 34;
        const i8* q = (const i8*)(b + 2);
        float s = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; l++) s += (float)q[l] * x[l];
        return ld_half(b) * s;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) {
        const u8* b = row + (k >> 5) * 34;
        return ld_half(b) * (float)((const i8*)(b + 2))[k & 31];
    }
};

// block_q4_0 { half d; u8 qs[16]; } = 18 bytes; element l < 16 is the low nibble of qs[l],
// element l + 16 the high nibble; value = d * (q - 8).
struct WQ4_0 {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + i * 18;
        const u8* q = b + 2;
        float s = 0.0f;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            int v = q[l];
            s += (float)((v & 15) - 8) * x[l] + (float)((v >> 4) - 8) * x[l + 16];
        }
        return ld_half(b) * s;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) {
        const u8* b = row + (k >> 5) * 18;
        int l = k & 31;
        int v = b[2 + (l & 15)];
        int q = l < 16 ? (v & 15) : (v >> 4);
        return ld_half(b) * (float)(q - 8);
    }
};

// block_q4_1 { half d; half m; u8 qs[16]; } = 20 bytes; nibbles as Q4_0; value = d * q + m.
struct WQ4_1 {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + i * 20;
        const u8* q = b + 4;
        float sq = 0.0f, sx = 0.0f;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            int v = q[l];
            sq += (float)(v & 15) * x[l] + (float)(v >> 4) * x[l + 16];
            sx += x[l] + x[l + 16];
        }
        return ld_half(b) * sq + ld_half(b + 2) * sx;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) {
        const u8* b = row + (k >> 5) * 20;
        int l = k & 31;
        int v = b[4 + (l & 15)];
        int q = l < 16 ? (v & 15) : (v >> 4);
        return ld_half(b) * (float)q + ld_half(b + 2);
    }
};

// 6-bit scale and min of sub-block j (0..8) from the 12 packed bytes of a Q4_K/Q5_K block.
static __device__ __forceinline__ void scale_min_k4(int j, const u8* s, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; } = 144 bytes, 256 weights.
// Sub-block j (32 weights) reads qs[32*(j/2) ..] low nibbles (j even) or high nibbles (j odd);
// value = d * sc_j * q - dmin * m_j.
struct WQ4_K {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + (i >> 3) * 144;
        int j = i & 7;
        int sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        const u8* q = b + 16 + 32 * (j >> 1);
        int shift = (j & 1) * 4;
        float sq = 0.0f, sx = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            sq += (float)((q[l] >> shift) & 15) * x[l];
            sx += x[l];
        }
        return ld_half(b) * (float)sc * sq - ld_half(b + 2) * (float)m * sx;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) {
        const u8* b = row + (k >> 8) * 144;
        int e = k & 255, j = e >> 5, l = e & 31;
        int sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        int q = (b[16 + 32 * (j >> 1) + l] >> ((j & 1) * 4)) & 15;
        return ld_half(b) * (float)sc * (float)q - ld_half(b + 2) * (float)m;
    }
};

// block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } = 176 bytes: Q4_K
// plus a fifth bit per weight, bit j of qh[l] for element l of sub-block j.
struct WQ5_K {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + (i >> 3) * 176;
        int j = i & 7;
        int sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        const u8* qh = b + 16;
        const u8* q = b + 48 + 32 * (j >> 1);
        int shift = (j & 1) * 4;
        float sq = 0.0f, sx = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 15) | (((qh[l] >> j) & 1) << 4);
            sq += (float)v * x[l];
            sx += x[l];
        }
        return ld_half(b) * (float)sc * sq - ld_half(b + 2) * (float)m * sx;
    }
    static __device__ __forceinline__ float get(const u8* row, int k) {
        const u8* b = row + (k >> 8) * 176;
        int e = k & 255, j = e >> 5, l = e & 31;
        int sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        int q = ((b[48 + 32 * (j >> 1) + l] >> ((j & 1) * 4)) & 15) | (((b[16 + l] >> j) & 1) << 4);
        return ld_half(b) * (float)sc * (float)q - ld_half(b + 2) * (float)m;
    }
};

// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; } = 210 bytes, 256 weights.
// Element e: half h = e/128, quarter k = (e%128)/32, l = e%32; low 4 bits from
// ql[64h + 32(k&1) + l] (high nibble when k >= 2), high 2 bits from qh[32h + l] >> 2k;
// value = d * scales[8h + 2k + l/16] * (q - 32).
struct WQ6_K {
    static __device__ __forceinline__ float dot32(const u8* row, int i, const float* x) {
        const u8* b = row + (i >> 3) * 210;
        int j = i & 7, h = j >> 2, k = j & 3;
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        const i8* sc = (const i8*)(b + 192) + 8 * h + 2 * k;
        int lshift = (k >> 1) * 4, hshift = 2 * k;
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int l = 0; l < 16; l++) {
            int q = (((ql[l] >> lshift) & 15) | (((qh[l] >> hshift) & 3) << 4)) - 32;
            s0 += (float)q * x[l];
        }
#pragma unroll
        for (int l = 16; l < 32; l++) {
            int q = (((ql[l] >> lshift) & 15) | (((qh[l] >> hshift) & 3) << 4)) - 32;
            s1 += (float)q * x[l];
        }
        return ld_half(b + 208) * ((float)sc[0] * s0 + (float)sc[1] * s1);
    }
    static __device__ __forceinline__ float get(const u8* row, int kk) {
        const u8* b = row + (kk >> 8) * 210;
        int e = kk & 255, h = e >> 7, k = (e & 127) >> 5, l = e & 31;
        int lo = (b[64 * h + 32 * (k & 1) + l] >> ((k >> 1) * 4)) & 15;
        int hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
        int q = (lo | (hi << 4)) - 32;
        int sc = ((const i8*)(b + 192))[8 * h + 2 * k + (l >> 4)];
        return ld_half(b + 208) * (float)sc * (float)q;
    }
};

// Instantiates a kernel template once per weight type as extern "C" NAME_<type>.
#define EDGEACT_FOR_EACH_WEIGHT(X) X(f32, WF32) X(f16, WF16) X(q8_0, WQ8_0) X(q4_0, WQ4_0) X(q4_1, WQ4_1) X(q4_k, WQ4_K) X(q5_k, WQ5_K) X(q6_k, WQ6_K)
