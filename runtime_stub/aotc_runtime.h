/* aotc's thin runtime: load a compiled bundle directory and run it.
 *
 * The bundle is untrusted input. aotc_load validates every manifest field (types, ranges)
 * and the SHA-256 of every file it lists before any of the bundle's code is loaded; once
 * model.so is loaded, every size, shape and dtype the library was built for must agree with
 * the manifest, or the bundle is refused. aotc_run validates input names, dtypes and shapes. A loaded model may be run from several threads at once: each run takes its own
 * arena (scratch memory) from a pool owned by the handle.
 *
 * Errors: functions return NULL / nonzero and aotc_last_error() (per thread) says why.
 */
#ifndef AOTC_RUNTIME_H_
#define AOTC_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AOTC_FORMAT_VERSION 1
/* The model.so entry points this runtime calls (aotc_model_*; see targets/cpu/templates/driver.c.j2). */
#define AOTC_ABI_VERSION 2

typedef struct aotc_model aotc_model;

/* A tensor passed to or from aotc_run: dtype is a name ("float32", "int64", "bool", ...),
 * data is C-contiguous. */
typedef struct {
  const char* name;
  const char* dtype;
  int32_t ndim;
  const int64_t* shape;
  void* data;
} aotc_tensor;

/* Loads the bundle in directory `bundle_dir`; NULL on error. */
aotc_model* aotc_load(const char* bundle_dir);

/* Like aotc_load, but with the manifest's text given instead of read from bundle_dir/manifest.json:
 * a caller that has verified a signature over those bytes loads exactly what it verified. */
aotc_model* aotc_load_with_manifest(const char* bundle_dir, const char* manifest_json, size_t manifest_len);

/* Runs the model. `inputs` must name every model input once; `outputs` name the outputs
 * wanted (any subset), each with a buffer of the output's exact dtype and shape. */
int aotc_run(aotc_model* model, const aotc_tensor* inputs, int num_inputs, aotc_tensor* outputs,
             int num_outputs);

/* The checks aotc_run makes of its inputs (names, dtypes, shapes), without running: 0 or nonzero. */
int aotc_check_inputs(const aotc_model* model, const aotc_tensor* inputs, int num_inputs);

/* Threads each run may use (default: all cores available to the process, or AOTC_NUM_THREADS). */
int aotc_set_num_threads(aotc_model* model, int num_threads);

/* Model description (valid until aotc_free). */
int aotc_num_inputs(const aotc_model* model);
int aotc_num_outputs(const aotc_model* model);
/* i-th input/output: name, dtype, rank and shape (returns 0, or nonzero if i is out of range). */
int aotc_input_info(const aotc_model* model, int i, const char** name, const char** dtype, int32_t* ndim,
                    const int64_t** shape);
int aotc_output_info(const aotc_model* model, int i, const char** name, const char** dtype, int32_t* ndim,
                     const int64_t** shape);

/* Frees the handle. The model's code stays loaded (its worker threads may still be parked in it). */
void aotc_free(aotc_model* model);

/* The last error of the calling thread ("" if none). */
const char* aotc_last_error(void);

/* Bundles of shape buckets (format 2, docs/buckets.md): one compiled variant per bucket, each in its own
 * folder (a format-1 bundle aotc_load also takes). These functions accept inputs of any size up to the largest
 * bucket: the smallest bucket that holds them is loaded on first use (its manifest.json must have the SHA-256
 * the top-level manifest lists, then aotc_load's checks), inputs with a pad value in the manifest are padded
 * to it (others must match it exactly), and outputs are sliced back along their bucketed axes. */
typedef struct aotc_bucketed aotc_bucketed;

aotc_bucketed* aotc_bucketed_load(const char* bundle_dir);
aotc_bucketed* aotc_bucketed_load_with_manifest(const char* bundle_dir, const char* manifest_json, size_t manifest_len);
int aotc_bucketed_num_outputs(const aotc_bucketed* model);
/* The folder name of the bucket that would run these inputs (valid until aotc_bucketed_free), or NULL. */
const char* aotc_bucketed_choose(const aotc_bucketed* model, const aotc_tensor* inputs, int num_inputs);
/* The i-th output's name, dtype and shape for these inputs (shape: room for 16 entries). */
int aotc_bucketed_output_shape(aotc_bucketed* model, const aotc_tensor* inputs, int num_inputs, int i,
                               const char** name, const char** dtype, int32_t* ndim, int64_t* shape);
/* Runs the bucket that holds `inputs`; each output buffer has the shape aotc_bucketed_output_shape gives. */
int aotc_bucketed_run(aotc_bucketed* model, const aotc_tensor* inputs, int num_inputs, aotc_tensor* outputs,
                      int num_outputs);
int aotc_bucketed_set_num_threads(aotc_bucketed* model, int num_threads);
void aotc_bucketed_free(aotc_bucketed* model);

#ifdef __cplusplus
}
#endif
#endif /* AOTC_RUNTIME_H_ */
