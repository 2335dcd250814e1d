// Batched matmul for prefill: y[t * rows + r] = sum_k W[r, k] * x[t * cols + k] (the CPU
// kernels' output layout: one row of `rows` outputs per token).
//
// Classic shared-memory tiling: a 256-thread block owns a 64-row x 32-token output tile and
// walks k in steps of 32, dequantizing the 64 x 32 weight tile into shared memory once per
// step so that every weight is converted once per block instead of once per token. Lane tx
// owns rows tx and tx + 32 (coalesced stores), warp ty owns tokens 4ty .. 4ty + 3 (the x tile
// is broadcast). The +1 padding keeps the column reads free of bank conflicts. The last k step
// of an F32/F16 row whose width is not a multiple of 32 reads zeros past the row's end.

#define MM_BM 64
#define MM_BN 32
#define MM_BK 32

template <class W>
static __device__ void matmul_impl(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
                                   int rows, int cols, int ntok, i64 row_bytes) {
    __shared__ float ws[MM_BM][MM_BK + 1];
    __shared__ float xs[MM_BN][MM_BK + 1];
    int tid = threadIdx.x, tx = tid & 31, ty = tid >> 5;
    int r0 = blockIdx.x * MM_BM, t0 = blockIdx.y * MM_BN;
    float acc[2][4];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;

    for (int k0 = 0; k0 < cols; k0 += MM_BK) {
#pragma unroll
        for (int i = 0; i < (MM_BM * MM_BK) / 256; i++) {
            int e = tid + 256 * i, rr = e >> 5, kk = e & 31, r = r0 + rr, k = k0 + kk;
            ws[rr][kk] = r < rows && k < cols ? W::get(w + (i64)r * row_bytes, k) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < (MM_BN * MM_BK) / 256; i++) {
            int e = tid + 256 * i, tt = e >> 5, kk = e & 31, t = t0 + tt, k = k0 + kk;
            xs[tt][kk] = t < ntok && k < cols ? x[(i64)t * cols + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < MM_BK; kk++) {
            float w0 = ws[tx][kk], w1 = ws[tx + 32][kk];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                float xv = xs[ty * 4 + b][kk];
                acc[0][b] += w0 * xv;
                acc[1][b] += w1 * xv;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int b = 0; b < 4; b++) {
        int t = t0 + ty * 4 + b;
        if (t >= ntok) continue;
#pragma unroll
        for (int a = 0; a < 2; a++) {
            int r = r0 + tx + 32 * a;
            if (r < rows) y[(i64)t * rows + r] = acc[a][b];
        }
    }
}

#define EDGEACT_MATMUL(name, W)                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                      \
        matmul_##name(const u8* w, const float* x, float* y, int rows, int cols, int ntok, i64 row_bytes) { \
        matmul_impl<W>(w, x, y, rows, cols, ntok, row_bytes);                                               \
    }
EDGEACT_FOR_EACH_WEIGHT(EDGEACT_MATMUL)
