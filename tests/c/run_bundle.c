/* Runs an aotc bundle from C, without Python: the example of embedding the runtime.
 *
 *   run_bundle BUNDLE_DIR IN_0.bin ... IN_n.bin OUT.bin
 *
 * Each IN_i.bin holds the raw bytes of the model's i-th input (in manifest order); the model's
 * first output is written raw to OUT.bin. Exit status 0 on success, 1 with the runtime's error
 * on stderr otherwise. */
#include <stdio.h>
#include <stdlib.h>

#include "aotc_runtime.h"

static size_t dtype_size(const char* d) {
  switch (d[0]) {
    case 'f': return d[5] == '3' ? 4 : 2;   /* float32 / float16 */
    case 'b': return d[1] == 'o' ? 1 : 2;   /* bool / bfloat16 */
    case 'i': return d[3] == '8' ? 1 : d[3] == '3' ? 4 : 8;
    case 'u': return 1;
    default: return 0;
  }
}

static size_t nbytes(const char* dtype, int32_t ndim, const int64_t* shape) {
  size_t n = dtype_size(dtype);
  for (int i = 0; i < ndim; ++i) n *= (size_t)shape[i];
  return n;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s BUNDLE_DIR IN_0.bin ... OUT.bin\n", argv[0]);
    return 2;
  }
  aotc_model* m = aotc_load(argv[1]);
  if (!m) { fprintf(stderr, "error: %s\n", aotc_last_error()); return 1; }
  int nin = aotc_num_inputs(m);
  if (argc != 3 + nin) { fprintf(stderr, "error: the model has %d inputs\n", nin); return 2; }
  aotc_tensor* ins = calloc((size_t)nin, sizeof *ins);
  if (!ins) { fprintf(stderr, "error: out of memory\n"); return 1; }
  for (int i = 0; i < nin; ++i) {
    if (aotc_input_info(m, i, &ins[i].name, &ins[i].dtype, &ins[i].ndim, &ins[i].shape) != 0) {
      fprintf(stderr, "error: %s\n", aotc_last_error());
      return 1;
    }
    size_t n = nbytes(ins[i].dtype, ins[i].ndim, ins[i].shape);
    ins[i].data = malloc(n ? n : 1);
    FILE* f = fopen(argv[2 + i], "rb");
    if (!ins[i].data || !f || fread(ins[i].data, 1, n, f) != n) {
      fprintf(stderr, "error: cannot read %zu bytes from %s\n", n, argv[2 + i]);
      if (f) fclose(f);
      return 1;
    }
    fclose(f);
  }
  aotc_tensor out;
  /* The runtime answers nonzero (and sets no pointers) for a model without outputs: never read them then. */
  if (aotc_output_info(m, 0, &out.name, &out.dtype, &out.ndim, &out.shape) != 0) {
    fprintf(stderr, "error: the model has no output to write (%s)\n", aotc_last_error());
    return 1;
  }
  size_t on = nbytes(out.dtype, out.ndim, out.shape);
  out.data = malloc(on ? on : 1);
  if (!out.data) { fprintf(stderr, "error: out of memory\n"); return 1; }
  if (aotc_run(m, ins, nin, &out, 1) != 0) { fprintf(stderr, "error: %s\n", aotc_last_error()); return 1; }
  FILE* f = fopen(argv[argc - 1], "wb");
  if (!f || fwrite(out.data, 1, on, f) != on) { fprintf(stderr, "error: cannot write %s\n", argv[argc - 1]); return 1; }
  fclose(f);
  printf("%s: %s, %zu bytes\n", out.name, out.dtype, on);
  for (int i = 0; i < nin; ++i) free(ins[i].data);
  free(ins);
  free(out.data);
  aotc_free(m);
  return 0;
}
