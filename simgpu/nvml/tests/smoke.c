/*
 * Smoke test of simgpu's libnvidia-ml.so.1 through dlopen, as NVML clients load it.
 *
 * Build: gcc -std=c11 -Wall -Wextra -o nvml_smoke simgpu/nvml/tests/smoke.c   (glibc >= 2.34;
 *        add -ldl on older ones). No nvml.h needed: the few types used are declared below.
 * Run:   LD_LIBRARY_PATH=<dir with libnvidia-ml.so.1> SIMGPU_STATE=... ./nvml_smoke
 *
 * It checks the error protocol (uninitialised, NULL pointers, bad handles, struct versions,
 * size queries, reference-counted init) and prints what NVML sees, one fact per line:
 *
 *   driver=570.86.15 nvml=12.570.86.15 cuda=12080
 *   count=<SIMGPU_DEVICES>
 *   dev<i> name="NVIDIA H100 80GB HBM3 (simgpu)" uuid=GPU-... bus=00000000:<1A+i>:00.0 cc=9.0 minor=<i>
 *   dev<i> memory total=<SIMGPU_MEMORY bytes> used=<U> free=<total-U>
 *   dev<i> util gpu=<0..100> memory=0
 *   dev<i> proc pid=<pid> used=<bytes>            (one line per process with a context)
 *   dev<i> sample pid=<pid> sm=<0..100> ts=<us>    (one per process busy in the last second)
 *   ok
 *
 * A failed check prints `FAIL <what>: got <code>, want <code>` and the exit status is 1; a
 * library that cannot be loaded or initialised exits 2 after one line saying why.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int ret_t;
typedef void *dev_t_;
typedef struct { unsigned long long total, free, used; } mem_v1;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } mem_v2;
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;
typedef struct { unsigned int pid; unsigned long long ts; unsigned int sm, mem, enc, dec; } sample_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;

#define MEM_V2 ((unsigned int)(sizeof(mem_v2) | (2u << 24)))

static void *lib;
static int failures;

static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        printf("missing export %s\n", name);
        exit(2);
    }
    return p;
}

#define FN(name, ...) ret_t (*name)(__VA_ARGS__) = (ret_t(*)(__VA_ARGS__))sym(#name)

static void expect(const char *what, ret_t got, ret_t want) {
    if (got != want) {
        printf("FAIL %s: got %d, want %d\n", what, got, want);
        failures++;
    }
}

int main(void) {
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("cannot load libnvidia-ml.so.1: %s\n", dlerror());
        return 2;
    }
    FN(nvmlInit_v2, void);
    FN(nvmlInitWithFlags, unsigned int);
    FN(nvmlShutdown, void);
    const char *(*nvmlErrorString)(ret_t) = (const char *(*)(ret_t))sym("nvmlErrorString");
    FN(nvmlSystemGetDriverVersion, char *, unsigned int);
    FN(nvmlSystemGetNVMLVersion, char *, unsigned int);
    FN(nvmlSystemGetCudaDriverVersion_v2, int *);
    FN(nvmlDeviceGetCount_v2, unsigned int *);
    FN(nvmlDeviceGetHandleByIndex_v2, unsigned int, dev_t_ *);
    FN(nvmlDeviceGetHandleByUUID, const char *, dev_t_ *);
    FN(nvmlDeviceGetHandleByPciBusId_v2, const char *, dev_t_ *);
    FN(nvmlDeviceGetIndex, dev_t_, unsigned int *);
    FN(nvmlDeviceGetName, dev_t_, char *, unsigned int);
    FN(nvmlDeviceGetUUID, dev_t_, char *, unsigned int);
    FN(nvmlDeviceGetPciInfo_v3, dev_t_, pci_t *);
    FN(nvmlDeviceGetMinorNumber, dev_t_, unsigned int *);
    FN(nvmlDeviceGetCudaComputeCapability, dev_t_, int *, int *);
    FN(nvmlDeviceGetMemoryInfo, dev_t_, mem_v1 *);
    FN(nvmlDeviceGetMemoryInfo_v2, dev_t_, mem_v2 *);
    FN(nvmlDeviceGetUtilizationRates, dev_t_, util_t *);
    FN(nvmlDeviceGetProcessUtilization, dev_t_, sample_t *, unsigned int *, unsigned long long);
    FN(nvmlDeviceGetComputeRunningProcesses_v3, dev_t_, unsigned int *, proc_t *);
    FN(nvmlDeviceGetGraphicsRunningProcesses_v3, dev_t_, unsigned int *, proc_t *);

    unsigned int n = 0;
    char s[96], drv[96], ver[96];
    expect("count before init", nvmlDeviceGetCount_v2(&n), 1);
    expect("shutdown before init", nvmlShutdown(), 1);
    if (strcmp(nvmlErrorString(2), "Invalid Argument") != 0) {
        printf("FAIL nvmlErrorString(2) = %s\n", nvmlErrorString(2));
        failures++;
    }
    ret_t r = nvmlInitWithFlags(0);
    if (r != 0) {
        printf("nvmlInitWithFlags failed: %d %s\n", r, nvmlErrorString(r));
        return 2;
    }
    expect("second init", nvmlInit_v2(), 0);
    expect("first shutdown", nvmlShutdown(), 0);
    expect("count after init x2, shutdown x1", nvmlDeviceGetCount_v2(&n), 0);
    expect("count NULL", nvmlDeviceGetCount_v2(NULL), 2);

    int cuda = 0;
    expect("driver version", nvmlSystemGetDriverVersion(drv, sizeof drv), 0);
    expect("driver version, small buffer", nvmlSystemGetDriverVersion(s, 4), 7);
    expect("nvml version", nvmlSystemGetNVMLVersion(ver, sizeof ver), 0);
    expect("cuda version", nvmlSystemGetCudaDriverVersion_v2(&cuda), 0);
    printf("driver=%s nvml=%s cuda=%d\n", drv, ver, cuda);
    printf("count=%u\n", n);

    dev_t_ h = NULL, h2 = NULL;
    unsigned int idx = 0;
    expect("handle past the end", nvmlDeviceGetHandleByIndex_v2(n, &h), 2);
    expect("bogus handle", nvmlDeviceGetIndex((dev_t_)&n, &idx), 2);
    expect("NULL handle", nvmlDeviceGetIndex(NULL, &idx), 2);

    for (unsigned int i = 0; i < n; i++) {
        char name[96], uuid[96];
        pci_t pci;
        int major = 0, minor = 0;
        unsigned int minor_number = 99;
        expect("handle", nvmlDeviceGetHandleByIndex_v2(i, &h), 0);
        expect("index", nvmlDeviceGetIndex(h, &idx), 0);
        expect("index value", (ret_t)idx, (ret_t)i);
        expect("name", nvmlDeviceGetName(h, name, sizeof name), 0);
        expect("uuid", nvmlDeviceGetUUID(h, uuid, sizeof uuid), 0);
        expect("handle by uuid", nvmlDeviceGetHandleByUUID(uuid, &h2), 0);
        expect("handle by uuid is the same", h2 == h, 1);
        expect("pci", nvmlDeviceGetPciInfo_v3(h, &pci), 0);
        expect("handle by pci", nvmlDeviceGetHandleByPciBusId_v2(pci.busId, &h2), 0);
        expect("handle by pci is the same", h2 == h, 1);
        expect("cc", nvmlDeviceGetCudaComputeCapability(h, &major, &minor), 0);
        expect("minor", nvmlDeviceGetMinorNumber(h, &minor_number), 0);
        printf("dev%u name=\"%s\" uuid=%s bus=%s cc=%d.%d minor=%u\n", i, name, uuid, pci.busId, major, minor, minor_number);

        mem_v1 m;
        mem_v2 m2 = {.version = 1};
        expect("memory", nvmlDeviceGetMemoryInfo(h, &m), 0);
        expect("memory NULL", nvmlDeviceGetMemoryInfo(h, NULL), 2);
        expect("memory_v2 bad version", nvmlDeviceGetMemoryInfo_v2(h, &m2), 25);
        m2.version = MEM_V2;
        expect("memory_v2", nvmlDeviceGetMemoryInfo_v2(h, &m2), 0);
        expect("used + free == total", m.used + m.free == m.total, 1);
        expect("v1 == v2", m.total == m2.total && m2.reserved == 0 && m2.used + m2.free == m2.total, 1);
        printf("dev%u memory total=%llu used=%llu free=%llu\n", i, m.total, m.used, m.free);

        util_t u;
        expect("utilization", nvmlDeviceGetUtilizationRates(h, &u), 0);
        printf("dev%u util gpu=%u memory=%u\n", i, u.gpu, u.memory);

        unsigned int count = 0;
        r = nvmlDeviceGetComputeRunningProcesses_v3(h, &count, NULL);
        if (r != 0 && r != 7) expect("process count", r, 7);
        if (r == 7) {
            unsigned int cap = count + 4;
            proc_t *procs = calloc(cap, sizeof *procs);
            count = cap;
            expect("processes", nvmlDeviceGetComputeRunningProcesses_v3(h, &count, procs), 0);
            for (unsigned int k = 0; k < count && k < cap; k++) {
                expect("MIG ids", procs[k].gi == 0xFFFFFFFFu && procs[k].ci == 0xFFFFFFFFu, 1);
                printf("dev%u proc pid=%u used=%llu\n", i, procs[k].pid, procs[k].used);
            }
            free(procs);
        }
        count = 0;
        expect("graphics processes", nvmlDeviceGetGraphicsRunningProcesses_v3(h, &count, NULL), 0);

        count = 0;
        r = nvmlDeviceGetProcessUtilization(h, NULL, &count, 0);
        if (r != 6 && r != 7) expect("process utilization size", r, 7);
        if (r == 7) {
            unsigned int cap = count + 4;
            sample_t *samples = calloc(cap, sizeof *samples);
            count = cap;
            expect("process utilization", nvmlDeviceGetProcessUtilization(h, samples, &count, 0), 0);
            for (unsigned int k = 0; k < count && k < cap; k++)
                printf("dev%u sample pid=%u sm=%u ts=%llu\n", i, samples[k].pid, samples[k].sm, samples[k].ts);
            free(samples);
        }
    }

    expect("last shutdown", nvmlShutdown(), 0);
    expect("count after last shutdown", nvmlDeviceGetCount_v2(&n), 1);
    if (failures) return 1;
    printf("ok\n");
    return 0;
}
