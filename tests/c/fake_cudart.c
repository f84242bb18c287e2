/* A recording stand-in for the few CUDA runtime functions a CUDA bundle's driver.c calls, so the generated
 * driver runs on a CPU: memory is host memory, a "kernel" is its index, and every launch is written to the
 * file named by FAKE_CUDART_LOG as one line: kernel name, grid, block, dynamic smem, the stream ("s=0x..."),
 * then each argument pointer as an offset into the one device allocation ("m+OFFSET") or "x" and its address
 * for anything else (a caller's buffer bound by the device-pointer entry point). tests/test_target_cuda.py compiles driver.c against this file and checks the log. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

static FILE* log_file;
static char* alloc_base;
static size_t alloc_size;
static const char* names[4096];
static int num_names;

static void open_log(void) {
  if (!log_file) log_file = fopen(getenv("FAKE_CUDART_LOG"), "w");
}

cudaError_t cudaSetDevice(int d) { (void)d; return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int f) { (void)f; *s = (cudaStream_t)0x5; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { (void)s; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; if (log_file) fflush(log_file); return cudaSuccess; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t e) { (void)e; return "fake error"; }
const char* cudaGetErrorName(cudaError_t e) { (void)e; return "cudaErrorFake"; }
cudaError_t cudaLibraryLoadData(cudaLibrary_t* lib, const void* code, enum cudaJitOption* o, void** ov, unsigned int no,
                                enum cudaLibraryOption* l, void** lv, unsigned int nl) {
  (void)o; (void)ov; (void)no; (void)l; (void)lv; (void)nl;
  open_log();
  /* The embedded image must be a fatbin: its header magic is 0xBA55ED50. */
  fprintf(log_file, "library magic=%08x\n", *(const uint32_t*)code);
  *lib = (cudaLibrary_t)0x1;
  return cudaSuccess;
}
cudaError_t cudaLibraryUnload(cudaLibrary_t lib) { (void)lib; return cudaSuccess; }
cudaError_t cudaLibraryGetKernel(cudaKernel_t* k, cudaLibrary_t lib, const char* name) {
  (void)lib;
  names[num_names] = name;
  *k = (cudaKernel_t)(uintptr_t)(num_names++ + 1);
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* f, enum cudaFuncAttribute a, int v) { (void)f; (void)a; (void)v; return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t n) {
  alloc_base = calloc(1, n);
  alloc_size = n;
  *p = alloc_base;
  open_log();
  fprintf(log_file, "malloc %zu\n", n);
  return alloc_base ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind k, cudaStream_t s) {
  memcpy(dst, src, n);
  fprintf(log_file, "memcpy kind=%d bytes=%zu s=%p\n", (int)k, n, (void*)s);
  return cudaSuccess;
}
cudaError_t cudaLaunchKernel(const void* f, dim3 g, dim3 b, void** args, size_t smem, cudaStream_t s) {
  int k = (int)(uintptr_t)f - 1;
  fprintf(log_file, "launch %s %u %u %u %u %u %u %zu s=%p", names[k], g.x, g.y, g.z, b.x, b.y, b.z, smem, (void*)s);
  for (int i = 0; args[i]; ++i) {  /* the driver ends the list with NULL */
    char* p = *(char**)args[i];
    if (p >= alloc_base && p < alloc_base + alloc_size) fprintf(log_file, " m+%zu", (size_t)(p - alloc_base));
    else fprintf(log_file, " x%p", (void*)p);
  }
  fprintf(log_file, "\n");
  return cudaSuccess;
}
