/* Bind the glibc functions whose default symbol version is newer than the architecture's first glibc ABI
 * (dlopen and the pthread functions moved into libc.so.6 in glibc 2.34) to that first version, so a library
 * linked on a new system also loads on an old one (Ubuntu 20.04, RHEL 8, JetPack 5): glibc keeps the old
 * versions, and the libraries that defined them before 2.34 (libdl.so.2, libpthread.so.0) are linked in
 * too. Included by aotc_runtime.c and the arm64 runner, and pasted into every model.so's driver. */
#ifndef AOTC_GLIBC_COMPAT_H
#define AOTC_GLIBC_COMPAT_H
#include <features.h> /* defines __GLIBC__ on glibc (musl's has none) */
#if defined(__GLIBC__)
#if defined(__x86_64__)
#define AOTC_GLIBC_FIRST "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define AOTC_GLIBC_FIRST "GLIBC_2.17"
#endif
#ifdef AOTC_GLIBC_FIRST
#define AOTC_GLIBC_PIN(sym) __asm__(".symver " #sym "," #sym "@" AOTC_GLIBC_FIRST)
AOTC_GLIBC_PIN(dlopen);
AOTC_GLIBC_PIN(dlsym);
AOTC_GLIBC_PIN(dlerror);
AOTC_GLIBC_PIN(dlclose);
AOTC_GLIBC_PIN(pthread_create);
AOTC_GLIBC_PIN(pthread_detach);
AOTC_GLIBC_PIN(pthread_join);
AOTC_GLIBC_PIN(pthread_once);
AOTC_GLIBC_PIN(pthread_key_create);
AOTC_GLIBC_PIN(pthread_key_delete);
AOTC_GLIBC_PIN(pthread_getspecific);
AOTC_GLIBC_PIN(pthread_setspecific);
AOTC_GLIBC_PIN(pthread_mutex_trylock);
AOTC_GLIBC_PIN(pthread_attr_setstacksize);
#ifdef AOTC_GLIBC_COMPAT_MAIN
/* An executable (aotc_runner): the start code linked into it (crt1.o) calls __libc_start_main, whose default
 * version is 2.34. This definition takes that call and hands it to the first version, which every glibc has.
 * Since 2.34 the start code passes no init/fini functions and libc runs the executable's constructors itself;
 * an older libc runs only what it is given, so such an executable must not need constructors of its own
 * (the runner has none; its libraries' constructors are run by the dynamic loader either way). */
typedef int (*aotc_main_fn)(int, char**, char**);
int __libc_start_main_first(aotc_main_fn main, int argc, char** argv, void (*init)(void), void (*fini)(void),
                            void (*rtld_fini)(void), void* stack_end);
__asm__(".symver __libc_start_main_first,__libc_start_main@" AOTC_GLIBC_FIRST);
/* Hidden: exported, it would be the definition the versioned reference above binds to (a loop). */
__attribute__((visibility("hidden")))
int __libc_start_main(aotc_main_fn main, int argc, char** argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void* stack_end) {
  return __libc_start_main_first(main, argc, argv, init, fini, rtld_fini, stack_end);
}
#endif
#endif
#endif
#endif
