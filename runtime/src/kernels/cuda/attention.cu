// Causal grouped-query attention over the f16 KV cache, one block per (query head, token).
//
// Token t of the chunk sits at position pos0 + t and sees cache positions 0 ..= pos0 + t (the
// chunk's own keys are stored before this runs). Scores live in dynamic shared memory
// (`n_seen` floats, sized by the host), so the context is bounded by the shared-memory size.
// Arithmetic mirrors model/attention.rs: scale * (q . k), max-subtracted softmax with a
// double-precision sum, then sum_j p_j * v_j.

#define ATT_MAX_HEAD_DIM 256

extern "C" __global__ void __launch_bounds__(128)
    attention(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc, float* __restrict__ out,
              int n_heads, int n_kv_heads, int head_dim, int pos0, float scale) {
    EDGEACT_DYNAMIC_SHARED(float, scores);
    __shared__ float qs[ATT_MAX_HEAD_DIM];
    __shared__ float red[32];
    __shared__ double redd[32];
    int head = blockIdx.x, t = blockIdx.y;
    int n_seen = pos0 + t + 1;
    int kv_dim = n_kv_heads * head_dim;
    int kv_off = (head / (n_heads / n_kv_heads)) * head_dim;
    const float* qh = q + ((i64)t * n_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = qh[d];
    __syncthreads();

    float m = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < n_seen; j += blockDim.x) {
        const u16* kr = kc + (i64)j * kv_dim + kv_off;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += h2f(kr[d]) * qs[d];
        s *= scale;
        scores[j] = s;
        m = fmaxf(m, s);
    }
    m = block_max(m, red);
    double sum = 0.0;
    for (int j = threadIdx.x; j < n_seen; j += blockDim.x) {
        float e = expf(scores[j] - m);
        scores[j] = e;
        sum += (double)e;
    }
    sum = block_sum_d(sum, redd);  // its barriers also publish every scores[j]
    float inv = (float)(1.0 / sum);

    float* oh = out + ((i64)t * n_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < n_seen; j++) acc += (scores[j] * inv) * h2f(vc[(i64)j * kv_dim + kv_off + d]);
        oh[d] = acc;
    }
}
