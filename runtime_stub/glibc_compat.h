/* Bind the glibc functions whose default symbol version is newer than the architecture's first glibc ABI
 * (dlopen and the pthread functions moved into libc.so.6 in glibc 2.34) to that first version, so a library
 * linked on a new system also loads on an old one (Ubuntu 20.04, RHEL 8, JetPack 5): glibc keeps the old
 * versions, and the libraries that defined them before 2.34 (libdl.so.2, libpthread.so.0) are linked in
 * too. Included by aotc_runtime.c and pasted into every model.so's driver. */
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
#endif
#endif
#endif
