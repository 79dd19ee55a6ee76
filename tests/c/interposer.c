/*
 * interposer.c - libinterposer.so, a second LD_PRELOAD library of the kind that shares a
 * process with libvgpu.so (a tracer, a profiler, another shim). It wraps `puts` and
 * `cuMemAlloc_v2` and finds the functions it wraps with dlsym(RTLD_NEXT, ...), the way every
 * interposer does. glibc answers RTLD_NEXT relative to the *caller's* object, so if libvgpu's
 * exported dlsym did not hand such calls to libc with the caller's return address intact, the
 * answer would be relative to libvgpu, and an interposer loaded after it would get its own
 * function back and recurse forever.
 *
 * Lines on stderr (one per event, `interposer: key=value ...`):
 *   at load (constructor): what RTLD_NEXT gives for puts and for cuMemAlloc_v2
 *   each wrapped cuMemAlloc_v2: its size and the result
 * A wrapper whose RTLD_NEXT answer is itself (or NULL) prints `interposer: RECURSION ...` and
 * exits 3 instead of looping.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "describe.h"

typedef int (*puts_fn)(const char *);
typedef int (*alloc_fn)(unsigned long long *, size_t);

static puts_fn next_puts;
static alloc_fn next_alloc;
static int puts_calls;

/* Whether `addr` lies in this library. */
static int is_ours(const void *addr) {
    Dl_info mine, theirs;
    if (!addr || !dladdr((const void *)&describe, &mine) || !dladdr(addr, &theirs)) return 0;
    return mine.dli_fbase == theirs.dli_fbase;
}

static void recursion(const char *what, const void *got) {
    char where[512];
    describe(got, where, sizeof where);
    fprintf(stderr, "interposer: RECURSION dlsym(RTLD_NEXT, %s) returned %s\n", what, where);
    fflush(stderr);
    _exit(3);
}

__attribute__((constructor)) static void interposer_init(void) {
    char p[512], a[512];
    void *np = dlsym(RTLD_NEXT, "puts");
    void *na = dlsym(RTLD_NEXT, "cuMemAlloc_v2");
    describe(np, p, sizeof p);
    describe(na, a, sizeof a);
    fprintf(stderr, "interposer: event=load next_puts=%s next_cuMemAlloc_v2=%s\n", p, a);
    if (!np || is_ours(np)) recursion("puts", np);
    if (is_ours(na)) recursion("cuMemAlloc_v2", na);
    next_puts = (puts_fn)np;
}

int puts(const char *s) {
    if (!next_puts) {
        void *np = dlsym(RTLD_NEXT, "puts");
        if (!np || is_ours(np)) recursion("puts", np);
        next_puts = (puts_fn)np;
    }
    puts_calls++;
    return next_puts(s);
}

int cuMemAlloc_v2(unsigned long long *dptr, size_t bytes) {
    if (!next_alloc) {
        void *na = dlsym(RTLD_NEXT, "cuMemAlloc_v2");
        if (!na || is_ours(na)) recursion("cuMemAlloc_v2", na);
        char where[512];
        describe(na, where, sizeof where);
        fprintf(stderr, "interposer: event=wrap next_cuMemAlloc_v2=%s\n", where);
        next_alloc = (alloc_fn)na;
    }
    int rc = next_alloc(dptr, bytes);
    fprintf(stderr, "interposer: event=cuMemAlloc_v2 bytes=%zu rc=%d\n", bytes, rc);
    return rc;
}

__attribute__((destructor)) static void interposer_fini(void) {
    fprintf(stderr, "interposer: event=unload puts_calls=%d\n", puts_calls);
}
