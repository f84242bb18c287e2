/* aotc's thin runtime (see aotc_runtime.h). Self-contained C11: a small JSON reader for
 * manifest.json, SHA-256 for the checksums, dlopen for model.so. */
#define _GNU_SOURCE
#include "aotc_runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------------------------ */
static __thread char last_error[2048];

static void set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

const char* aotc_last_error(void) { return last_error; }

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------------ */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t fill; } sha256_ctx;

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx* c, const uint8_t* p) {
  uint32_t w[64], a, b, d, e, f, g, h, cc;
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
  }
  c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256_hex(const uint8_t* data, size_t n, char out[65]) {
  sha256_ctx c = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                   0x5be0cd19}, 0, {0}, 0};
  size_t i = 0;
  for (; i + 64 <= n; i += 64) sha256_block(&c, data + i);
  uint8_t tail[128] = {0};
  size_t rest = n - i;
  memcpy(tail, data + i, rest);
  tail[rest] = 0x80;
  size_t total = rest + 1 + 8 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)n * 8;
  for (int k = 0; k < 8; ++k) tail[total - 1 - k] = (uint8_t)(bits >> (8 * k));
  sha256_block(&c, tail);
  if (total == 128) sha256_block(&c, tail + 64);
  for (int k = 0; k < 8; ++k) snprintf(out + 8 * k, 9, "%08x", c.h[k]);
}

/* ---- a small JSON reader (enough for manifest.json) ------------------------------------------- */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jval {
  jtype t;
  double num;
  char* str;            /* J_STR */
  struct jval* items;   /* J_ARR / J_OBJ values */
  char** keys;          /* J_OBJ keys */
  int n;
} jval;

typedef struct { const char* p; const char* end; int err; } jparser;

static void jfree(jval* v) {
  if (!v) return;
  free(v->str);
  for (int i = 0; i < v->n; ++i) {
    jfree(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
}

static void jskip(jparser* ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static int jparse(jparser* ps, jval* v, int depth);

static char* jstring(jparser* ps) {
  if (ps->p >= ps->end || *ps->p != '"') { ps->err = 1; return NULL; }
  ps->p++;
  size_t cap = 16, n = 0;
  char* s = malloc(cap);
  while (ps->p < ps->end && *ps->p != '"') {
    char c = *ps->p++;
    if (c == '\\') {
      if (ps->p >= ps->end) break;
      char e = *ps->p++;
      switch (e) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'r': c = '\r'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'u': {
          unsigned cp = 0;
          for (int k = 0; k < 4 && ps->p < ps->end; ++k) {
            char h = *ps->p++;
            cp = cp * 16 + (unsigned)(h >= 'a' ? h - 'a' + 10 : h >= 'A' ? h - 'A' + 10 : h - '0');
          }
          if (n + 4 >= cap) s = realloc(s, cap *= 2);
          if (cp < 0x80) { s[n++] = (char)cp; }
          else if (cp < 0x800) { s[n++] = (char)(0xc0 | cp >> 6); s[n++] = (char)(0x80 | (cp & 63)); }
          else { s[n++] = (char)(0xe0 | cp >> 12); s[n++] = (char)(0x80 | (cp >> 6 & 63)); s[n++] = (char)(0x80 | (cp & 63)); }
          continue;
        }
        default: c = e;
      }
    }
    if (n + 2 >= cap) s = realloc(s, cap *= 2);
    s[n++] = c;
  }
  if (ps->p >= ps->end) { ps->err = 1; free(s); return NULL; }
  ps->p++;
  s[n] = 0;
  return s;
}

static int jparse(jparser* ps, jval* v, int depth) {
  memset(v, 0, sizeof *v);
  if (depth > 64) return ps->err = 1, -1;
  jskip(ps);
  if (ps->p >= ps->end) return ps->err = 1, -1;
  char c = *ps->p;
  if (c == '{' || c == '[') {
    int obj = c == '{';
    v->t = obj ? J_OBJ : J_ARR;
    ps->p++;
    int cap = 0;
    jskip(ps);
    if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; return 0; }
    for (;;) {
      if (v->n == cap) {
        cap = cap ? cap * 2 : 8;
        v->items = realloc(v->items, sizeof(jval) * (size_t)cap);
        if (obj) v->keys = realloc(v->keys, sizeof(char*) * (size_t)cap);
      }
      if (obj) {
        jskip(ps);
        char* k = jstring(ps);
        if (!k) return -1;
        v->keys[v->n] = k;
        jskip(ps);
        if (ps->p >= ps->end || *ps->p != ':') { free(k); return ps->err = 1, -1; }
        ps->p++;
      }
      if (jparse(ps, &v->items[v->n], depth + 1) != 0) { if (obj) free(v->keys[v->n]); return -1; }
      v->n++;
      jskip(ps);
      if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
      if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; return 0; }
      return ps->err = 1, -1;
    }
  }
  if (c == '"') {
    v->t = J_STR;
    v->str = jstring(ps);
    return v->str ? 0 : -1;
  }
  if (!strncmp(ps->p, "true", 4) || !strncmp(ps->p, "false", 5)) {
    v->t = J_BOOL;
    v->num = *ps->p == 't';
    ps->p += *ps->p == 't' ? 4 : 5;
    return 0;
  }
  if (!strncmp(ps->p, "null", 4)) { v->t = J_NULL; ps->p += 4; return 0; }
  char* endp;
  v->t = J_NUM;
  v->num = strtod(ps->p, &endp);
  if (endp == ps->p) return ps->err = 1, -1;
  ps->p = endp;
  return 0;
}

static const jval* jget(const jval* o, const char* key) {
  if (!o || o->t != J_OBJ) return NULL;
  for (int i = 0; i < o->n; ++i)
    if (!strcmp(o->keys[i], key)) return &o->items[i];
  return NULL;
}

/* ---- files --------------------------------------------------------------------------------------- */
static uint8_t* read_file(const char* path, size_t* size, size_t align) {
  FILE* f = fopen(path, "rb");
  if (!f) { set_error("cannot open %s: %s", path, strerror(errno)); return NULL; }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0) { fclose(f); set_error("cannot read %s", path); return NULL; }
  void* buf = NULL;
  if (posix_memalign(&buf, align, (size_t)n + 1) != 0) { fclose(f); set_error("out of memory reading %s", path); return NULL; }
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); set_error("cannot read %s", path); return NULL; }
  fclose(f);
  ((uint8_t*)buf)[n] = 0;
  *size = (size_t)n;
  return buf;
}

/* A model.so built for another CPU (an arm64-neon bundle on x86) fails dlopen with a misleading "no such
 * file": say what it is built for instead. */
static const char* other_machine_note(const char* path) {
  static __thread char note[256];
  unsigned char h[20];
  FILE* f = fopen(path, "rb");
  size_t n = f ? fread(h, 1, sizeof h, f) : 0;
  if (f) fclose(f);
  if (n < sizeof h || memcmp(h, "\x7f" "ELF", 4) != 0) return "";
  unsigned machine = h[5] == 2 ? (unsigned)h[18] << 8 | h[19] : (unsigned)h[18] | (unsigned)h[19] << 8;
#if defined(__x86_64__)
  const unsigned here = 62;
#elif defined(__aarch64__)
  const unsigned here = 183;
#else
  const unsigned here = machine;
#endif
  if (machine == here) return "";
  snprintf(note, sizeof note, " (model.so is built for %s, this process runs on %s: run the bundle on such a machine, or "
           "an arm64 bundle with its aotc_runner under qemu-aarch64, as `aotc run` does)",
           machine == 183 ? "aarch64" : machine == 62 ? "x86-64" : "another CPU",
           here == 183 ? "aarch64" : here == 62 ? "x86-64" : "another CPU");
  return note;
}

/* ---- the model ----------------------------------------------------------------------------------- */
typedef struct { char* name; char* dtype; int32_t ndim; int64_t shape[16]; size_t nbytes; } io_spec;

typedef int (*run_fn)(void*, const void*, const void* const*, void* const*, const char**);
typedef void (*set_threads_fn)(int);

typedef struct arena_node { struct arena_node* next; void* mem; } arena_node;

struct aotc_model {
  void* so;
  run_fn run;
  set_threads_fn set_threads;
  uint8_t* weights;
  size_t arena_bytes;
  int num_inputs, num_outputs;
  io_spec* inputs;
  io_spec* outputs;
  pthread_mutex_t mu;
  arena_node* free_arenas;
};

static size_t dtype_size(const char* d) {
  static const struct { const char* n; size_t s; } t[] = {
    {"float32", 4}, {"float16", 2}, {"bfloat16", 2}, {"int8", 1}, {"uint8", 1}, {"int32", 4}, {"int64", 8}, {"bool", 1}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i)
    if (!strcmp(d, t[i].n)) return t[i].s;
  return 0;
}

static int read_io(const jval* arr, io_spec** out, int* count, const char* what) {
  if (!arr || arr->t != J_ARR) { set_error("manifest.json has no '%s' list", what); return -1; }
  *count = arr->n;
  *out = calloc((size_t)arr->n + 1, sizeof(io_spec));
  for (int i = 0; i < arr->n; ++i) {
    const jval *name = jget(&arr->items[i], "name"), *dt = jget(&arr->items[i], "dtype"),
               *shape = jget(&arr->items[i], "shape");
    if (!name || name->t != J_STR || !dt || dt->t != J_STR || !shape || shape->t != J_ARR || shape->n > 16 ||
        !dtype_size(dt->str)) {
      set_error("manifest.json: %s %d is malformed", what, i);
      return -1;
    }
    io_spec* s = &(*out)[i];
    s->name = strdup(name->str);
    s->dtype = strdup(dt->str);
    s->ndim = shape->n;
    s->nbytes = dtype_size(dt->str);
    for (int k = 0; k < shape->n; ++k) {
      s->shape[k] = (int64_t)shape->items[k].num;
      s->nbytes *= (size_t)s->shape[k];
    }
  }
  return 0;
}

static void free_io(io_spec* s, int n) {
  if (!s) return;
  for (int i = 0; i < n; ++i) { free(s[i].name); free(s[i].dtype); }
  free(s);
}

void aotc_free(aotc_model* m) {
  if (!m) return;
  /* model.so is not dlclose'd: its pool threads may be parked inside it. */
  free(m->weights);
  free_io(m->inputs, m->num_inputs);
  free_io(m->outputs, m->num_outputs);
  for (arena_node* a = m->free_arenas; a;) {
    arena_node* next = a->next;
    free(a->mem);
    free(a);
    a = next;
  }
  pthread_mutex_destroy(&m->mu);
  free(m);
}

aotc_model* aotc_load(const char* dir) {
  char path[4096];
  size_t size;
  last_error[0] = 0;
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  uint8_t* text = read_file(path, &size, 64);
  if (!text) {
    char why[1024];
    snprintf(why, sizeof why, "%s", last_error);
    set_error("%s is not an aotc bundle: no readable manifest.json (%s)", dir, why);
    return NULL;
  }
  jval man;
  jparser ps = {(const char*)text, (const char*)text + size, 0};
  int bad = jparse(&ps, &man, 0) != 0 || man.t != J_OBJ;
  free(text);
  if (bad) { jfree(&man); set_error("%s/manifest.json is not valid JSON", dir); return NULL; }

  aotc_model* m = calloc(1, sizeof *m);
  pthread_mutex_init(&m->mu, NULL);
  const jval* fv = jget(&man, "format_version");
  const jval* files = jget(&man, "files");
  const jval* arena = jget(&man, "arena_bytes");
  const jval* wbytes = jget(&man, "weight_bytes");
  const jval* model_id = jget(&man, "model_id");
  const jval* abi = jget(&man, "abi_version");
  char want_hex[65];
  if (!fv || fv->t != J_NUM) { set_error("%s/manifest.json has no format_version", dir); goto fail; }
  if ((int)fv->num != AOTC_FORMAT_VERSION) {
    set_error("bundle %s has format version %d, but this runtime reads format version %d; recompile the model "
              "with a matching aotc, or use a runtime that knows that format", dir, (int)fv->num, AOTC_FORMAT_VERSION);
    goto fail;
  }
  if (!files || files->t != J_OBJ || !arena || !wbytes || !model_id || model_id->t != J_STR || !abi) {
    set_error("%s/manifest.json lacks files, arena_bytes, weight_bytes, model_id or abi_version", dir);
    goto fail;
  }
  /* Every checksum first, before any code from the bundle is loaded. */
  int have_so = 0, have_w = 0;
  for (int i = 0; i < files->n; ++i) {
    const char* name = files->keys[i];
    if (strchr(name, '/') || !strcmp(name, "..") || files->items[i].t != J_STR) {
      set_error("%s/manifest.json lists a bad file entry '%s'", dir, name);
      goto fail;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int is_w = !strcmp(name, "weights.bin");
    uint8_t* data = read_file(path, &size, 64);
    if (!data) {
      char why[1024];
      snprintf(why, sizeof why, "%s", last_error);
      set_error("bundle %s is incomplete: %s", dir, why);
      goto fail;
    }
    char hex[65];
    sha256_hex(data, size, hex);
    if (strcmp(hex, files->items[i].str) != 0) {
      free(data);
      set_error("bundle %s is corrupted: %s has SHA-256 %.16s..., the manifest says %.16s...", dir, name, hex,
                files->items[i].str);
      goto fail;
    }
    if (is_w) {
      if (size != (size_t)wbytes->num) { free(data); set_error("%s/weights.bin has %zu bytes, the manifest says %.0f", dir, size, wbytes->num); goto fail; }
      m->weights = data;
      have_w = 1;
    } else {
      free(data);
    }
    have_so |= !strcmp(name, "model.so");
  }
  if (!have_so || !have_w) { set_error("%s/manifest.json does not list %s", dir, have_so ? "weights.bin" : "model.so"); goto fail; }
  (void)want_hex;
  if (read_io(jget(&man, "inputs"), &m->inputs, &m->num_inputs, "inputs") ||
      read_io(jget(&man, "outputs"), &m->outputs, &m->num_outputs, "outputs"))
    goto fail;
  m->arena_bytes = (size_t)arena->num;

  snprintf(path, sizeof path, "%s/model.so", dir);
  m->so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!m->so) {
    char why[1024];
    snprintf(why, sizeof why, "%s", dlerror());
    set_error("cannot load %s: %s%s", path, why, other_machine_note(path));
    goto fail;
  }
  int (*abi_fn)(void) = (int (*)(void))dlsym(m->so, "aotc_model_abi_version");
  const char* (*id_fn)(void) = (const char* (*)(void))dlsym(m->so, "aotc_model_id");
  m->run = (run_fn)dlsym(m->so, "aotc_model_run");
  m->set_threads = (set_threads_fn)dlsym(m->so, "aotc_model_set_num_threads");
  if (!abi_fn || !id_fn || !m->run || !m->set_threads) {
    set_error("%s is not an aotc model library (missing aotc_model_* entry points)", path);
    goto fail;
  }
  if (abi_fn() != (int)abi->num) { set_error("%s has ABI version %d, the manifest says %d", path, abi_fn(), (int)abi->num); goto fail; }
  if (strcmp(id_fn(), model_id->str) != 0) {
    set_error("%s belongs to another model (id %s, the manifest says %s)", path, id_fn(), model_id->str);
    goto fail;
  }
  jfree(&man);
  return m;
fail:
  jfree(&man);
  /* Nothing of a rejected library has run (its pool starts on the first run): unload it. */
  if (m->so) dlclose(m->so);
  aotc_free(m);
  return NULL;
}

int aotc_set_num_threads(aotc_model* m, int n) {
  if (!m) { set_error("aotc_set_num_threads: no model"); return -1; }
  m->set_threads(n);
  return 0;
}

int aotc_num_inputs(const aotc_model* m) { return m ? m->num_inputs : 0; }
int aotc_num_outputs(const aotc_model* m) { return m ? m->num_outputs : 0; }

static int info(const io_spec* s, int n, int i, const char** name, const char** dtype, int32_t* ndim,
                const int64_t** shape) {
  if (i < 0 || i >= n) { set_error("index %d out of range (%d)", i, n); return -1; }
  if (name) *name = s[i].name;
  if (dtype) *dtype = s[i].dtype;
  if (ndim) *ndim = s[i].ndim;
  if (shape) *shape = s[i].shape;
  return 0;
}

int aotc_input_info(const aotc_model* m, int i, const char** name, const char** dtype, int32_t* ndim,
                    const int64_t** shape) {
  return m ? info(m->inputs, m->num_inputs, i, name, dtype, ndim, shape) : -1;
}

int aotc_output_info(const aotc_model* m, int i, const char** name, const char** dtype, int32_t* ndim,
                     const int64_t** shape) {
  return m ? info(m->outputs, m->num_outputs, i, name, dtype, ndim, shape) : -1;
}

static void fmt_shape(char* buf, size_t n, int32_t ndim, const int64_t* shape) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && k < n; ++i) k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

static int check_tensor(const io_spec* s, const aotc_tensor* t, const char* what) {
  char got[256], want[256];
  if (!t->dtype || strcmp(t->dtype, s->dtype) != 0) {
    set_error("%s '%s' has dtype %s, the model expects %s", what, s->name, t->dtype ? t->dtype : "(none)", s->dtype);
    return -1;
  }
  int same = t->ndim == s->ndim && (t->ndim == 0 || t->shape);
  for (int k = 0; same && k < s->ndim; ++k) same = t->shape[k] == s->shape[k];
  if (!same) {
    fmt_shape(got, sizeof got, t->ndim, t->shape ? t->shape : s->shape);
    fmt_shape(want, sizeof want, s->ndim, s->shape);
    set_error("%s '%s' has shape %s, the model expects %s", what, s->name, t->ndim <= 16 ? got : "(rank > 16)", want);
    return -1;
  }
  if (!t->data && s->nbytes) { set_error("%s '%s' has no data", what, s->name); return -1; }
  return 0;
}

int aotc_run(aotc_model* m, const aotc_tensor* inputs, int num_inputs, aotc_tensor* outputs, int num_outputs) {
  if (!m) { set_error("aotc_run: no model"); return -1; }
  const void* in_ptr[256];
  void* out_ptr[256];
  void* scratch[256];
  if (m->num_inputs > 256 || m->num_outputs > 256) { set_error("too many inputs/outputs"); return -1; }
  for (int i = 0; i < num_inputs; ++i) {
    int found = 0;
    for (int k = 0; k < m->num_inputs; ++k) found |= inputs[i].name && !strcmp(inputs[i].name, m->inputs[k].name);
    if (!found) {
      char names[1024];
      size_t n = 0;
      names[0] = 0;
      for (int k = 0; k < m->num_inputs && n < sizeof names; ++k)
        n += (size_t)snprintf(names + n, sizeof names - n, k ? ", %s" : "%s", m->inputs[k].name);
      set_error("unknown input '%s' (the model's inputs are: %s)", inputs[i].name ? inputs[i].name : "(null)", names);
      return -1;
    }
  }
  for (int k = 0; k < m->num_inputs; ++k) {
    const aotc_tensor* t = NULL;
    for (int i = 0; i < num_inputs; ++i)
      if (inputs[i].name && !strcmp(inputs[i].name, m->inputs[k].name)) {
        if (t) { set_error("input '%s' is given twice", m->inputs[k].name); return -1; }
        t = &inputs[i];
      }
    if (!t) { set_error("missing input '%s'", m->inputs[k].name); return -1; }
    if (check_tensor(&m->inputs[k], t, "input")) return -1;
    in_ptr[k] = t->data;
  }
  for (int k = 0; k < m->num_outputs; ++k) out_ptr[k] = NULL;
  for (int i = 0; i < num_outputs; ++i) {
    int k = 0;
    while (k < m->num_outputs && !(outputs[i].name && !strcmp(outputs[i].name, m->outputs[k].name))) ++k;
    if (k == m->num_outputs) { set_error("unknown output '%s'", outputs[i].name ? outputs[i].name : "(null)"); return -1; }
    if (check_tensor(&m->outputs[k], &outputs[i], "output")) return -1;
    out_ptr[k] = outputs[i].data;
  }
  int rc = 0;
  for (int k = 0; k < m->num_outputs; ++k) scratch[k] = NULL;
  for (int k = 0; k < m->num_outputs && rc == 0; ++k)
    if (!out_ptr[k] && posix_memalign(&scratch[k], 64, m->outputs[k].nbytes + 64) == 0) out_ptr[k] = scratch[k];
    else if (!out_ptr[k]) { set_error("out of memory"); rc = -1; }

  /* An arena of this handle's pool: each concurrent run gets its own. */
  arena_node* a = NULL;
  if (rc == 0) {
    pthread_mutex_lock(&m->mu);
    a = m->free_arenas;
    if (a) m->free_arenas = a->next;
    pthread_mutex_unlock(&m->mu);
    if (!a) {
      a = calloc(1, sizeof *a);
      if (!a || posix_memalign(&a->mem, 64, m->arena_bytes ? m->arena_bytes : 64) != 0) {
        free(a);
        a = NULL;
        set_error("out of memory allocating a %zu-byte arena", m->arena_bytes);
        rc = -1;
      }
    }
  }
  if (rc == 0) {
    const char* err = NULL;
    if (m->run(a->mem, m->weights, in_ptr, out_ptr, &err) != 0) {
      set_error("running the model failed: %s", err ? err : "unknown error");
      rc = -1;
    }
  }
  if (a) {
    pthread_mutex_lock(&m->mu);
    a->next = m->free_arenas;
    m->free_arenas = a;
    pthread_mutex_unlock(&m->mu);
  }
  for (int k = 0; k < m->num_outputs; ++k) free(scratch[k]);
  return rc;
}
