// Element-wise and row-wise operations of the Llama forward pass, mirroring the CPU kernels'
// arithmetic (kernels/cpu/scalar.rs) so that the GPU and CPU paths agree to rounding.

// out = x * (1 / sqrt(mean(x^2) + eps)) * w, one block per row. The sum of squares is kept in
// double like the CPU reference, so long rows lose no precision.
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                    int n, float eps) {
    __shared__ double red[32];
    const float* xr = x + (i64)blockIdx.x * n;
    float* orow = out + (i64)blockIdx.x * n;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    ss = block_sum_d(ss, red);
    float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = xr[i] * scale * w[i];
}

// Rotates adjacent pairs (x[2i], x[2i+1]) of every head of `n_tok` rows of `n_heads * head_dim`
// values; token t is at position pos0 + t. `cs` is the host-computed table of (cos, sin) per
// position and pair, `head_dim / 2` pairs per position, identical to the CPU RopeTable.
extern "C" __global__ void rope(float* x, const float* __restrict__ cs, int n_tok, int n_heads, int head_dim, int pos0) {
    int half_dim = head_dim >> 1;
    i64 n_pairs = (i64)n_tok * n_heads * half_dim;
    for (i64 p = (i64)blockIdx.x * blockDim.x + threadIdx.x; p < n_pairs; p += (i64)gridDim.x * blockDim.x) {
        int i = (int)(p % half_dim);
        i64 th = p / half_dim;  // token * n_heads + head
        int t = (int)(th / n_heads);
        const float* c = cs + 2 * ((i64)(pos0 + t) * half_dim + i);
        float* v = x + th * head_dim + 2 * i;
        float a = v[0], b = v[1];
        v[0] = a * c[0] - b * c[1];
        v[1] = a * c[1] + b * c[0];
    }
}

// out = silu(gate) * up with silu(g) = g / (1 + exp(-g)) (accurate expf, not __expf).
extern "C" __global__ void swiglu(const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ out,
                                  i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// x += y (the residual connection).
extern "C" __global__ void add_inplace(float* x, const float* __restrict__ y, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) x[i] += y[i];
}

// In-place softmax of each `n`-wide row, one block per row; a row with no finite maximum
// becomes uniform (as the CPU softmax does) instead of NaN.
extern "C" __global__ void softmax(float* x, int n) {
    __shared__ float red[32];
    __shared__ double redd[32];
    float* r = x + (i64)blockIdx.x * n;
    float m = -__int_as_float(0x7f800000);
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, r[i]);
    m = block_max(m, red);
    if (m == -__int_as_float(0x7f800000)) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) r[i] = 1.0f / (float)n;
        return;
    }
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = expf(r[i] - m);
        r[i] = e;
        s += (double)e;
    }
    s = block_sum_d(s, redd);
    float inv = (float)(1.0 / s);
    for (int i = threadIdx.x; i < n; i += blockDim.x) r[i] *= inv;
}

// Appends n_tok rows of keys and values (f32, kv_dim wide) to a layer's f16 cache at
// positions pos0 .. pos0 + n_tok. `kc`/`vc` point at the layer's position 0.
extern "C" __global__ void kv_store(const float* __restrict__ k, const float* __restrict__ v, u16* kc, u16* vc,
                                    int n_tok, int kv_dim, int pos0) {
    i64 n = (i64)n_tok * kv_dim, base = (i64)pos0 * kv_dim;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        kc[base + i] = f2h(k[i]);
        vc[base + i] = f2h(v[i]);
    }
}
