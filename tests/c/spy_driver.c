/*
 * spy_driver - a stand-in for the real libcuda.so.1 and libnvidia-ml.so.1 (through
 * VGPU_REAL_LIBCUDA / VGPU_REAL_LIBNVML) that does nothing but write the name of every call it
 * receives, one per line, to the file SPY_LOG names. The shim's tests use it to see which
 * calls reach the driver at all: under a bad configuration, none may.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int called(const char *name) {
    const char *path = getenv("SPY_LOG");
    if (path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            (void)!write(fd, name, strlen(name));
            (void)!write(fd, "\n", 1);
            close(fd);
        }
    }
    return 0;
}

/* The shim checks that the real library exports these (and that they are not its own). */
int cuMemAlloc_v2(void *p, size_t n) { (void)p; (void)n; return called("cuMemAlloc_v2"); }
int nvmlDeviceGetMemoryInfo(void *d, void *m) { (void)d; (void)m; return called("nvmlDeviceGetMemoryInfo"); }

int cuMemMap(unsigned long long p, size_t n, size_t o, unsigned long long h, unsigned long long f) {
    (void)p; (void)n; (void)o; (void)h; (void)f;
    return called("cuMemMap");
}
int cuMemUnmap(unsigned long long p, size_t n) { (void)p; (void)n; return called("cuMemUnmap"); }
int nvmlDeviceGetMemoryInfo_v2(void *d, void *m) { (void)d; (void)m; return called("nvmlDeviceGetMemoryInfo_v2"); }
