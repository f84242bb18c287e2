/* The C side of `make sanitize` (tests/sanitize/run_sanitizers.py): loads bundles with the thin runtime and
 * runs the ones that load, built with -fsanitize=address,undefined or -fsanitize=thread.
 *
 *   tamper_harness load DIR...          one line per DIR: "loaded" (and ran) or "refused\t<error>"
 *   tamper_harness threads DIR RUNS     RUNS runs from each of 2 calling threads, a 2-thread pool each
 *   tamper_harness bucketed ROWS DIR... a shape-bucket bundle per DIR whose one input is float32 [rows, ROWS'
 *                                       width]: every row count 1..ROWS through aotc_bucketed_run (padding,
 *                                       bucket choice, output slicing); one line per DIR as for `load`
 *   tamper_harness bucketed-threads ROWS DIR RUNS  the same from 2 calling threads on one handle (buckets
 *                                       are loaded lazily, under the handle's lock)
 *
 * Exit status 0 unless a run of a loaded bundle fails. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aotc_runtime.h"

static size_t dtype_size(const char* d) {
  if (!strcmp(d, "float32") || !strcmp(d, "int32")) return 4;
  if (!strcmp(d, "int64")) return 8;
  if (!strcmp(d, "float16") || !strcmp(d, "bfloat16")) return 2;
  return 1;
}

typedef struct { aotc_tensor* t; int n; } tensors;

static void free_tensors(tensors* ts) {
  for (int i = 0; i < ts->n; ++i) free(ts->t[i].data);
  free(ts->t);
}

/* Zero-filled tensors of the model's inputs (output = 0) or outputs (1), as the runtime describes them. */
static int make_tensors(aotc_model* m, int output, tensors* ts) {
  ts->n = output ? aotc_num_outputs(m) : aotc_num_inputs(m);
  ts->t = calloc((size_t)ts->n + 1, sizeof *ts->t);
  if (!ts->t) return -1;
  for (int i = 0; i < ts->n; ++i) {
    aotc_tensor* t = &ts->t[i];
    int rc = output ? aotc_output_info(m, i, &t->name, &t->dtype, &t->ndim, &t->shape)
                    : aotc_input_info(m, i, &t->name, &t->dtype, &t->ndim, &t->shape);
    if (rc != 0) return -1;
    size_t n = dtype_size(t->dtype);
    for (int k = 0; k < t->ndim; ++k) n *= (size_t)t->shape[k];
    t->data = calloc(n ? n : 1, 1);
    if (!t->data) return -1;
  }
  return 0;
}

static int run_once(aotc_model* m) {
  tensors in = {0}, out = {0};
  int rc = make_tensors(m, 0, &in) || make_tensors(m, 1, &out) || aotc_run(m, in.t, in.n, out.t, out.n);
  if (rc) fprintf(stderr, "run failed: %s\n", aotc_last_error());
  free_tensors(&in);
  free_tensors(&out);
  return rc;
}

typedef struct { aotc_model* m; int runs; int failed; } job;

static void* worker(void* arg) {
  job* j = arg;
  for (int r = 0; r < j->runs; ++r) j->failed |= run_once(j->m);
  return NULL;
}

/* Every row count 1..rows of a [rows, width] float32 input (width from argv), each output's buffer sized by
 * aotc_bucketed_output_shape. */
static int run_bucketed(aotc_bucketed* b, const char* input, int rows, int width) {
  int failed = 0;
  for (int r = 1; r <= rows && !failed; ++r) {
    int64_t shape[2] = {r, width};
    float* x = calloc((size_t)r * (size_t)width, sizeof *x);
    for (int64_t i = 0; x && i < (int64_t)r * width; ++i) x[i] = (float)(i % 7) * 0.25f;
    aotc_tensor in = {input, "float32", 2, shape, x};
    int n = aotc_bucketed_num_outputs(b);
    aotc_tensor* out = calloc((size_t)n + 1, sizeof *out);
    int64_t (*oshape)[16] = calloc((size_t)n + 1, sizeof *oshape);
    int rc = !x || !out || !oshape;
    for (int i = 0; !rc && i < n; ++i) {
      rc = aotc_bucketed_output_shape(b, &in, 1, i, &out[i].name, &out[i].dtype, &out[i].ndim, oshape[i]);
      size_t bytes = dtype_size(out[i].dtype);
      for (int k = 0; !rc && k < out[i].ndim; ++k) bytes *= (size_t)oshape[i][k];
      out[i].shape = oshape[i];
      if (!rc && !(out[i].data = calloc(bytes ? bytes : 1, 1))) rc = -1;
    }
    if (!rc) rc = aotc_bucketed_run(b, &in, 1, out, n);
    if (rc) { fprintf(stderr, "bucketed run of %d rows failed: %s\n", r, aotc_last_error()); failed = 1; }
    for (int i = 0; out && i < n; ++i) free(out[i].data);
    free(out);
    free(oshape);
    free(x);
  }
  return failed;
}

typedef struct { aotc_bucketed* b; int rows; int runs; int failed; } bucketed_job;

static void* bucketed_worker(void* arg) {
  bucketed_job* j = arg;
  for (int r = 0; r < j->runs; ++r) j->failed |= run_bucketed(j->b, "x", j->rows, 256);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc >= 4 && !strcmp(argv[1], "bucketed")) {
    int rows = atoi(argv[2]), failed = 0;
    for (int i = 3; i < argc; ++i) {
      aotc_bucketed* b = aotc_bucketed_load(argv[i]);
      if (!b) { printf("refused\t%s\t%s\n", argv[i], aotc_last_error()); continue; }
      aotc_bucketed_set_num_threads(b, 2);
      int rc = run_bucketed(b, "x", rows, 256);
      failed |= rc;
      printf("loaded\t%s\t%s\n", argv[i], rc ? "run failed" : "ran");
      aotc_bucketed_free(b);
    }
    return failed;
  }
  if (argc == 5 && !strcmp(argv[1], "bucketed-threads")) {
    aotc_bucketed* b = aotc_bucketed_load(argv[3]);
    if (!b) { fprintf(stderr, "%s\n", aotc_last_error()); return 1; }
    aotc_bucketed_set_num_threads(b, 2);
    int rows = atoi(argv[2]), runs = atoi(argv[4]);
    bucketed_job jobs[2] = {{b, rows, runs, 0}, {b, rows, runs, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, bucketed_worker, &jobs[i]);
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    aotc_bucketed_free(b);
    int bad = jobs[0].failed || jobs[1].failed;
    printf("bucketed threads: %d x rows 1..%d on 2 threads: %s\n", runs, rows, bad ? "FAILED" : "ok");
    return bad;
  }
  if (argc >= 3 && !strcmp(argv[1], "load")) {
    int failed = 0;
    for (int i = 2; i < argc; ++i) {
      aotc_model* m = aotc_load(argv[i]);
      if (!m) { printf("refused\t%s\t%s\n", argv[i], aotc_last_error()); continue; }
      aotc_set_num_threads(m, 2);
      int rc = run_once(m);
      failed |= rc;
      printf("loaded\t%s\t%s\n", argv[i], rc ? "run failed" : "ran");
      aotc_free(m);
    }
    return failed;
  }
  if (argc == 4 && !strcmp(argv[1], "threads")) {
    aotc_model* m = aotc_load(argv[2]);
    if (!m) { fprintf(stderr, "%s\n", aotc_last_error()); return 1; }
    aotc_set_num_threads(m, 2);
    job jobs[2] = {{m, atoi(argv[3]), 0}, {m, atoi(argv[3]), 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, worker, &jobs[i]);
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    aotc_free(m);
    printf("threads: %d runs each on 2 threads: %s\n", atoi(argv[3]), jobs[0].failed || jobs[1].failed ? "FAILED" : "ok");
    return jobs[0].failed || jobs[1].failed;
  }
  fprintf(stderr, "usage: %s load DIR... | threads DIR RUNS | bucketed ROWS DIR... | bucketed-threads ROWS DIR RUNS\n",
          argv[0]);
  return 2;
}
