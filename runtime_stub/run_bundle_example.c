/* Runs an aotc bundle from C through the runtime's C API (aotc_runtime.h), without Python. Every CPU
 * bundle carries this file, the header and libaotc_runtime.so; from the bundle directory:
 *
 *   cc -o run_bundle run_bundle_example.c -L. -laotc_runtime -Wl,-rpath,'$ORIGIN'
 *   ./run_bundle . IN_0.bin ... IN_n.bin OUT.bin
 *
 * IN_i.bin holds the raw bytes of the i-th input (manifest order); the first output is written raw to
 * OUT.bin. Exit status 0, or 1 with the runtime's error on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aotc_runtime.h"

static size_t nbytes(const char* dtype, int32_t ndim, const int64_t* shape) {
  size_t n = strstr(dtype, "64") ? 8 : strstr(dtype, "32") ? 4 : strstr(dtype, "16") ? 2 : 1;
  for (int i = 0; i < ndim; ++i) n *= (size_t)shape[i];
  return n;
}

static int fail(const char* what) { fprintf(stderr, "error: %s\n", what); return 1; }

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s BUNDLE_DIR IN_0.bin ... OUT.bin\n", argv[0]); return 2; }
  aotc_model* m = aotc_load(argv[1]);  /* checks the manifest and every file's SHA-256 first */
  if (!m) return fail(aotc_last_error());
  int nin = aotc_num_inputs(m);
  if (argc != 3 + nin) { fprintf(stderr, "error: the model has %d inputs\n", nin); return 2; }
  aotc_tensor ins[256], out;  /* the runtime refuses a bundle with more than 256 inputs */
  for (int i = 0; i < nin; ++i) {
    if (aotc_input_info(m, i, &ins[i].name, &ins[i].dtype, &ins[i].ndim, &ins[i].shape)) return fail(aotc_last_error());
    size_t n = nbytes(ins[i].dtype, ins[i].ndim, ins[i].shape);
    FILE* f = fopen(argv[2 + i], "rb");
    ins[i].data = malloc(n ? n : 1);
    int ok = f && ins[i].data && fread(ins[i].data, 1, n, f) == n;
    if (f) fclose(f);
    if (!ok) { fprintf(stderr, "error: cannot read %zu bytes from %s\n", n, argv[2 + i]); return 1; }
  }
  if (aotc_output_info(m, 0, &out.name, &out.dtype, &out.ndim, &out.shape)) return fail(aotc_last_error());
  size_t on = nbytes(out.dtype, out.ndim, out.shape);
  out.data = malloc(on ? on : 1);
  if (!out.data) return fail("out of memory");
  if (aotc_run(m, ins, nin, &out, 1) != 0) return fail(aotc_last_error());  /* validates the inputs first */
  FILE* f = fopen(argv[argc - 1], "wb");
  if (!f || fwrite(out.data, 1, on, f) != on) return fail("cannot write the output file");
  fclose(f);
  printf("%s: %s, %zu bytes\n", out.name, out.dtype, on);
  aotc_free(m);
  return 0;
}
