/* What the C test helpers share: naming the library and symbol a code address belongs to. */
#ifndef VGPU_TESTS_DESCRIBE_H
#define VGPU_TESTS_DESCRIBE_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* "<file basename>!<symbol>" of a code address, "NULL", or "?!?" when dladdr cannot say. */
static inline void describe(const void *addr, char *buf, size_t len) {
    Dl_info info;
    if (!addr) {
        snprintf(buf, len, "NULL");
        return;
    }
    if (!dladdr(addr, &info) || !info.dli_fname) {
        snprintf(buf, len, "?!?");
        return;
    }
    const char *base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    snprintf(buf, len, "%s!%s", base, info.dli_sname ? info.dli_sname : "?");
}

#endif
