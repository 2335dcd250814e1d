/* STREAM-like memory bandwidth probe for the decode roofline (tokens/s <= bandwidth / bytes of
 * weights read per token). Reports the best of several passes of a read-only sum (what a
 * matvec does to the weights) and of a copy, over arrays far larger than the caches.
 * Build: cc -O3 -march=native -ffast-math -fopenmp scripts/membw.c -o target/membw
 * (-ffast-math lets the read sum vectorize; without it the sum is add-latency bound)
 * Run: target/membw [MiB] [threads]
 */
#include <omp.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : omp_get_max_threads();
    omp_set_num_threads(threads);
    size_t n = mib * 1024 * 1024 / sizeof(double);
    /* In 2 MiB pages, as the runtime's repacked weights are: in 4 KiB pages one core's read
     * rate is bound by TLB misses (20-23 GB/s on the 2-core VM against 33-35 in huge pages),
     * which put the 1-thread roofline below what decode reaches. */
    size_t bytes = (n * sizeof(double) + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    double *a = aligned_alloc(2u << 20, bytes), *b = aligned_alloc(2u << 20, bytes);
    if (!a || !b) return 1;
    madvise(a, bytes, MADV_HUGEPAGE);
    madvise(b, bytes, MADV_HUGEPAGE);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) { a[i] = 1.0; b[i] = 0.0; }
    double best_read = 0, best_copy = 0, sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t = now(), s = 0;
#pragma omp parallel for reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += a[i];
        t = now() - t;
        sink += s;
        if (n * 8 / t > best_read) best_read = n * 8 / t;
        t = now();
#pragma omp parallel for
        for (size_t i = 0; i < n; i++) b[i] = a[i];
        t = now() - t;
        /* copy moves 2 bytes per byte (read + write), not counting write-allocate */
        if (2.0 * n * 8 / t > best_copy) best_copy = 2.0 * n * 8 / t;
    }
    printf("threads %d, %zu MiB arrays: read %.2f GB/s, copy %.2f GB/s (checksum %g)\n", threads, mib,
           best_read / 1e9, best_copy / 1e9, sink + b[n / 2]);
    return 0;
}
