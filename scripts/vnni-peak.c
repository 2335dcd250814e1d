/* Peak int8 dot-product rate of one or more cores: AVX-512 VNNI `vpdpbusd` (64 u8 x s8
 * products summed into 16 i32 lanes per instruction) on 12 independent accumulators, in
 * registers (no memory traffic). The compute roofline of prefill: pp t/s <= threads x this
 * rate / (weights x 1 multiply-add per weight per token), before any unpacking or scaling.
 * Build: cc -O3 -funroll-loops -march=native -fopenmp scripts/vnni-peak.c -o target/vnni-peak
 * (without -funroll-loops gcc keeps the accumulator loop and the rate halves)
 * Run: target/vnni-peak [threads]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define ACC 12
int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    const long iters = 200000000 / ACC;
    double best = 0;
    long long sink = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t = now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5 + omp_get_thread_num());
            __m512i acc[ACC];
            for (int k = 0; k < ACC; k++) acc[k] = _mm512_set1_epi32(k);
            for (long i = 0; i < iters; i++) {
                for (int k = 0; k < ACC; k++) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
                __asm__ volatile("" : "+v"(a), "+v"(b));
            }
            __m512i s = acc[0];
            for (int k = 1; k < ACC; k++) s = _mm512_add_epi32(s, acc[k]);
            sink += _mm512_reduce_add_epi32(s);
        }
        t = now() - t;
        double macs = (double)threads * iters * ACC * 64;
        if (macs / t > best) best = macs / t;
    }
    printf("threads %d: vpdpbusd %.1f G int8 multiply-adds/s (%.1f per thread; checksum %lld)\n", threads,
           best / 1e9, best / 1e9 / threads, sink);
    return 0;
}
