/* Reference quantizer for edgeact's oracle tests: runs ggml's quantize_row_*_ref on a file of
 * little-endian f32 and writes the blocks. Built by scripts/build-quant-ref.sh with
 * -ffp-contract=off, i.e. with C's unfused arithmetic (the reference semantics), whatever
 * flags the llama.cpp oracle itself was built with.
 *
 * usage: quant_ref TYPE_ID IN.f32 OUT.bin   (TYPE_ID: 2 3 8 12 13 14 15) */
#include "ggml-quants.c"
#include <stdio.h>

int main(int argc, char ** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TYPE_ID IN.f32 OUT.bin\n", argv[0]);
        return 2;
    }
    const int ty = atoi(argv[1]);
    FILE * f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    const long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const int64_t n = bytes / 4;
    float * x = malloc(bytes > 0 ? bytes : 1);
    if (fread(x, 4, n, f) != (size_t) n) { fprintf(stderr, "short read\n"); return 1; }
    fclose(f);
    if (n % ggml_blck_size(ty) != 0) { fprintf(stderr, "length not a multiple of the block\n"); return 1; }
    const size_t out_bytes = ggml_row_size(ty, n);
    void * y = calloc(1, out_bytes > 0 ? out_bytes : 1);
    switch (ty) {
        case GGML_TYPE_Q4_0: quantize_row_q4_0_ref(x, y, n); break;
        case GGML_TYPE_Q4_1: quantize_row_q4_1_ref(x, y, n); break;
        case GGML_TYPE_Q8_0: quantize_row_q8_0_ref(x, y, n); break;
        case GGML_TYPE_Q8_1: quantize_row_q8_1_ref(x, y, n); break;
        case GGML_TYPE_Q4_K: quantize_row_q4_K_ref(x, y, n); break;
        case GGML_TYPE_Q5_K: quantize_row_q5_K_ref(x, y, n); break;
        case GGML_TYPE_Q6_K: quantize_row_q6_K_ref(x, y, n); break;
        case GGML_TYPE_Q8_K: quantize_row_q8_K_ref(x, y, n); break;
        default: fprintf(stderr, "unsupported type %d\n", ty); return 1;
    }
    f = fopen(argv[3], "wb");
    if (!f || fwrite(y, 1, out_bytes, f) != out_bytes) { perror(argv[3]); return 1; }
    fclose(f);
    return 0;
}
