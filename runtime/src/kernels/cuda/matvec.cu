// Matrix-vector product for single-token decode: y[r] = sum_k W[r, k] * x[k].
//
// One warp per output row, MATVEC_ROWS rows per block. Lane l takes the row's 32-element
// items l, l + 32, ..., so a warp streams a contiguous run of the row's blocks per step
// (decode is bound by reading the weights once; x stays in L1/L2).
// Quantized rows hold whole 32-element items (checked on the host); F32/F16 rows of any width
// end in a tail of fewer than 32 elements, read one by one.

#define MATVEC_ROWS 4

template <class W>
static __device__ void matvec_impl(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
                                   int rows, int cols, i64 row_bytes) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * MATVEC_ROWS + warp;
    if (row >= rows) return;  // uniform per warp, so the shuffles below stay converged
    const u8* wr = w + (i64)row * row_bytes;
    int items = cols >> 5;
    float acc = 0.0f;
    for (int i = lane; i < items; i += 32) acc += W::dot32(wr, i, x + (i << 5));
    for (int k = (items << 5) + lane; k < cols; k += 32) acc += W::get(wr, k) * x[k];
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

#define EDGEACT_MATVEC(name, W)                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_ROWS)                                        \
        matvec_##name(const u8* w, const float* x, float* y, int rows, int cols, i64 row_bytes) {         \
        matvec_impl<W>(w, x, y, rows, cols, row_bytes);                                                    \
    }
EDGEACT_FOR_EACH_WEIGHT(EDGEACT_MATVEC)
