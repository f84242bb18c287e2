/* aotc's thin runtime (see aotc_runtime.h). Self-contained C11: a small JSON reader for
 * manifest.json, SHA-256 for the checksums, dlopen for model.so. */
#define _GNU_SOURCE
#include "glibc_compat.h" /* first: it binds symbol versions for what follows */
#include "aotc_runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif

/* stat and fstat by system call: glibc's own symbols for them are versioned 2.33 (before, they were inline
 * wrappers of __xstat), so calling them would make the library need glibc 2.33 (glibc_compat.h says why that
 * matters). On x86-64 and aarch64 glibc's struct stat is the kernel's. */
static int stat_path(const char* path, struct stat* st) {
#if defined(__GLIBC__) && defined(SYS_newfstatat)
  return syscall(SYS_newfstatat, AT_FDCWD, path, st, 0) == 0 ? 0 : -1;
#else
  return stat(path, st);
#endif
}

static int stat_fd(int fd, struct stat* st) {
#if defined(__GLIBC__) && defined(SYS_fstat)
  return syscall(SYS_fstat, fd, st) == 0 ? 0 : -1;
#else
  return fstat(fd, st);
#endif
}

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

/* ---- a strict JSON reader (enough for manifest.json) -------------------------------------------
 * manifest.json is untrusted input: the reader refuses anything Python's json module would refuse
 * (bad escapes, control characters, trailing data, non-JSON numbers such as NaN or 0x10), plus
 * duplicate keys and "\u0000" (a C string could not hold it), so that the runtime and Python tools
 * never read two different meanings from the same bytes. Every error path frees what it allocated. */
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

#define JSON_MAX_DEPTH 64
#define JSON_MAX_ITEMS (1 << 20)

static void jfree(jval* v) {
  if (!v) return;
  free(v->str);
  for (int i = 0; i < v->n; ++i) {
    jfree(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  memset(v, 0, sizeof *v);
}

static void jskip(jparser* ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static int jhex4(jparser* ps, unsigned* cp) {
  if (ps->end - ps->p < 4) return -1;
  unsigned v = 0;
  for (int k = 0; k < 4; ++k) {
    char h = *ps->p++;
    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + (unsigned)d;
  }
  *cp = v;
  return 0;
}

/* A growing byte buffer; on allocation failure it frees itself and reports -1. */
typedef struct { char* s; size_t n, cap; } jbuf;

static int jbuf_put(jbuf* b, const char* c, size_t k) {
  if (b->n + k + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 16;
    while (b->n + k + 1 > cap) cap *= 2;
    char* s = realloc(b->s, cap);
    if (!s) { free(b->s); b->s = NULL; return -1; }
    b->s = s;
    b->cap = cap;
  }
  memcpy(b->s + b->n, c, k);
  b->n += k;
  return 0;
}

static int jutf8(jbuf* b, unsigned cp) {
  char u[4];
  size_t k;
  if (cp < 0x80) { u[0] = (char)cp; k = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xc0 | cp >> 6); u[1] = (char)(0x80 | (cp & 63)); k = 2; }
  else if (cp < 0x10000) { u[0] = (char)(0xe0 | cp >> 12); u[1] = (char)(0x80 | (cp >> 6 & 63)); u[2] = (char)(0x80 | (cp & 63)); k = 3; }
  else { u[0] = (char)(0xf0 | cp >> 18); u[1] = (char)(0x80 | (cp >> 12 & 63)); u[2] = (char)(0x80 | (cp >> 6 & 63)); u[3] = (char)(0x80 | (cp & 63)); k = 4; }
  return jbuf_put(b, u, k);
}

static char* jstring(jparser* ps) {
  if (ps->p >= ps->end || *ps->p != '"') { ps->err = 1; return NULL; }
  ps->p++;
  jbuf b = {NULL, 0, 0};
  if (jbuf_put(&b, "", 0)) { ps->err = 1; return NULL; }
  while (ps->p < ps->end && *ps->p != '"') {
    char c = *ps->p++;
    int rc;
    if ((unsigned char)c < 0x20) goto bad;
    if (c != '\\') { rc = jbuf_put(&b, &c, 1); }
    else {
      if (ps->p >= ps->end) goto bad;
      char e = *ps->p++;
      const char* simple = strchr("\"\\/bfnrt", e);
      if (e && simple) {
        static const char map[] = "\"\\/\b\f\n\r\t";
        rc = jbuf_put(&b, &map[simple - "\"\\/bfnrt"], 1);
      } else if (e == 'u') {
        unsigned cp, lo;
        if (jhex4(ps, &cp) || cp == 0 || (cp >= 0xdc00 && cp < 0xe000)) goto bad;
        if (cp >= 0xd800 && cp < 0xdc00) {  /* a surrogate pair: Python's json.dumps writes non-BMP this way */
          if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') goto bad;
          ps->p += 2;
          if (jhex4(ps, &lo) || lo < 0xdc00 || lo >= 0xe000) goto bad;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        rc = jutf8(&b, cp);
      } else {
        goto bad;
      }
    }
    if (rc) { ps->err = 1; return NULL; }  /* jbuf_put freed the buffer */
  }
  if (ps->p >= ps->end) goto bad;
  ps->p++;
  b.s[b.n] = 0;
  return b.s;
bad:
  free(b.s);
  ps->err = 1;
  return NULL;
}

/* The JSON number grammar (strtod alone would take "nan", "inf", "0x1p3", " 1"). */
static int jnumber(jparser* ps, double* out) {
  const char* p = ps->p;
  if (p < ps->end && *p == '-') p++;
  if (p >= ps->end || *p < '0' || *p > '9') return -1;
  if (*p == '0') p++;
  else while (p < ps->end && *p >= '0' && *p <= '9') p++;
  if (p < ps->end && *p == '.') {
    p++;
    if (p >= ps->end || *p < '0' || *p > '9') return -1;
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  if (p < ps->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < ps->end && (*p == '+' || *p == '-')) p++;
    if (p >= ps->end || *p < '0' || *p > '9') return -1;
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  char tmp[64];
  size_t len = (size_t)(p - ps->p);
  if (len >= sizeof tmp) return -1;  /* no manifest number needs more digits */
  memcpy(tmp, ps->p, len);
  tmp[len] = 0;
  *out = strtod(tmp, NULL);
  ps->p = p;
  return 0;
}

static int jparse(jparser* ps, jval* v, int depth) {
  memset(v, 0, sizeof *v);
  if (depth > JSON_MAX_DEPTH) return ps->err = 1, -1;
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
        if (cap >= JSON_MAX_ITEMS) return ps->err = 1, -1;
        cap = cap ? cap * 2 : 8;
        jval* items = realloc(v->items, sizeof(jval) * (size_t)cap);
        if (!items) return ps->err = 1, -1;
        v->items = items;
        if (obj) {
          char** keys = realloc(v->keys, sizeof(char*) * (size_t)cap);
          if (!keys) return ps->err = 1, -1;
          v->keys = keys;
        }
      }
      char* k = NULL;
      if (obj) {
        jskip(ps);
        k = jstring(ps);
        if (!k) return -1;
        for (int i = 0; i < v->n; ++i)
          if (!strcmp(v->keys[i], k)) { free(k); return ps->err = 1, -1; }  /* duplicate key */
        jskip(ps);
        if (ps->p >= ps->end || *ps->p != ':') { free(k); return ps->err = 1, -1; }
        ps->p++;
      }
      if (jparse(ps, &v->items[v->n], depth + 1) != 0) {
        jfree(&v->items[v->n]);  /* the failed item frees what it had parsed */
        free(k);
        return -1;
      }
      if (obj) v->keys[v->n] = k;
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
  size_t left = (size_t)(ps->end - ps->p);
  if (left >= 4 && !strncmp(ps->p, "true", 4)) { v->t = J_BOOL; v->num = 1; ps->p += 4; return 0; }
  if (left >= 5 && !strncmp(ps->p, "false", 5)) { v->t = J_BOOL; ps->p += 5; return 0; }
  if (left >= 4 && !strncmp(ps->p, "null", 4)) { v->t = J_NULL; ps->p += 4; return 0; }
  v->t = J_NUM;
  if (jnumber(ps, &v->num) != 0) return ps->err = 1, -1;
  return 0;
}

/* Parses a whole document: one value and nothing after it but whitespace. */
static int jparse_document(const char* text, size_t len, jval* out) {
  jparser ps = {text, text + len, 0};
  if (jparse(&ps, out, 0) != 0) { jfree(out); return -1; }
  jskip(&ps);
  if (ps.p != ps.end) { jfree(out); return -1; }
  return 0;
}

static const jval* jget(const jval* o, const char* key) {
  if (!o || o->t != J_OBJ) return NULL;
  for (int i = 0; i < o->n; ++i)
    if (!strcmp(o->keys[i], key)) return &o->items[i];
  return NULL;
}

/* A non-negative integer no larger than `max` (JSON has only doubles; 2^53 is exact). */
static int juint(const jval* v, uint64_t max, uint64_t* out) {
  if (!v || v->t != J_NUM || !(v->num >= 0) || v->num > (double)max || v->num != (double)(uint64_t)v->num) return -1;
  *out = (uint64_t)v->num;
  return 0;
}

/* ---- files --------------------------------------------------------------------------------------- */
/* No bundle file comes near this; a larger size is a tampered manifest or the wrong file, and must not
 * become an allocation. */
#define AOTC_MAX_FILE_BYTES ((uint64_t)1 << 40)
#define AOTC_MAX_MANIFEST_BYTES ((uint64_t)64 << 20)

/* Weights stream from memory on every inference (a batch-1 transformer reads each weight once per run), a
 * panel at a time ahead of the GEMM (targets/cpu/prefetch.py): on 4 KB pages a 150 MB classifier's panels
 * miss the TLB on every page. Big files are 2 MB aligned and asked to live on transparent huge pages (a
 * hint: where THP is off it changes nothing). */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

static void advise_huge_pages(void* p, size_t n) {
#ifdef MADV_HUGEPAGE
  if (n >= HUGE_PAGE_BYTES) (void)madvise(p, n & ~(HUGE_PAGE_BYTES - 1), MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

/* Reads a whole regular file (64-byte aligned, 2 MB aligned from 2 MB on, NUL-terminated). With keep_fd, the
 * open descriptor is returned in *keep_fd, so that the caller can load the very file it has hashed. */
static uint8_t* read_file(const char* path, size_t* size, uint64_t max_bytes, int* keep_fd) {
  /* O_NONBLOCK: a FIFO or device planted in a bundle must not block the open; it is refused below. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) { set_error("cannot open %s: %s", path, strerror(errno)); return NULL; }
  struct stat st;
  if (stat_fd(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    set_error("%s is not a regular file", path);
    close(fd);
    return NULL;
  }
  if ((uint64_t)st.st_size > max_bytes) {
    set_error("%s has %lld bytes, more than any bundle file may have (%llu)", path, (long long)st.st_size,
              (unsigned long long)max_bytes);
    close(fd);
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  void* buf = NULL;
  if (posix_memalign(&buf, n >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : 64, n + 1) != 0) {
    close(fd);
    set_error("out of memory reading %s (%zu bytes)", path, n);
    return NULL;
  }
  advise_huge_pages(buf, n + 1);
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (uint8_t*)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got != n) { close(fd); free(buf); set_error("cannot read %s: it changed while being read", path); return NULL; }
  ((uint8_t*)buf)[n] = 0;
  *size = n;
  if (keep_fd) *keep_fd = fd;
  else close(fd);
  return buf;
}

/* A file name the manifest may list: a plain name inside the bundle directory. */
static int safe_file_name(const char* name) {
  size_t n = strlen(name);
  if (n == 0 || n > 255 || !strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "manifest.json")) return 0;
  for (const unsigned char* c = (const unsigned char*)name; *c; ++c)
    if (*c < 0x20 || *c == 0x7f || *c == '/' || *c == '\\') return 0;
  return 1;
}

static int is_sha256_hex(const char* s) {
  size_t n = 0;
  for (; s[n]; ++n)
    if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return 0;
  return n == 64;
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

/* ---- the CPU --------------------------------------------------------------------------------------- */
/* The manifest's target.cpu_features: what the kernels may use beyond the architecture's baseline (LLVM's
 * names). A CPU without one of them would die of SIGILL in the middle of a run; the loader says which are
 * missing instead. 1: this CPU has it, 0: it has not, -1: this runtime does not know the name. */
#if defined(__x86_64__)
static uint64_t xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t)hi << 32 | lo;
}

static int cpu_has(const char* f) {
  unsigned a, b, c, d, c1 = 0, b7 = 0, c7 = 0, cx = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) c1 = c;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) { b7 = b; c7 = c; }
  if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) cx = c;
  /* The OS must save the registers too (XCR0): YMM state for AVX, opmask and both ZMM halves for AVX-512. */
  uint64_t os = (c1 >> 27 & 1) ? xcr0() : 0;
  int ymm = (os & 0x6) == 0x6, zmm = ymm && (os & 0xe0) == 0xe0;
  static const struct { const char* name; int reg; unsigned bit; int state; } t[] = {
    /* reg: 0 cpuid(1).ecx, 1 cpuid(7).ebx, 2 cpuid(7).ecx, 3 cpuid(0x80000001).ecx; state: 1 ymm, 2 zmm */
    {"avx", 0, 28, 1}, {"fma", 0, 12, 1}, {"f16c", 0, 29, 1}, {"movbe", 0, 22, 0}, {"popcnt", 0, 23, 0}, {"xsave", 0, 26, 0},
    {"bmi", 1, 3, 0}, {"avx2", 1, 5, 1}, {"bmi2", 1, 8, 0}, {"avx512f", 1, 16, 2}, {"avx512dq", 1, 17, 2},
    {"avx512ifma", 1, 21, 2}, {"avx512cd", 1, 28, 2}, {"avx512bw", 1, 30, 2}, {"avx512vl", 1, 31, 2},
    {"avx512vbmi", 2, 1, 2}, {"avx512vbmi2", 2, 6, 2}, {"avx512vnni", 2, 11, 2}, {"avx512bitalg", 2, 12, 2},
    {"avx512vpopcntdq", 2, 14, 2}, {"lzcnt", 3, 5, 0}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i) {
    if (strcmp(f, t[i].name)) continue;
    unsigned reg = t[i].reg == 0 ? c1 : t[i].reg == 1 ? b7 : t[i].reg == 2 ? c7 : cx;
    return (reg >> t[i].bit & 1) && (t[i].state == 0 || (t[i].state == 1 ? ymm : zmm));
  }
  return -1;
}
#elif defined(__aarch64__)
static int cpu_has(const char* f) {
  unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
  /* The kernel's HWCAP bits (asm/hwcap.h), spelled out for sysroots whose headers predate them. */
  static const struct { const char* name; int second; unsigned long mask; } t[] = {
    {"neon", 0, 1ul << 1}, {"crc", 0, 1ul << 7}, {"lse", 0, 1ul << 8}, {"fullfp16", 0, 1ul << 10},
    {"rdm", 0, 1ul << 12}, {"dotprod", 0, 1ul << 20}, {"sve", 0, 1ul << 22}, {"fp16fml", 0, 1ul << 23},
    {"i8mm", 1, 1ul << 13}, {"bf16", 1, 1ul << 14}, {"aes", 0, 1ul << 3}, {"sha2", 0, 1ul << 6},
    {"rcpc", 0, 1ul << 15}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; ++i)
    if (!strcmp(f, t[i].name)) return ((t[i].second ? h2 : h) & t[i].mask) != 0;
  return -1;
}
#else
static int cpu_has(const char* f) { (void)f; return -1; }
#endif

static int check_cpu(const char* dir, const jval* target) {
  const jval* feats = target && target->t == J_OBJ ? jget(target, "cpu_features") : NULL;
  if (!feats) return 0; /* bundles from before the field, and targets that need nothing beyond the baseline */
  if (feats->t != J_ARR || feats->n > 64) {
    set_error("%s/manifest.json: target.cpu_features must be a list of at most 64 feature names", dir);
    return -1;
  }
  char missing[512] = "", unknown[512] = "";
  for (int i = 0; i < feats->n; ++i) {
    const jval* v = &feats->items[i];
    if (v->t != J_STR || !v->str[0] || strlen(v->str) > 32) {
      set_error("%s/manifest.json: target.cpu_features[%d] is not a feature name", dir, i);
      return -1;
    }
    int has = cpu_has(v->str);
    char* list = has < 0 ? unknown : has == 0 ? missing : NULL;
    if (list) snprintf(list + strlen(list), 512 - strlen(list), "%s%s", list[0] ? ", " : "", v->str);
  }
  if (missing[0]) {
    set_error("bundle %s needs CPU features this CPU does not have: %s. Its kernels would stop at the first such "
              "instruction; run it on a CPU that has them, or compile the model for a target this CPU supports "
              "(`aotc targets` lists them and marks the host's)", dir, missing);
    return -1;
  }
  if (unknown[0]) {
    set_error("bundle %s needs CPU features this runtime cannot check: %s. It was compiled for another "
              "architecture or by a newer aotc; use the runtime that came with the bundle", dir, unknown);
    return -1;
  }
  return 0;
}

/* ---- the model ----------------------------------------------------------------------------------- */
#define AOTC_MAX_RANK 16
#define AOTC_MAX_IO 256
/* Bounds on what a manifest may claim, so that no size computed from it can overflow: the library's own
 * figures must then match exactly. */
#define AOTC_MAX_DIM ((uint64_t)1 << 40)
#define AOTC_MAX_TENSOR_BYTES ((uint64_t)1 << 46)
#define AOTC_MAX_ARENA_BYTES ((uint64_t)1 << 46)

typedef struct { char* name; char* dtype; int32_t ndim; int64_t shape[AOTC_MAX_RANK]; size_t nbytes; } io_spec;

typedef int (*run_fn)(void*, const void*, const void* const*, void* const*, const char**);
typedef void (*set_threads_fn)(int);
typedef int (*io_info_fn)(int, int, const char**, const char**, int32_t*, const int64_t**);

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

/* Reads and validates the manifest's "inputs" or "outputs" list. */
static int read_io(const char* dir, const jval* arr, io_spec** out, int* count, const char* what, int min_count,
                   int unique_names) {
  if (!arr || arr->t != J_ARR) { set_error("%s/manifest.json: '%s' is missing or not a list", dir, what); return -1; }
  if (arr->n < min_count || arr->n > AOTC_MAX_IO) {
    set_error("%s/manifest.json: '%s' has %d entries (allowed: %d to %d)", dir, what, arr->n, min_count, AOTC_MAX_IO);
    return -1;
  }
  *out = calloc((size_t)arr->n + 1, sizeof(io_spec));
  if (!*out) { set_error("out of memory"); return -1; }
  for (int i = 0; i < arr->n; ++i) {
    const jval* item = &arr->items[i];
    const jval *name = jget(item, "name"), *dt = jget(item, "dtype"), *shape = jget(item, "shape");
    if (item->t != J_OBJ || !name || name->t != J_STR || !name->str[0]) {
      set_error("%s/manifest.json: %s[%d] has no name", dir, what, i);
      return -1;
    }
    if (!dt || dt->t != J_STR || !dtype_size(dt->str)) {
      set_error("%s/manifest.json: %s '%s' has no known dtype", dir, what, name->str);
      return -1;
    }
    if (!shape || shape->t != J_ARR || shape->n > AOTC_MAX_RANK) {
      set_error("%s/manifest.json: %s '%s' has no shape of rank 0 to %d", dir, what, name->str, AOTC_MAX_RANK);
      return -1;
    }
    io_spec* s = &(*out)[i];
    *count = i + 1;  /* from here on free_io frees this entry */
    s->name = strdup(name->str);
    s->dtype = strdup(dt->str);
    if (!s->name || !s->dtype) { set_error("out of memory"); return -1; }
    s->ndim = shape->n;
    uint64_t bytes = dtype_size(dt->str);
    for (int k = 0; k < shape->n; ++k) {
      uint64_t d;
      if (juint(&shape->items[k], AOTC_MAX_DIM, &d) != 0) {
        set_error("%s/manifest.json: %s '%s' has a shape entry that is not an integer from 0 to 2^40", dir, what, name->str);
        return -1;
      }
      s->shape[k] = (int64_t)d;
      bytes = d && bytes > AOTC_MAX_TENSOR_BYTES / d ? AOTC_MAX_TENSOR_BYTES + 1 : bytes * d;
    }
    if (bytes > AOTC_MAX_TENSOR_BYTES) {
      set_error("%s/manifest.json: %s '%s' would need more than 2^46 bytes", dir, what, name->str);
      return -1;
    }
    s->nbytes = (size_t)bytes;
    for (int k = 0; k < i; ++k)
      if (unique_names && !strcmp((*out)[k].name, s->name)) {
        set_error("%s/manifest.json: %s '%s' is listed twice", dir, what, s->name);
        return -1;
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

/* The manifest's top-level fields, validated. */
typedef struct { uint64_t arena_bytes, weight_bytes, abi; const char* model_id; const jval* files; } manifest_fields;

static int check_manifest(const char* dir, const jval* man, manifest_fields* f) {
  const jval* fv = jget(man, "format_version");
  uint64_t version;
  if (juint(fv, 1u << 30, &version) != 0) {
    set_error("%s/manifest.json has no format_version (a whole number)", dir);
    return -1;
  }
  if (version == AOTC_FORMAT_VERSION + 1 && jget(man, "buckets")) {
    /* A bundle of shape buckets: each bucket folder is a format-1 bundle; choosing one is the caller's. */
    set_error("bundle %s holds shape buckets (format %llu): load it with aotc_bucketed_load, which picks the bucket "
              "(as the Python runtime and `aotc run` do), or one of its bucket folders (%s/<bucket>, listed by `aotc "
              "inspect`) with aotc_load", dir, (unsigned long long)version, dir);
    return -1;
  }
  if (version != AOTC_FORMAT_VERSION) {
    set_error("bundle %s has format version %llu, but this runtime reads format version %d; recompile the model "
              "with a matching aotc, or use a runtime that knows that format", dir, (unsigned long long)version,
              AOTC_FORMAT_VERSION);
    return -1;
  }
  if (juint(jget(man, "abi_version"), 1u << 30, &f->abi) != 0 || f->abi != AOTC_ABI_VERSION) {
    set_error("bundle %s was built for another model ABI (abi_version %s, this runtime calls version %d); recompile "
              "it with a matching aotc", dir, jget(man, "abi_version") ? "given" : "missing", AOTC_ABI_VERSION);
    return -1;
  }
  const jval* id = jget(man, "model_id");
  size_t id_len = id && id->t == J_STR ? strlen(id->str) : 0;
  for (size_t i = 0; i < id_len && id_len <= 64; ++i)
    if (!((id->str[i] >= '0' && id->str[i] <= '9') || (id->str[i] >= 'a' && id->str[i] <= 'f'))) id_len = 0;
  if (id_len == 0 || id_len > 64) { set_error("%s/manifest.json: model_id is missing or not a hex string", dir); return -1; }
  f->model_id = id->str;
  if (juint(jget(man, "arena_bytes"), AOTC_MAX_ARENA_BYTES, &f->arena_bytes) != 0 ||
      juint(jget(man, "weight_bytes"), AOTC_MAX_FILE_BYTES, &f->weight_bytes) != 0) {
    set_error("%s/manifest.json: arena_bytes and weight_bytes must be whole numbers from 0 to 2^46", dir);
    return -1;
  }
  f->files = jget(man, "files");
  if (!f->files || f->files->t != J_OBJ) { set_error("%s/manifest.json has no 'files' object", dir); return -1; }
  int have_so = 0, have_w = 0;
  for (int i = 0; i < f->files->n; ++i) {
    const char* name = f->files->keys[i];
    if (!safe_file_name(name) || f->files->items[i].t != J_STR || !is_sha256_hex(f->files->items[i].str)) {
      set_error("%s/manifest.json lists a bad file entry '%.64s' (a plain file name and its SHA-256 in hex)", dir, name);
      return -1;
    }
    have_so |= !strcmp(name, "model.so");
    have_w |= !strcmp(name, "weights.bin");
  }
  if (!have_so || !have_w) { set_error("%s/manifest.json does not list %s", dir, have_so ? "weights.bin" : "model.so"); return -1; }
  return check_cpu(dir, jget(man, "target"));
}

/* Every listed file's SHA-256, before any code from the bundle is loaded. Keeps weights.bin's contents and
 * model.so's open descriptor (the library loaded is the file hashed, even if the path is replaced). */
static int check_files(const char* dir, const manifest_fields* f, aotc_model* m, int* so_fd) {
  char path[4096];
  for (int i = 0; i < f->files->n; ++i) {
    const char* name = f->files->keys[i];
    int is_w = !strcmp(name, "weights.bin"), is_so = !strcmp(name, "model.so");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t size;
    int fd = -1;
    uint8_t* data = read_file(path, &size, is_w ? f->weight_bytes : AOTC_MAX_FILE_BYTES, is_so ? &fd : NULL);
    if (!data) {
      char why[1024];
      snprintf(why, sizeof why, "%s", last_error);
      if (is_w && strstr(why, "more than"))
        set_error("%s/weights.bin is larger than the manifest's weight_bytes (%llu)", dir, (unsigned long long)f->weight_bytes);
      else
        set_error("bundle %s is incomplete: %s", dir, why);
      return -1;
    }
    char hex[65];
    sha256_hex(data, size, hex);
    if (strcmp(hex, f->files->items[i].str) != 0) {
      free(data);
      if (fd >= 0) close(fd);
      set_error("bundle %s is corrupted: %s has SHA-256 %.16s..., the manifest says %.16s...", dir, name, hex,
                f->files->items[i].str);
      return -1;
    }
    if (is_w && size != f->weight_bytes) {
      free(data);
      set_error("%s/weights.bin has %zu bytes, the manifest says %llu", dir, size, (unsigned long long)f->weight_bytes);
      return -1;
    }
    if (is_w) m->weights = data;
    else free(data);
    if (is_so) *so_fd = fd;
  }
  return 0;
}

/* model.so's own description of what it was built for; every figure must equal the manifest's. */
static int check_library(const char* path, const manifest_fields* f, aotc_model* m) {
  int (*abi_fn)(void) = (int (*)(void))dlsym(m->so, "aotc_model_abi_version");
  const char* (*id_fn)(void) = (const char* (*)(void))dlsym(m->so, "aotc_model_id");
  uint64_t (*arena_fn)(void) = (uint64_t (*)(void))dlsym(m->so, "aotc_model_arena_bytes");
  uint64_t (*weights_fn)(void) = (uint64_t (*)(void))dlsym(m->so, "aotc_model_weight_bytes");
  int (*nin_fn)(void) = (int (*)(void))dlsym(m->so, "aotc_model_num_inputs");
  int (*nout_fn)(void) = (int (*)(void))dlsym(m->so, "aotc_model_num_outputs");
  io_info_fn io_fn = (io_info_fn)dlsym(m->so, "aotc_model_io_info");
  m->run = (run_fn)dlsym(m->so, "aotc_model_run");
  m->set_threads = (set_threads_fn)dlsym(m->so, "aotc_model_set_num_threads");
  if (!abi_fn || !id_fn || !arena_fn || !weights_fn || !nin_fn || !nout_fn || !io_fn || !m->run || !m->set_threads) {
    set_error("%s is not an aotc model library of ABI version %d (missing aotc_model_* entry points)", path, AOTC_ABI_VERSION);
    return -1;
  }
  if ((uint64_t)abi_fn() != f->abi) { set_error("%s has ABI version %d, the manifest says %llu", path, abi_fn(), (unsigned long long)f->abi); return -1; }
  const char* id = id_fn();
  if (!id || strcmp(id, f->model_id) != 0) {
    set_error("%s belongs to another model (id %.64s, the manifest says %s)", path, id ? id : "(none)", f->model_id);
    return -1;
  }
  if (arena_fn() != f->arena_bytes || weights_fn() != f->weight_bytes) {
    set_error("%s was built for a %llu-byte arena and %llu bytes of weights, the manifest says %llu and %llu", path,
              (unsigned long long)arena_fn(), (unsigned long long)weights_fn(), (unsigned long long)f->arena_bytes,
              (unsigned long long)f->weight_bytes);
    return -1;
  }
  if (nin_fn() != m->num_inputs || nout_fn() != m->num_outputs) {
    set_error("%s has %d inputs and %d outputs, the manifest lists %d and %d", path, nin_fn(), nout_fn(), m->num_inputs,
              m->num_outputs);
    return -1;
  }
  for (int out = 0; out < 2; ++out) {
    const io_spec* specs = out ? m->outputs : m->inputs;
    for (int i = 0; i < (out ? m->num_outputs : m->num_inputs); ++i) {
      const char *name = NULL, *dtype = NULL;
      int32_t ndim = -1;
      const int64_t* shape = NULL;
      int same = io_fn(out, i, &name, &dtype, &ndim, &shape) == 0 && name && dtype && !strcmp(name, specs[i].name) &&
                 !strcmp(dtype, specs[i].dtype) && ndim == specs[i].ndim && (ndim == 0 || shape);
      for (int k = 0; same && k < ndim; ++k) same = shape[k] == specs[i].shape[k];
      if (!same) {
        set_error("%s was built for another %s %d than the manifest's '%s' %s (name, dtype or shape differ)", path,
                  out ? "output" : "input", i, specs[i].name, specs[i].dtype);
        return -1;
      }
    }
  }
  return 0;
}

/* Loads model.so by its path once the path still names the file that was hashed (fd): a file renamed over it
 * since then is refused. (dlopen of /proc/self/fd/N would close that gap but glibc takes a library already
 * loaded under the same name for the one asked for, and fd numbers are reused. A process that can rewrite the
 * bundle's files in place while it loads is outside the trust model: docs/reliability.md.) */
static void* open_library(const char* path, int fd) {
  struct stat hashed, now;
  if (fd < 0 || stat_fd(fd, &hashed) != 0 || stat_path(path, &now) != 0 || hashed.st_dev != now.st_dev ||
      hashed.st_ino != now.st_ino) {
    set_error("%s was replaced while the bundle was being checked", path);
    return NULL;
  }
  void* so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!so) {
    char why[1024];
    snprintf(why, sizeof why, "%s", dlerror());
    set_error("cannot load %s: %s%s", path, why, other_machine_note(path));
  }
  return so;
}

aotc_model* aotc_load_with_manifest(const char* dir, const char* text, size_t len) {
  char path[4096];
  last_error[0] = 0;
  if (!dir || !text) { set_error("aotc_load_with_manifest: no bundle directory or manifest"); return NULL; }
  jval man;
  if (jparse_document(text, len, &man) != 0 || man.t != J_OBJ) {
    jfree(&man);
    set_error("%s/manifest.json is not valid JSON (or not an object; duplicate keys and NaN are refused)", dir);
    return NULL;
  }
  aotc_model* m = calloc(1, sizeof *m);
  if (!m) { jfree(&man); set_error("out of memory"); return NULL; }
  pthread_mutex_init(&m->mu, NULL);
  int so_fd = -1;
  manifest_fields f;
  /* The order matters: every field validated, then every checksum, and only then is model.so opened. */
  if (check_manifest(dir, &man, &f) || read_io(dir, jget(&man, "inputs"), &m->inputs, &m->num_inputs, "inputs", 0, 1) ||
      read_io(dir, jget(&man, "outputs"), &m->outputs, &m->num_outputs, "outputs", 1, 0) ||
      check_files(dir, &f, m, &so_fd))
    goto fail;
  m->arena_bytes = (size_t)f.arena_bytes;
  snprintf(path, sizeof path, "%s/model.so", dir);
  m->so = open_library(path, so_fd);
  if (!m->so) goto fail;
  if (check_library(path, &f, m)) goto fail;
  if (so_fd >= 0) close(so_fd);
  jfree(&man);
  return m;
fail:
  if (so_fd >= 0) close(so_fd);
  jfree(&man);
  /* A library that disagrees with its manifest has not run a model yet (its pool starts on the first run). */
  if (m->so) dlclose(m->so);
  aotc_free(m);
  return NULL;
}

/* dir/manifest.json's bytes (NUL-terminated), or NULL with the error set. */
static uint8_t* read_manifest(const char* dir, size_t* size, const char* caller) {
  char path[4096];
  last_error[0] = 0;
  if (!dir) { set_error("%s: no bundle directory", caller); return NULL; }
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  uint8_t* text = read_file(path, size, AOTC_MAX_MANIFEST_BYTES, NULL);
  if (!text) {
    char why[1024];
    snprintf(why, sizeof why, "%s", last_error);
    set_error("%s is not an aotc bundle: no readable manifest.json (%s)", dir, why);
  }
  return text;
}

aotc_model* aotc_load(const char* dir) {
  size_t size;
  uint8_t* text = read_manifest(dir, &size, "aotc_load");
  if (!text) return NULL;
  aotc_model* m = aotc_load_with_manifest(dir, (const char*)text, size);
  free(text);
  return m;
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

/* Finds each model input among `inputs` (in_ptr[k]: the k-th model input's data) and checks it. */
static int match_inputs(const aotc_model* m, const aotc_tensor* inputs, int num_inputs, const void** in_ptr) {
  if (num_inputs < 0 || (num_inputs > 0 && !inputs)) { set_error("aotc_run: bad input list"); return -1; }
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
    if (in_ptr) in_ptr[k] = t->data;
  }
  return 0;
}

int aotc_check_inputs(const aotc_model* m, const aotc_tensor* inputs, int num_inputs) {
  if (!m) { set_error("aotc_check_inputs: no model"); return -1; }
  return match_inputs(m, inputs, num_inputs, NULL);
}

int aotc_run(aotc_model* m, const aotc_tensor* inputs, int num_inputs, aotc_tensor* outputs, int num_outputs) {
  if (!m) { set_error("aotc_run: no model"); return -1; }
  const void* in_ptr[AOTC_MAX_IO];
  void* out_ptr[AOTC_MAX_IO];
  void* scratch[AOTC_MAX_IO];
  if (match_inputs(m, inputs, num_inputs, in_ptr)) return -1;
  if (num_outputs < 0 || (num_outputs > 0 && !outputs)) { set_error("aotc_run: bad output list"); return -1; }
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
      } else {
        /* Zeroed once, so a run never depends on the bytes the process freed there: a kernel that read past
         * its operands (padded reads whose clamp TVM's simplifier had dropped, since fixed) ran 5-7x slower
         * on the denormal floats among them, and results must not depend on what a run finds in memory. */
        memset(a->mem, 0, m->arena_bytes ? m->arena_bytes : 64);
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

/* ---- shape buckets (format 2; docs/buckets.md) ----------------------------------------------------
 * The top-level manifest lists the buckets (a size per bucketed dimension), the pad value of each padded
 * input and which axes of each input and output carry which dimension. Each bucket folder is a format-1
 * bundle, loaded by aotc_load_with_manifest on first use once its manifest.json has the SHA-256 the
 * top-level manifest lists. A run picks the smallest bucket holding the inputs, pads them, runs the
 * bucket into scratch outputs and copies the valid part into the caller's buffers. */
#define AOTC_MAX_BUCKETS 4096

typedef struct { const char* name; const char* dtype; int ndim; int axis_dim[AOTC_MAX_RANK]; int has_pad; double pad; } bucket_io;
typedef struct { const char* name; int64_t sizes[AOTC_MAX_RANK]; double cost; const char* digest; aotc_model* model; } bucket;

struct aotc_bucketed {
  char* dir;
  jval man;
  int num_dims;
  const char* dims[AOTC_MAX_RANK];
  int num_buckets, num_inputs, num_outputs, threads;
  bucket* buckets;
  bucket_io* inputs;
  bucket_io* outputs;
  pthread_mutex_t mu;
};

static int bucket_folder_name(const char* s) {
  size_t n = 0;
  for (; s[n]; ++n)
    if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_')) return 0;
  return n > 0 && n <= 128;
}

static int dim_index(const aotc_bucketed* b, const char* name) {
  for (int i = 0; i < b->num_dims; ++i)
    if (!strcmp(b->dims[i], name)) return i;
  return -1;
}

/* The "inputs"/"outputs" list's names, dtypes and per-axis dimensions (-1: not bucketed). */
static int read_bucket_io(aotc_bucketed* b, const jval* arr, const jval* pad, bucket_io** out, int* count, const char* what) {
  if (!arr || arr->t != J_ARR || arr->n < 1 || arr->n > AOTC_MAX_IO) {
    set_error("%s/manifest.json: '%s' is missing or not a list of 1 to %d entries", b->dir, what, AOTC_MAX_IO);
    return -1;
  }
  *out = calloc((size_t)arr->n, sizeof(bucket_io));
  if (!*out) { set_error("out of memory"); return -1; }
  *count = arr->n;
  for (int i = 0; i < arr->n; ++i) {
    const jval *name = jget(&arr->items[i], "name"), *dt = jget(&arr->items[i], "dtype"), *dims = jget(&arr->items[i], "dims");
    bucket_io* s = &(*out)[i];
    if (!name || name->t != J_STR || !dt || dt->t != J_STR || !dtype_size(dt->str) || !dims || dims->t != J_ARR ||
        dims->n > AOTC_MAX_RANK) {
      set_error("%s/manifest.json: %s[%d] needs a name, a known dtype and 'dims' (a list of up to %d dimension names "
                "or null)", b->dir, what, i, AOTC_MAX_RANK);
      return -1;
    }
    s->name = name->str;
    s->dtype = dt->str;
    s->ndim = dims->n;
    for (int k = 0; k < dims->n; ++k) {
      const jval* d = &dims->items[k];
      s->axis_dim[k] = d->t == J_STR ? dim_index(b, d->str) : -1;
      if (d->t != J_NULL && s->axis_dim[k] < 0) {
        set_error("%s/manifest.json: %s '%s' names a dimension that is not bucketed", b->dir, what, s->name);
        return -1;
      }
    }
    const jval* p = pad ? jget(pad, s->name) : NULL;
    if (p && p->t != J_NUM) { set_error("%s/manifest.json: the pad value of '%s' is not a number", b->dir, s->name); return -1; }
    s->has_pad = p != NULL;
    s->pad = p ? p->num : 0;
  }
  return 0;
}

void aotc_bucketed_free(aotc_bucketed* b) {
  if (!b) return;
  for (int i = 0; i < b->num_buckets && b->buckets; ++i) aotc_free(b->buckets[i].model);
  free(b->buckets);
  free(b->inputs);
  free(b->outputs);
  jfree(&b->man);
  free(b->dir);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

aotc_bucketed* aotc_bucketed_load_with_manifest(const char* dir, const char* text, size_t len) {
  last_error[0] = 0;
  if (!dir || !text) { set_error("aotc_bucketed_load_with_manifest: no bundle directory or manifest"); return NULL; }
  aotc_bucketed* b = calloc(1, sizeof *b);
  if (!b || !(b->dir = strdup(dir))) { free(b); set_error("out of memory"); return NULL; }
  pthread_mutex_init(&b->mu, NULL);
  if (jparse_document(text, len, &b->man) != 0 || b->man.t != J_OBJ) {
    set_error("%s/manifest.json is not valid JSON (or not an object; duplicate keys and NaN are refused)", dir);
    goto fail;
  }
  uint64_t version;
  const jval *bk = jget(&b->man, "buckets"), *files = jget(&b->man, "files");
  if (juint(jget(&b->man, "format_version"), 1u << 30, &version) != 0 || version != AOTC_FORMAT_VERSION + 1 || !bk ||
      bk->t != J_OBJ) {
    set_error("bundle %s is not a bundle of shape buckets (format %d with 'buckets'); load it with aotc_load", dir,
              AOTC_FORMAT_VERSION + 1);
    goto fail;
  }
  const jval *dims = jget(bk, "dims"), *pad = jget(bk, "pad"), *variants = jget(bk, "variants");
  if (!dims || dims->t != J_ARR || dims->n < 1 || dims->n > AOTC_MAX_RANK || (pad && pad->t != J_OBJ) || !variants ||
      variants->t != J_ARR || variants->n < 1 || variants->n > AOTC_MAX_BUCKETS || !files || files->t != J_OBJ) {
    set_error("%s/manifest.json has a malformed 'buckets' description (dims, pad, variants) or no 'files'", dir);
    goto fail;
  }
  b->num_dims = dims->n;
  for (int i = 0; i < dims->n; ++i) {
    if (dims->items[i].t != J_STR) { set_error("%s/manifest.json: a bucketed dimension is not a name", dir); goto fail; }
    b->dims[i] = dims->items[i].str;
  }
  b->buckets = calloc((size_t)variants->n, sizeof(bucket));
  if (!b->buckets) { set_error("out of memory"); goto fail; }
  b->num_buckets = variants->n;
  for (int i = 0; i < variants->n; ++i) {
    const jval *name = jget(&variants->items[i], "name"), *sizes = jget(&variants->items[i], "sizes");
    bucket* v = &b->buckets[i];
    if (!name || name->t != J_STR || !bucket_folder_name(name->str) || !sizes || sizes->t != J_OBJ) {
      set_error("%s/manifest.json: bucket %d has no folder name (letters, digits, _) or no sizes", dir, i);
      goto fail;
    }
    v->name = name->str;
    v->cost = 1;
    for (int k = 0; k < b->num_dims; ++k) {
      uint64_t n;
      if (juint(jget(sizes, b->dims[k]), AOTC_MAX_DIM, &n) != 0 || n == 0) {
        set_error("%s/manifest.json: bucket %s has no size from 1 to 2^40 for %s", dir, v->name, b->dims[k]);
        goto fail;
      }
      v->sizes[k] = (int64_t)n;
      v->cost *= (double)n;
    }
    char key[160];
    snprintf(key, sizeof key, "%s/manifest.json", v->name);
    const jval* digest = jget(files, key);
    if (!digest || digest->t != J_STR || !is_sha256_hex(digest->str)) {
      set_error("%s/manifest.json lists no SHA-256 for %s", dir, key);
      goto fail;
    }
    v->digest = digest->str;
  }
  if (read_bucket_io(b, jget(&b->man, "inputs"), pad, &b->inputs, &b->num_inputs, "inputs") ||
      read_bucket_io(b, jget(&b->man, "outputs"), NULL, &b->outputs, &b->num_outputs, "outputs"))
    goto fail;
  for (int i = 0; pad && i < pad->n; ++i) {
    int known = 0;
    for (int k = 0; k < b->num_inputs; ++k) known |= !strcmp(pad->keys[i], b->inputs[k].name);
    if (!known) { set_error("%s/manifest.json: a pad value for '%.64s', which is not an input", dir, pad->keys[i]); goto fail; }
  }
  return b;
fail:
  aotc_bucketed_free(b);
  return NULL;
}

aotc_bucketed* aotc_bucketed_load(const char* dir) {
  size_t size;
  uint8_t* text = read_manifest(dir, &size, "aotc_bucketed_load");
  if (!text) return NULL;
  aotc_bucketed* b = aotc_bucketed_load_with_manifest(dir, (const char*)text, size);
  free(text);
  return b;
}

int aotc_bucketed_num_outputs(const aotc_bucketed* b) { return b ? b->num_outputs : 0; }

int aotc_bucketed_set_num_threads(aotc_bucketed* b, int n) {
  if (!b) { set_error("aotc_bucketed_set_num_threads: no model"); return -1; }
  pthread_mutex_lock(&b->mu);
  b->threads = n;
  for (int i = 0; i < b->num_buckets; ++i)
    if (b->buckets[i].model) aotc_set_num_threads(b->buckets[i].model, n);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

/* The smallest bucket holding `inputs` (their size along each bucketed dimension in need[]), or -1. */
static int choose_bucket(const aotc_bucketed* b, const aotc_tensor* inputs, int num_inputs, int64_t* need,
                         const bucket_io** spec) {
  int from[AOTC_MAX_RANK];
  for (int d = 0; d < b->num_dims; ++d) { need[d] = -1; from[d] = -1; }
  if (num_inputs < 0 || num_inputs > AOTC_MAX_IO || (num_inputs > 0 && !inputs)) { set_error("bad input list"); return -1; }
  for (int i = 0; i < num_inputs; ++i) {
    spec[i] = NULL;
    for (int k = 0; k < b->num_inputs; ++k)
      if (inputs[i].name && !strcmp(inputs[i].name, b->inputs[k].name)) spec[i] = &b->inputs[k];
    if (!spec[i]) { set_error("unknown input '%s'", inputs[i].name ? inputs[i].name : "(null)"); return -1; }
    if (inputs[i].ndim != spec[i]->ndim || (inputs[i].ndim > 0 && !inputs[i].shape)) {
      set_error("input '%s' has %d dimensions, the model takes %d", spec[i]->name, inputs[i].ndim, spec[i]->ndim);
      return -1;
    }
    if (!inputs[i].dtype || strcmp(inputs[i].dtype, spec[i]->dtype) != 0) {
      set_error("input '%s' has dtype %s, the model expects %s", spec[i]->name, inputs[i].dtype ? inputs[i].dtype : "(none)",
                spec[i]->dtype);
      return -1;
    }
    for (int k = 0; k < spec[i]->ndim; ++k) {
      int d = spec[i]->axis_dim[k];
      int64_t n = inputs[i].shape[k];
      if (n < 0 || (uint64_t)n > AOTC_MAX_DIM) { set_error("input '%s' has a bad shape", spec[i]->name); return -1; }
      if (d < 0) continue;
      if (need[d] >= 0 && need[d] != n) {
        set_error("inputs '%s' and '%s' disagree on dimension %s (%lld and %lld)", inputs[from[d]].name, spec[i]->name,
                  b->dims[d], (long long)need[d], (long long)n);
        return -1;
      }
      need[d] = n;
      from[d] = i;
    }
  }
  int best = -1;
  for (int v = 0; v < b->num_buckets; ++v) {
    int fits = 1;
    for (int d = 0; d < b->num_dims; ++d) fits &= b->buckets[v].sizes[d] >= need[d];
    if (fits && (best < 0 || b->buckets[v].cost < b->buckets[best].cost)) best = v;
  }
  if (best < 0) {
    char names[640];
    size_t used = 0;
    names[0] = 0;
    for (int v = 0; v < b->num_buckets && used < sizeof names - 8; ++v)
      used += (size_t)snprintf(names + used, sizeof names - used, v ? ", %s" : "%s", b->buckets[v].name);
    for (int d = 0; d < b->num_dims; ++d) {
      int64_t m = 0;
      for (int v = 0; v < b->num_buckets; ++v) m = b->buckets[v].sizes[d] > m ? b->buckets[v].sizes[d] : m;
      if (need[d] > m) {
        set_error("input '%s' has %s %lld, more than every bucket of this bundle holds (largest %s %lld; buckets: "
                  "%s); split the input, or compile a larger bucket", inputs[from[d]].name, b->dims[d],
                  (long long)need[d], b->dims[d], (long long)m, names);
        return -1;
      }
    }
    set_error("no bucket of this bundle holds these inputs' sizes together (each size fits some bucket; buckets: %s)",
              names);
  }
  return best;
}

const char* aotc_bucketed_choose(const aotc_bucketed* b, const aotc_tensor* inputs, int num_inputs) {
  int64_t need[AOTC_MAX_RANK];
  const bucket_io* spec[AOTC_MAX_IO];
  if (!b) { set_error("aotc_bucketed_choose: no model"); return NULL; }
  int v = choose_bucket(b, inputs, num_inputs, need, spec);
  return v < 0 ? NULL : b->buckets[v].name;
}

static aotc_model* bucket_model(aotc_bucketed* b, bucket* v) {
  pthread_mutex_lock(&b->mu);
  if (!v->model) {
    char path[4400], folder[4200];
    size_t size;
    snprintf(folder, sizeof folder, "%s/%s", b->dir, v->name);
    snprintf(path, sizeof path, "%s/manifest.json", folder);
    uint8_t* text = read_file(path, &size, AOTC_MAX_MANIFEST_BYTES, NULL);
    if (text) {
      char hex[65];
      sha256_hex(text, size, hex);
      if (strcmp(hex, v->digest) != 0)
        set_error("bundle %s is corrupted: %s/manifest.json has SHA-256 %.16s..., the manifest says %.16s...", b->dir,
                  v->name, hex, v->digest);
      else if ((v->model = aotc_load_with_manifest(folder, (const char*)text, size)) && b->threads)
        aotc_set_num_threads(v->model, b->threads);
      free(text);
    }
  }
  aotc_model* m = v->model;
  pthread_mutex_unlock(&b->mu);
  return m;
}

/* Copies the box min(dshape, sshape) of an ndim-d array from src into dst (row-major, elem bytes each). */
static void copy_box(uint8_t* dst, const int64_t* dshape, const uint8_t* src, const int64_t* sshape, int ndim, size_t elem) {
  if (ndim == 0) { memcpy(dst, src, elem); return; }
  int64_t n = dshape[0] < sshape[0] ? dshape[0] : sshape[0];
  if (ndim == 1) { memcpy(dst, src, (size_t)n * elem); return; }
  size_t dstride = elem, sstride = elem;
  for (int k = 1; k < ndim; ++k) { dstride *= (size_t)dshape[k]; sstride *= (size_t)sshape[k]; }
  for (int64_t i = 0; i < n; ++i) copy_box(dst + (size_t)i * dstride, dshape + 1, src + (size_t)i * sstride, sshape + 1, ndim - 1, elem);
}

static int fill_pad(uint8_t* buf, size_t count, const char* dtype, double v) {
  union { float f; int64_t i64; int32_t i32; int8_t i8; uint8_t u8; } x;
  size_t elem = dtype_size(dtype);
  if (!strcmp(dtype, "float32")) x.f = (float)v;
  else if (!strcmp(dtype, "int64")) x.i64 = (int64_t)v;
  else if (!strcmp(dtype, "int32")) x.i32 = (int32_t)v;
  else if (!strcmp(dtype, "int8")) x.i8 = (int8_t)v;
  else if (!strcmp(dtype, "uint8") || !strcmp(dtype, "bool")) x.u8 = (uint8_t)(v != 0 && !strcmp(dtype, "bool") ? 1 : v);
  else return -1;  /* float16 / bfloat16: not padded by the C runtime */
  for (size_t i = 0; i < count; ++i) memcpy(buf + i * elem, &x, elem);
  return 0;
}

int aotc_bucketed_output_shape(aotc_bucketed* b, const aotc_tensor* inputs, int num_inputs, int i, const char** name,
                               const char** dtype, int32_t* ndim, int64_t* shape) {
  int64_t need[AOTC_MAX_RANK];
  const bucket_io* spec[AOTC_MAX_IO];
  if (!b) { set_error("aotc_bucketed_output_shape: no model"); return -1; }
  if (i < 0 || i >= b->num_outputs) { set_error("output index %d out of range (%d)", i, b->num_outputs); return -1; }
  int v = choose_bucket(b, inputs, num_inputs, need, spec);
  if (v < 0) return -1;
  aotc_model* m = bucket_model(b, &b->buckets[v]);
  if (!m) return -1;
  const io_spec* o = &m->outputs[i];
  if (o->ndim != b->outputs[i].ndim || strcmp(o->name, b->outputs[i].name) != 0) {
    set_error("bucket %s's output %d is not the bundle's '%s'", b->buckets[v].name, i, b->outputs[i].name);
    return -1;
  }
  for (int k = 0; k < o->ndim; ++k) {
    int d = b->outputs[i].axis_dim[k];
    shape[k] = d >= 0 && need[d] >= 0 ? need[d] : o->shape[k];
  }
  if (name) *name = o->name;
  if (dtype) *dtype = o->dtype;
  if (ndim) *ndim = o->ndim;
  return 0;
}

int aotc_bucketed_run(aotc_bucketed* b, const aotc_tensor* inputs, int num_inputs, aotc_tensor* outputs, int num_outputs) {
  int64_t need[AOTC_MAX_RANK];
  const bucket_io* spec[AOTC_MAX_IO];
  if (!b) { set_error("aotc_bucketed_run: no model"); return -1; }
  int v = choose_bucket(b, inputs, num_inputs, need, spec);
  if (v < 0) return -1;
  bucket* bk = &b->buckets[v];
  aotc_model* m = bucket_model(b, bk);
  if (!m) return -1;
  if (num_outputs < 0 || num_outputs > m->num_outputs || (num_outputs > 0 && !outputs)) { set_error("bad output list"); return -1; }
  aotc_tensor padded[AOTC_MAX_IO], full[AOTC_MAX_IO];
  int64_t pshape[AOTC_MAX_IO][AOTC_MAX_RANK];
  const int64_t* oshape[AOTC_MAX_IO];
  void* scratch[2 * AOTC_MAX_IO];
  int nscratch = 0, rc = -1;
  for (int i = 0; i < num_inputs; ++i) {
    padded[i] = inputs[i];
    int same = 1;
    for (int k = 0; k < spec[i]->ndim; ++k) {
      int d = spec[i]->axis_dim[k];
      pshape[i][k] = d >= 0 ? bk->sizes[d] : inputs[i].shape[k];
      same &= pshape[i][k] == inputs[i].shape[k];
    }
    if (same) continue;
    if (!spec[i]->has_pad) {
      set_error("input '%s' is smaller than bucket %s, the smallest that holds it, and the bundle has no pad value for "
                "'%s', so it must match a bucket exactly; compile with --pad %s=VALUE to pad it", spec[i]->name, bk->name,
                spec[i]->name, spec[i]->name);
      goto done;
    }
    size_t elem = dtype_size(spec[i]->dtype), count = 1;
    for (int k = 0; k < spec[i]->ndim; ++k) count *= (size_t)pshape[i][k];
    if (count > AOTC_MAX_TENSOR_BYTES / elem) { set_error("input '%s' is too large", spec[i]->name); goto done; }
    uint8_t* buf = NULL;
    if (posix_memalign((void**)&buf, 64, count * elem + 64) != 0) { set_error("out of memory"); goto done; }
    scratch[nscratch++] = buf;
    if (fill_pad(buf, count, spec[i]->dtype, spec[i]->pad) != 0) {
      set_error("input '%s' (%s) cannot be padded by the C runtime; pad it to bucket %s yourself", spec[i]->name,
                spec[i]->dtype, bk->name);
      goto done;
    }
    if (count && inputs[i].data) copy_box(buf, pshape[i], inputs[i].data, inputs[i].shape, spec[i]->ndim, elem);
    padded[i].shape = pshape[i];
    padded[i].data = buf;
  }
  for (int i = 0; i < num_outputs; ++i) {
    int k = 0;
    while (k < m->num_outputs && !(outputs[i].name && !strcmp(outputs[i].name, m->outputs[k].name))) ++k;
    if (k == m->num_outputs) { set_error("unknown output '%s'", outputs[i].name ? outputs[i].name : "(null)"); goto done; }
    const io_spec* o = &m->outputs[k];
    int same = outputs[i].ndim == o->ndim && outputs[i].dtype && !strcmp(outputs[i].dtype, o->dtype) &&
               (o->ndim == 0 || outputs[i].shape) && (o->nbytes == 0 || outputs[i].data);
    for (int a = 0; same && a < o->ndim; ++a) {
      int d = b->outputs[k].axis_dim[a];
      same = outputs[i].shape[a] == (d >= 0 && need[d] >= 0 ? need[d] : o->shape[a]);
    }
    if (!same) {
      set_error("output '%s' needs a %s buffer of the shape aotc_bucketed_output_shape gives for these inputs", o->name, o->dtype);
      goto done;
    }
    full[i] = outputs[i];
    full[i].shape = o->shape;
    oshape[i] = outputs[i].shape;
    int sliced = 0;
    for (int a = 0; a < o->ndim; ++a) sliced |= o->shape[a] != outputs[i].shape[a];
    if (sliced) {
      if (posix_memalign(&full[i].data, 64, o->nbytes + 64) != 0) { set_error("out of memory"); goto done; }
      scratch[nscratch++] = full[i].data;
    }
  }
  if (aotc_run(m, padded, num_inputs, full, num_outputs) != 0) goto done;
  for (int i = 0; i < num_outputs; ++i)
    if (full[i].data != outputs[i].data)
      copy_box(outputs[i].data, oshape[i], full[i].data, full[i].shape, full[i].ndim, dtype_size(full[i].dtype));
  rc = 0;
done:
  for (int i = 0; i < nscratch; ++i) free(scratch[i]);
  return rc;
}
