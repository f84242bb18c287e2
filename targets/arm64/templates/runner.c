/* aotc_runner: runs an aotc bundle on .npy inputs and writes .npy outputs, with the thin runtime
 * (runtime_stub/aotc_runtime.c as libaotc_runtime.so beside it). Built for the bundle's target and shipped in it, so a
 * device (or qemu-aarch64) needs nothing but the bundle directory:
 *
 *   aotc_runner BUNDLE -i NAME=FILE.npy ... [-o OUTDIR] [-t THREADS] [-r REPEAT]
 *
 * A bundle of shape buckets (docs/buckets.md) takes named .npy inputs of any size up to its largest bucket.
 *
 * Every model input is given once (NAME=FILE, or FILE alone for the inputs in manifest order); a
 * FILE not named *.npy is raw: the input's bytes in C order, in the model's dtype and shape.
 * Each output is written to OUTDIR/<name>.npy, the name with every character outside
 * [A-Za-z0-9._-] replaced by '_'. With -r N the model runs N times and the mean and minimum
 * wall time per run are printed. Exit status: 0, 1 on a usage or file error, 2 when the
 * runtime refuses the bundle or a run fails (its message on stderr). */
#define _GNU_SOURCE
#define AOTC_GLIBC_COMPAT_MAIN /* runs on glibc older than the build system's, too */
#include "glibc_compat.h"
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aotc_runtime.h"

#define MAX_IO 256

static const struct { const char* descr; const char* dtype; size_t size; } DTYPES[] = {
  {"<f4", "float32", 4}, {"<f2", "float16", 2}, {"|i1", "int8", 1}, {"|u1", "uint8", 1},
  {"<i4", "int32", 4}, {"<i8", "int64", 8}, {"|b1", "bool", 1}};

static void die(int code, const char* fmt, const char* a, const char* b) {
  fprintf(stderr, "aotc_runner: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  exit(code);
}

typedef struct { const char* dtype; int32_t ndim; int64_t shape[16]; void* data; size_t nbytes; } npy;

/* Reads a C-order .npy file (format 1.0, 2.0 or 3.0) of one of the dtypes above. */
static npy read_npy(const char* path) {
  npy r;
  memset(&r, 0, sizeof r);
  FILE* f = fopen(path, "rb");
  if (!f) die(1, "cannot open %s%s", path, "");
  unsigned char pre[12];
  if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) die(1, "%s is not an .npy file%s", path, "");
  size_t hlen = pre[8] | (size_t)pre[9] << 8;
  if (pre[6] >= 2) {
    if (fread(pre + 10, 1, 2, f) != 2) die(1, "%s: truncated header%s", path, "");
    hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  }
  char* h = calloc(hlen + 1, 1);
  if (fread(h, 1, hlen, f) != hlen) die(1, "%s: truncated header%s", path, "");
  const char* d = strstr(h, "'descr'");
  const char* fo = strstr(h, "'fortran_order'");
  const char* sh = strstr(h, "'shape'");
  if (!d || !fo || !sh) die(1, "%s: unreadable .npy header%s", path, "");
  d = strchr(d + 7, '\'');
  size_t size = 0;
  for (size_t i = 0; d && i < sizeof DTYPES / sizeof DTYPES[0]; ++i)
    if (!strncmp(d + 1, DTYPES[i].descr, 3) && d[4] == '\'') { r.dtype = DTYPES[i].dtype; size = DTYPES[i].size; }
  if (!r.dtype) die(1, "%s: dtype not supported by aotc_runner (header %s)", path, h);
  if (strstr(fo, "True") && strstr(fo, "True") < sh) die(1, "%s: Fortran-order arrays are not supported%s", path, "");
  const char* p = strchr(sh, '(');
  if (!p) die(1, "%s: unreadable shape%s", path, "");
  ++p;
  r.nbytes = size;
  for (;;) {
    while (*p == ' ' || *p == ',') ++p;
    if (*p == ')') break;
    char* end;
    long long v = strtoll(p, &end, 10);
    if (end == p || r.ndim == 16) die(1, "%s: unreadable shape%s", path, "");
    r.shape[r.ndim++] = v;
    r.nbytes *= (size_t)v;
    p = end;
  }
  free(h);
  if (posix_memalign(&r.data, 64, r.nbytes + 64) != 0) die(1, "out of memory reading %s%s", path, "");
  if (fread(r.data, 1, r.nbytes, f) != r.nbytes) die(1, "%s: truncated data%s", path, "");
  fclose(f);
  return r;
}

/* A raw file (anything not named *.npy): the input's bytes, C order, in the dtype and shape the model expects. */
static npy read_raw(const char* path, aotc_model* m, const char* name) {
  npy r;
  memset(&r, 0, sizeof r);
  int32_t ndim = -1;
  const int64_t* shape = NULL;
  for (int k = 0; k < aotc_num_inputs(m); ++k) {
    const char* nm;
    const char* dt;
    int32_t nd;
    const int64_t* sh;
    aotc_input_info(m, k, &nm, &dt, &nd, &sh);
    if (!strcmp(nm, name)) { r.dtype = dt; ndim = nd; shape = sh; }
  }
  if (ndim < 0) die(1, "the model has no input named %s%s", name, "");
  size_t size = 0;
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; ++i) if (!strcmp(DTYPES[i].dtype, r.dtype)) size = DTYPES[i].size;
  if (!size) die(1, "input %s has dtype %s, which aotc_runner cannot read", name, r.dtype);
  r.ndim = ndim;
  r.nbytes = size;
  for (int i = 0; i < ndim; ++i) { r.shape[i] = shape[i]; r.nbytes *= (size_t)shape[i]; }
  FILE* f = fopen(path, "rb");
  if (!f) die(1, "cannot open %s%s", path, "");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n != (long)r.nbytes) {
    char want[64];
    snprintf(want, sizeof want, "%zu", r.nbytes);
    die(1, "raw input file %s does not hold the input's bytes (expected %s bytes)", path, want);
  }
  if (posix_memalign(&r.data, 64, r.nbytes + 64) != 0) die(1, "out of memory reading %s%s", path, "");
  if (fread(r.data, 1, r.nbytes, f) != r.nbytes) die(1, "%s: truncated data%s", path, "");
  fclose(f);
  return r;
}

static const char* descr_of(const char* dtype) {
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; ++i)
    if (!strcmp(DTYPES[i].dtype, dtype)) return DTYPES[i].descr;
  return NULL;
}

static void write_npy(const char* path, const char* dtype, int32_t ndim, const int64_t* shape, const void* data,
                      size_t nbytes) {
  char dict[512];
  int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr_of(dtype));
  for (int i = 0; i < ndim; ++i) n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld, ", (long long)shape[i]);
  if (ndim > 0) n -= ndim == 1 ? 1 : 2;  /* (3,) for one axis, (2, 3) for more */
  n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
  size_t total = 10 + (size_t)n + 1;
  size_t pad = (64 - total % 64) % 64;
  size_t hlen = (size_t)n + pad + 1;
  FILE* f = fopen(path, "wb");
  if (!f) die(1, "cannot write %s%s", path, "");
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 255), (unsigned char)(hlen >> 8)};
  fwrite(pre, 1, 10, f);
  fwrite(dict, 1, (size_t)n, f);
  for (size_t i = 0; i < pad; ++i) fputc(' ', f);
  fputc('\n', f);
  if (fwrite(data, 1, nbytes, f) != nbytes) die(1, "cannot write %s%s", path, "");
  fclose(f);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char** argv) {
  const char* bundle = NULL;
  const char* out_dir = ".";
  const char* in_arg[MAX_IO];
  int n_in = 0, threads = 0, repeat = 1;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    int is_threads = !strcmp(a, "-j") || !strcmp(a, "--threads");  /* as `aotc run`'s flag */
    if ((!strcmp(a, "-i") || !strcmp(a, "-o") || is_threads || !strcmp(a, "-r")) && i + 1 >= argc)
      die(1, "%s needs a value%s", a, "");
    if (!strcmp(a, "-i")) { if (n_in == MAX_IO) die(1, "too many inputs%s%s", "", ""); in_arg[n_in++] = argv[++i]; }
    else if (!strcmp(a, "-o")) out_dir = argv[++i];
    else if (is_threads) threads = atoi(argv[++i]);
    else if (!strcmp(a, "-r")) repeat = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help") || bundle) {
      fprintf(stderr, "usage: aotc_runner BUNDLE -i NAME=FILE.npy ... [-o OUTDIR] [-j THREADS] [-r REPEAT]\n"
                      "  -o OUTDIR is created if it does not exist (its parent must)\n");
      return 1;
    } else bundle = a;
  }
  if (!bundle) die(1, "usage: aotc_runner BUNDLE -i NAME=FILE.npy ... [-o OUTDIR]%s%s", "", "");
  if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) die(1, "cannot create the output folder %s%s", out_dir, "");
  aotc_model* m = aotc_load(bundle);
  aotc_bucketed* bk = NULL;
  /* A bundle of shape buckets (aotc_load refuses it, saying so): the runtime picks the bucket that holds the
   * inputs, pads them and slices the outputs (docs/buckets.md). */
  if (!m && strstr(aotc_last_error(), "holds shape buckets")) bk = aotc_bucketed_load(bundle);
  if (!m && !bk) die(2, "%s%s", aotc_last_error(), "");
  if (threads > 0 && m) aotc_set_num_threads(m, threads);
  if (threads > 0 && bk) aotc_bucketed_set_num_threads(bk, threads);

  aotc_tensor ins[MAX_IO], outs[MAX_IO];
  npy arrs[MAX_IO];
  int ni = m ? aotc_num_inputs(m) : n_in, no = m ? aotc_num_outputs(m) : aotc_bucketed_num_outputs(bk);
  if (ni > MAX_IO || no > MAX_IO) die(1, "too many model inputs or outputs%s%s", "", "");
  for (int i = 0; i < n_in; ++i) {
    const char* eq = strchr(in_arg[i], '=');
    const char* path = eq ? eq + 1 : in_arg[i];
    size_t plen = strlen(path);
    int is_npy = plen > 4 && !strcmp(path + plen - 4, ".npy");
    if (bk && (!eq || !is_npy)) die(1, "a bundle of shape buckets takes named .npy inputs (-i NAME=FILE.npy: their "
                                       "shapes pick the bucket), not %s%s", in_arg[i], "");
    char* name;
    if (eq) name = strndup(in_arg[i], (size_t)(eq - in_arg[i]));
    else {
      const char* nm;
      if (aotc_input_info(m, i, &nm, NULL, NULL, NULL) != 0) die(1, "more inputs than the model has (%s)%s", path, "");
      name = strdup(nm);
    }
    arrs[i] = is_npy ? read_npy(path) : read_raw(path, m, name);
    ins[i].name = name;
    ins[i].dtype = arrs[i].dtype;
    ins[i].ndim = arrs[i].ndim;
    ins[i].shape = arrs[i].shape;
    ins[i].data = arrs[i].data;
  }
  size_t out_bytes[MAX_IO];
  static int64_t bucket_shape[MAX_IO][16];
  for (int k = 0; k < no; ++k) {
    const char* name; const char* dtype; int32_t ndim; const int64_t* shape = bucket_shape[k];
    if (m) aotc_output_info(m, k, &name, &dtype, &ndim, &shape);
    else if (aotc_bucketed_output_shape(bk, ins, n_in, k, &name, &dtype, &ndim, bucket_shape[k]) != 0)
      die(2, "%s%s", aotc_last_error(), "");
    size_t n = 1, size = 0;
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; ++i) if (!strcmp(DTYPES[i].dtype, dtype)) size = DTYPES[i].size;
    if (!size) die(1, "output %s has dtype %s, which .npy output does not support here", name, dtype);
    for (int i = 0; i < ndim; ++i) n *= (size_t)shape[i];
    out_bytes[k] = n * size;
    outs[k].name = name;
    outs[k].dtype = dtype;
    outs[k].ndim = ndim;
    outs[k].shape = shape;
    if (posix_memalign(&outs[k].data, 64, out_bytes[k] + 64) != 0) die(1, "out of memory%s%s", "", "");
  }
  double total = 0, best = 1e300;
  for (int r = 0; r < repeat; ++r) {
    double t0 = now_ms();
    if ((m ? aotc_run(m, ins, n_in, outs, no) : aotc_bucketed_run(bk, ins, n_in, outs, no)) != 0)
      die(2, "%s%s", aotc_last_error(), "");
    double dt = now_ms() - t0;
    total += dt;
    if (dt < best) best = dt;
  }
  printf("aotc_runner: %d run(s), mean %.3f ms, min %.3f ms\n", repeat, total / repeat, best);
  for (int k = 0; k < no; ++k) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/", out_dir);
    for (const char* c = outs[k].name; *c && n < (int)sizeof path - 5; ++c)
      path[n++] = ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
                   *c == '-' || *c == '_') ? *c : '_';
    snprintf(path + n, sizeof path - (size_t)n, ".npy");
    write_npy(path, outs[k].dtype, outs[k].ndim, outs[k].shape, outs[k].data, out_bytes[k]);
    printf("output %s -> %s\n", outs[k].name, path);
  }
  aotc_free(m);
  aotc_bucketed_free(bk);
  return 0;
}
