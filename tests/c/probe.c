/*
 * probe - a small driver-API and NVML client for the shim's end-to-end tests. It is not linked
 * with libcuda: every function is found with dlsym, on a handle or on RTLD_DEFAULT, which is
 * what the tests want to exercise. It runs the operations given on its command line in order,
 * printing one `op=<name> who=<parent|child> ...` line per operation, and never stops at a
 * failure: an error code is data.
 *
 * usage: probe [--lookup handle|default|global] OP...
 *
 *   --lookup handle   dlopen("libcuda.so.1", RTLD_LOCAL), then dlsym(handle, name) (default)
 *   --lookup default  dlopen("libcuda.so.1", RTLD_GLOBAL), then dlsym(RTLD_DEFAULT, name)
 *   --lookup global   no dlopen at all: dlsym(RTLD_DEFAULT, name), which only a preloaded
 *                     library can answer (for running without any driver)
 *
 * OPs:
 *   init                cuInit(0)
 *   ctx                 cuDevicePrimaryCtxRetain(0) + cuCtxSetCurrent
 *   release             cuDevicePrimaryCtxRelease_v2(0)
 *   info                cuMemGetInfo_v2: op=info rc= free= total=
 *   total               cuDeviceTotalMem_v2(0): op=total rc= bytes=
 *   alloc=SIZE          cuMemAlloc_v2 (kept): op=alloc bytes= rc= free= total=
 *   async=SIZE          cuMemAllocAsync on the NULL stream + cuStreamSynchronize (kept)
 *   free                frees the newest live block (cuMemFree_v2 or cuMemFreeAsync + sync)
 *   freeall             frees every live block, newest first
 *   keep_pool           sets the default pool's release threshold to UINT64_MAX
 *   trim_pool           cuMemPoolTrimTo(default pool, 0)
 *   vmm=SIZE            cuMemCreate + cuMemAddressReserve + cuMemMap, then cuMemRelease at once
 *                       (legal: the mapping keeps the memory): op=vmm rc= release_rc= free= total=
 *   vmm_unmap           cuMemUnmap + cuMemAddressFree of the newest vmm= mapping
 *   vmm_retain          cuMemRetainAllocationHandle at the middle of the newest vmm= mapping
 *                       (the handle is kept): op=vmm_retain rc= same= free= total= (same=1:
 *                       the handle the mapping was made with)
 *   vmm_release         cuMemRelease of the newest vmm_retain handle: op=vmm_release rc= free=
 *   graph=SIZE          captures cuMemAllocAsync(SIZE) + cuMemFreeAsync on a created stream
 *                       into a graph, instantiates and launches it (the executable graph is
 *                       kept): op=graph rc=<first failure> step= reserved= used= free= total=
 *                       (reserved/used: the device's graph memory attributes)
 *   gnode=SIZE          the same with cuGraphAddMemAllocNode + cuGraphAddMemFreeNode
 *   graph_trim          cuGraphExecDestroy of every kept executable graph, then
 *                       cuDeviceGraphMemTrim(0): op=graph_trim rc= reserved= used= free= total=
 *   limit=KIND:SIZE     cuCtxSetLimit (KIND: stack, heap or fifo) then cuCtxGetLimit:
 *                       op=limit kind= bytes= rc= value= free= total=
 *   alloc32=SIZE        the legacy 32-bit cuMemAlloc (by dlsym of the plain name), kept;
 *                       `free` frees it with the legacy cuMemFree: op=alloc32 bytes= rc= free= total=
 *   info32              the legacy cuMemGetInfo (32-bit sizes): op=info32 rc= free= total=
 *   module=SIZE         cuModuleLoadData of a PTX module with a SIZE-byte .global array (kept):
 *                       op=module bytes= rc= free= total=
 *   module_unload       cuModuleUnload of the newest kept module: op=module_unload rc= free= total=
 *   link                the driver's JIT linker: two PTX inputs (1 MiB global each), a bad one, a
 *                       fatbinary, a missing file, complete, load the image (kept), launch, destroy
 *                       twice: op=link step= rc= (see op_link)
 *   launch=N            N launches of the newest kept module's probe_spin_2000us (2 ms of GPU each
 *                       on simgpu), then cuCtxSynchronize: op=launch n= rc= ms=
 *   deep=SIZE           loads a kernel whose frame is SIZE bytes of .local memory per thread and
 *                       launches it once (the driver grows the context's stack for it), then
 *                       synchronises: op=deep bytes= rc= stack= free= total= (stack: cuCtxGetLimit)
 *   green=N             a green context of N SMs: cuDeviceGetDevResource, cuDevSmResourceSplitByCount
 *                       (one group), cuDevResourceGenerateDesc, cuGreenCtxCreate, cuCtxFromGreenCtx,
 *                       made current: op=green rc= step= sms= free= total=
 *   green_destroy       cuGreenCtxDestroy of the newest green context: op=green_destroy rc=
 *   library=SIZE        the same module through cuLibraryLoadData, then cuLibraryGetKernel and
 *                       cuKernelGetFunction of its kernel (kept): op=library bytes= rc= kernel_rc= free= total=
 *   library_unload      cuLibraryUnload of the newest kept library: op=library_unload rc= free= total=
 *   nvml[=INDEX]        NVML (dlopen + dlsym(handle)) memory info v1 and v2 of device INDEX
 *   procs               NVML's process views of device 0 (dlopen + dlsym(handle)), one line each:
 *                       op=procs api=<v1|v2|v3|graphics> rc= n= list=PID:BYTES,... ;
 *                       op=procs api=util rc= n= list=PID:SMUTIL,... ; op=procs api=rates rc= gpu= mem=;
 *                       op=procs api=self pid=<getpid()>
 *   resolve             op=resolved fn=<name> at=<file>!<symbol> for the main entry points
 *   gpa_cmp=FILE        for each name in FILE (one per line: an exported driver function,
 *                       e.g. cuMemAlloc_v2 or cuLaunchKernel_ptsz), cuGetProcAddress_v2 of its
 *                       base name (no _vN, _ptsz or _ptds; the per-thread flag for the latter
 *                       two) at the driver's own version, beside dlsym of the name:
 *                       op=gpa_cmp name= base= rc= status= gpa=<file>!<symbol> exact=<the
 *                       answer is exactly an exported symbol's address> dlsym=<file>!<symbol>
 *                       same=<the two addresses are equal>
 *   gpa=NAME[@VERSION]  cuGetProcAddress_v2(NAME, VERSION (default 12000), flags 0):
 *                       op=gpa sym= version= rc= status= pfn=<file>!<symbol>|NULL
 *   hooked              calls hooked functions with harmless arguments, one line per call
 *   unguarded           cuMemMap, cuMemUnmap and NVML's memory queries with null arguments
 *   puts                puts("op=puts ...") (for the interposer tests)
 *   wait                waits for a line (or EOF) on stdin
 *   sleep=MS            sleeps
 *   fork                the child runs the operations up to the next `exit=`; the parent
 *                       skips them, waits for the child and prints op=wait status=
 *   exit=N              exits with status N
 *
 * SIZE accepts plain bytes or a k/m/g suffix (powers of 1024). Exit status: 0, or what exit=N
 * says, or 2 for bad arguments.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "describe.h"

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUmemoryPool;
typedef unsigned long long CUdeviceptr;

typedef struct {
    size_t Width, Height;
    int Format;
    unsigned NumChannels;
} CUDA_ARRAY_DESCRIPTOR;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

#define NVML_MEMORY_V2 ((unsigned)sizeof(nvmlMemory_v2_t) | (2u << 24))
#define CU_MEMPOOL_ATTR_RELEASE_THRESHOLD 4
#define CU_AD_FORMAT_FLOAT 0x20
#define NOT_FOUND 500 /* CUDA_ERROR_NOT_FOUND: what a missing entry "returns" */

static struct {
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
    CUresult (*cuCtxSetCurrent)(CUcontext);
    CUresult (*cuCtxCreate_v2)(CUcontext *, unsigned, CUdevice);
    CUresult (*cuMemGetInfo_v2)(size_t *, size_t *);
    CUresult (*cuDeviceTotalMem_v2)(size_t *, CUdevice);
    CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
    CUresult (*cuMemAllocManaged)(CUdeviceptr *, size_t, unsigned);
    CUresult (*cuMemAllocPitch_v2)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*cuMemFree_v2)(CUdeviceptr);
    CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
    CUresult (*cuStreamSynchronize)(CUstream);
    CUresult (*cuDeviceGetDefaultMemPool)(CUmemoryPool *, CUdevice);
    CUresult (*cuMemPoolSetAttribute)(CUmemoryPool, int, void *);
    CUresult (*cuMemPoolTrimTo)(CUmemoryPool, size_t);
    CUresult (*cuArrayCreate_v2)(void **, const CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*cuGetProcAddress_v2)(const char *, void **, int, unsigned long long, int *);
    CUresult (*cuLaunchKernel)(void);
} D;

/* Name and slot of every entry, in the order `resolve` prints them. */
#define ENTRY(name) {#name, (void **)&D.name}
static const struct {
    const char *name;
    void **slot;
} ENTRIES[] = {
    ENTRY(cuInit), ENTRY(cuDeviceGet), ENTRY(cuDevicePrimaryCtxRetain), ENTRY(cuDevicePrimaryCtxRelease_v2),
    ENTRY(cuCtxSetCurrent), ENTRY(cuCtxCreate_v2), ENTRY(cuMemGetInfo_v2), ENTRY(cuDeviceTotalMem_v2),
    ENTRY(cuMemAlloc_v2), ENTRY(cuMemAllocManaged), ENTRY(cuMemAllocPitch_v2), ENTRY(cuMemFree_v2),
    ENTRY(cuMemAllocAsync), ENTRY(cuMemFreeAsync), ENTRY(cuStreamSynchronize), ENTRY(cuDeviceGetDefaultMemPool),
    ENTRY(cuMemPoolSetAttribute), ENTRY(cuMemPoolTrimTo), ENTRY(cuArrayCreate_v2), ENTRY(cuGetProcAddress_v2),
    ENTRY(cuLaunchKernel),
};
#undef ENTRY
#define N_ENTRIES (sizeof ENTRIES / sizeof ENTRIES[0])

static const char *who = "parent";

/* Where load() looked the entries up, for the ops that look up more. */
static void *lookup_handle = RTLD_DEFAULT;

/* Virtual-memory mappings made by vmm=, newest last. */
struct mapping {
    CUdeviceptr ptr;
    size_t bytes;
};
static struct mapping mappings[16];
static unsigned long long mapping_handles[16];
static int nmappings;
/* Handles taken by vmm_retain, newest last. */
static unsigned long long retained[16];
static int nretained;

struct block {
    CUdeviceptr ptr;
    size_t bytes;
    int async; /* 0: cuMemAlloc_v2, 1: cuMemAllocAsync, 2: the legacy 32-bit cuMemAlloc */
};
static struct block blocks[256];
static int nblocks;

static void load(const char *lookup) {
    void *h = RTLD_DEFAULT;
    if (strcmp(lookup, "handle") == 0 || strcmp(lookup, "default") == 0) {
        int global = strcmp(lookup, "default") == 0;
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
        if (!lib) {
            printf("op=load who=%s ok=0\n", who);
            fprintf(stderr, "probe: dlopen(libcuda.so.1): %s\n", dlerror());
        } else if (!global) {
            h = lib;
        }
    }
    lookup_handle = h;
    for (size_t i = 0; i < N_ENTRIES; i++) *ENTRIES[i].slot = dlsym(h, ENTRIES[i].name);
}

static int parse_size(const char *s, size_t *out) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) return -1;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end) return -1;
    *out = (size_t)v;
    return 0;
}

/* cuMemGetInfo_v2 as " free=<n> total=<n>" (or -1 and meminfo_rc when it fails). */
static void meminfo_suffix(char *buf, size_t len) {
    size_t f = 0, t = 0;
    CUresult rc = D.cuMemGetInfo_v2 ? D.cuMemGetInfo_v2(&f, &t) : NOT_FOUND;
    if (rc == 0)
        snprintf(buf, len, "free=%zu total=%zu", f, t);
    else
        snprintf(buf, len, "free=-1 total=-1 meminfo_rc=%d", rc);
}

#define CALL(fn, ...) (D.fn ? D.fn(__VA_ARGS__) : NOT_FOUND)

static CUmemoryPool default_pool(void) {
    CUmemoryPool pool = NULL;
    if (CALL(cuDeviceGetDefaultMemPool, &pool, 0) != 0) return NULL;
    return pool;
}

static void op_alloc(const char *arg, int async) {
    size_t size;
    if (parse_size(arg, &size) != 0 || nblocks == (int)(sizeof blocks / sizeof blocks[0])) {
        fprintf(stderr, "probe: bad size %s (or too many blocks)\n", arg);
        exit(2);
    }
    CUdeviceptr p = 0;
    CUresult rc;
    if (async) {
        rc = CALL(cuMemAllocAsync, &p, size, NULL);
        if (rc == 0) rc = CALL(cuStreamSynchronize, NULL);
    } else {
        rc = CALL(cuMemAlloc_v2, &p, size);
    }
    if (rc == 0) blocks[nblocks++] = (struct block){p, size, async};
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=%s who=%s bytes=%zu rc=%d %s\n", async ? "async" : "alloc", who, size, rc, mi);
}

static void op_free(void) {
    if (nblocks == 0) {
        printf("op=free who=%s bytes=0 rc=-1\n", who);
        return;
    }
    struct block b = blocks[--nblocks];
    CUresult rc;
    if (b.async) {
        rc = CALL(cuMemFreeAsync, b.ptr, NULL);
        if (rc == 0) rc = CALL(cuStreamSynchronize, NULL);
    } else if (b.async == 2) {
        CUresult (*free32)(unsigned) = dlsym(lookup_handle, "cuMemFree");
        rc = free32 ? free32((unsigned)b.ptr) : NOT_FOUND;
    } else {
        rc = CALL(cuMemFree_v2, b.ptr);
    }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=free who=%s bytes=%zu rc=%d %s\n", who, b.bytes, rc, mi);
}

/* alloc32=SIZE: the legacy cuMemAlloc (32-bit size and pointer), kept; info32: the legacy
 * cuMemGetInfo (32-bit sizes). */
static void op_alloc32(const char *arg) {
    CUresult (*alloc32)(unsigned *, unsigned) = dlsym(lookup_handle, "cuMemAlloc");
    size_t size;
    if (parse_size(arg, &size) != 0 || size > 0xffffffffu || nblocks == (int)(sizeof blocks / sizeof blocks[0])) {
        fprintf(stderr, "probe: bad size %s (or too many blocks)\n", arg);
        exit(2);
    }
    unsigned p = 0;
    CUresult rc = alloc32 ? alloc32(&p, (unsigned)size) : NOT_FOUND;
    if (rc == 0) blocks[nblocks++] = (struct block){p, size, 2};
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=alloc32 who=%s bytes=%zu rc=%d %s\n", who, size, rc, mi);
}

/* Modules loaded by module=, newest last. */
static void *modules[16];
static int nmodules;

/* Libraries loaded by library=, newest last. */
static void *libraries[16];
static int nlibraries;

/* A PTX module with a SIZE-byte .global array and one kernel, probe_noop. */
static size_t module_ptx(const char *arg, char *ptx, size_t len, int n) {
    size_t size;
    if (parse_size(arg, &size) != 0 || n == 16) {
        fprintf(stderr, "probe: bad size %s (or too many modules)\n", arg);
        exit(2);
    }
    snprintf(ptx, len,
             ".version 7.0\n.target sm_70\n.address_size 64\n"
             ".visible .global .align 8 .b8 probe_buffer_%d[%zu];\n"
             ".visible .entry probe_noop()\n{\n\tret;\n}\n"
             ".visible .entry probe_spin_2000us()\n{\n\tret;\n}\n",
             n, size);
    return size;
}

static void op_module(const char *arg) {
    CUresult (*load)(void **, const void *) = dlsym(lookup_handle, "cuModuleLoadData");
    char ptx[512];
    size_t size = module_ptx(arg, ptx, sizeof ptx, nmodules);
    void *m = NULL;
    CUresult rc = load ? load(&m, ptx) : NOT_FOUND;
    if (rc == 0) modules[nmodules++] = m;
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=module who=%s bytes=%zu rc=%d %s\n", who, size, rc, mi);
}

static double now_s(void);

/* launch=N: N launches of the last module's probe_spin_2000us (2 ms each on simgpu) on the null
 * stream, then a context synchronisation; reports how long they took. */
static void op_launch(const char *arg) {
    CUresult (*get)(void **, void *, const char *) = dlsym(lookup_handle, "cuModuleGetFunction");
    CUresult (*launch)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **,
                       void **) = dlsym(lookup_handle, "cuLaunchKernel");
    CUresult (*sync)(void) = dlsym(lookup_handle, "cuCtxSynchronize");
    long n = strtol(arg, NULL, 10);
    void *fn = NULL;
    CUresult rc = nmodules == 0 ? -1 : get && launch && sync ? get(&fn, modules[nmodules - 1], "probe_spin_2000us") : NOT_FOUND;
    double t0 = now_s();
    for (long i = 0; i < n && rc == 0; i++) rc = launch(fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
    if (rc == 0) rc = sync();
    printf("op=launch who=%s n=%ld rc=%d ms=%.1f\n", who, n, rc, (now_s() - t0) * 1e3);
}

/* link: the driver's JIT linker, step by step (one line each):
 *   op=link step=create|add_a|add_b|add_bad|add_fatbin|add_missing|complete|load|kernel_a|kernel_b|launch|destroy|destroy_again rc=
 * complete also prints the image's size and the info log; add_bad the error log. Two PTX
 * inputs, each with a 1 MiB global, are linked into one image and loaded. */
static void op_link(void) {
    CUresult (*create)(unsigned, int *, void **, void **) = dlsym(lookup_handle, "cuLinkCreate_v2");
    CUresult (*add)(void *, int, void *, size_t, const char *, unsigned, int *, void **) = dlsym(lookup_handle, "cuLinkAddData_v2");
    CUresult (*add_file)(void *, int, const char *, unsigned, int *, void **) = dlsym(lookup_handle, "cuLinkAddFile_v2");
    CUresult (*complete)(void *, void **, size_t *) = dlsym(lookup_handle, "cuLinkComplete");
    CUresult (*destroy)(void *) = dlsym(lookup_handle, "cuLinkDestroy");
    CUresult (*load)(void **, const void *) = dlsym(lookup_handle, "cuModuleLoadData");
    CUresult (*get)(void **, void *, const char *) = dlsym(lookup_handle, "cuModuleGetFunction");
    CUresult (*launch)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **,
                       void **) = dlsym(lookup_handle, "cuLaunchKernel");
    CUresult (*sync)(void) = dlsym(lookup_handle, "cuCtxSynchronize");
    if (!create || !add || !add_file || !complete || !destroy || !load || !get || !launch || !sync) {
        printf("op=link who=%s step=resolve rc=%d\n", who, NOT_FOUND);
        return;
    }
    static char info[256], error[256];
    int opts[] = {3, 4, 5, 6}; /* CU_JIT_INFO_LOG_BUFFER(_SIZE_BYTES), CU_JIT_ERROR_LOG_BUFFER(_SIZE_BYTES) */
    void *vals[] = {info, (void *)(uintptr_t)sizeof info, error, (void *)(uintptr_t)sizeof error};
    void *state = NULL;
    CUresult rc = create(4, opts, vals, &state);
    printf("op=link who=%s step=create rc=%d\n", who, rc);
    if (rc) return;
    const char *a = ".version 7.0\n.target sm_70\n.address_size 64\n.visible .global .align 8 .b8 link_a_buf[1048576];\n"
                    ".visible .entry link_a_100us()\n{\n\tret;\n}\n";
    const char *b = ".version 7.0\n.target sm_70\n.address_size 64\n.visible .global .align 8 .b8 link_b_buf[1048576];\n"
                    ".visible .entry link_b()\n{\n\tret;\n}\n";
    printf("op=link who=%s step=add_a rc=%d\n", who, add(state, 1, (void *)a, strlen(a) + 1, "a.ptx", 0, NULL, NULL));
    printf("op=link who=%s step=add_b rc=%d\n", who, add(state, 1, (void *)b, strlen(b), "b.ptx", 0, NULL, NULL));
    rc = add(state, 1, (void *)"not ptx", 8, "bad.ptx", 0, NULL, NULL);
    for (char *c = error; *c; c++) if (*c == ' ') *c = '_';
    printf("op=link who=%s step=add_bad rc=%d error_log=%s error_size=%zu\n", who, rc, error, (size_t)(uintptr_t)vals[3]);
    printf("op=link who=%s step=add_fatbin rc=%d\n", who, add(state, 2, (void *)b, strlen(b), "x.fatbin", 0, NULL, NULL));
    printf("op=link who=%s step=add_missing rc=%d\n", who, add_file(state, 1, "/nonexistent/x.ptx", 0, NULL, NULL));
    void *image = NULL;
    size_t size = 0;
    rc = complete(state, &image, &size);
    for (char *c = info; *c; c++) if (*c == ' ') *c = '_';
    printf("op=link who=%s step=complete rc=%d size=%zu info_log=%s\n", who, rc, size, info);
    void *m = NULL, *fa = NULL, *fb = NULL;
    char mi[128];
    rc = rc ? rc : load(&m, image);
    meminfo_suffix(mi, sizeof mi);
    printf("op=link who=%s step=load rc=%d %s\n", who, rc, mi);
    printf("op=link who=%s step=kernel_a rc=%d\n", who, m ? get(&fa, m, "link_a_100us") : -1);
    printf("op=link who=%s step=kernel_b rc=%d\n", who, m ? get(&fb, m, "link_b") : -1);
    rc = fa ? launch(fa, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL) : -1;
    if (!rc) rc = sync();
    printf("op=link who=%s step=launch rc=%d\n", who, rc);
    printf("op=link who=%s step=destroy rc=%d\n", who, destroy(state));
    printf("op=link who=%s step=destroy_again rc=%d\n", who, destroy(state));
    if (m) modules[nmodules++] = m;
}

static void op_library(const char *arg) {
    CUresult (*load)(void **, const void *, void *, void **, unsigned, void *, void **, unsigned) =
        dlsym(lookup_handle, "cuLibraryLoadData");
    CUresult (*get_kernel)(void **, void *, const char *) = dlsym(lookup_handle, "cuLibraryGetKernel");
    CUresult (*get_function)(void **, void *) = dlsym(lookup_handle, "cuKernelGetFunction");
    char ptx[512];
    size_t size = module_ptx(arg, ptx, sizeof ptx, nlibraries);
    void *lib = NULL, *kernel = NULL, *fn = NULL;
    CUresult rc = load ? load(&lib, ptx, NULL, NULL, 0, NULL, NULL, 0) : NOT_FOUND;
    CUresult kernel_rc = -1;
    if (rc == 0) {
        libraries[nlibraries++] = lib;
        kernel_rc = get_kernel && get_function ? get_kernel(&kernel, lib, "probe_noop") : NOT_FOUND;
        if (kernel_rc == 0) kernel_rc = get_function(&fn, kernel);
    }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=library who=%s bytes=%zu rc=%d kernel_rc=%d %s\n", who, size, rc, kernel_rc, mi);
}

static void op_library_unload(void) {
    CUresult (*unload)(void *) = dlsym(lookup_handle, "cuLibraryUnload");
    CUresult rc = nlibraries == 0 ? -1 : unload ? unload(libraries[--nlibraries]) : NOT_FOUND;
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=library_unload who=%s rc=%d %s\n", who, rc, mi);
}

static void op_deep(const char *arg) {
    CUresult (*load)(void **, const void *) = dlsym(lookup_handle, "cuModuleLoadData");
    CUresult (*get_function)(void **, void *, const char *) = dlsym(lookup_handle, "cuModuleGetFunction");
    CUresult (*launch)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **) =
        dlsym(lookup_handle, "cuLaunchKernel");
    CUresult (*get_limit)(size_t *, int) = dlsym(lookup_handle, "cuCtxGetLimit");
    size_t size;
    if (parse_size(arg, &size) != 0) {
        fprintf(stderr, "probe: bad size %s\n", arg);
        exit(2);
    }
    char ptx[512];
    snprintf(ptx, sizeof ptx,
             ".version 7.0\n.target sm_70\n.address_size 64\n"
             ".visible .entry probe_deep()\n{\n\t.local .align 8 .b8 __local_depot0[%zu];\n\tret;\n}\n",
             size);
    void *m = NULL, *f = NULL;
    CUresult rc = load && get_function && launch ? load(&m, ptx) : NOT_FOUND;
    if (rc == 0) rc = get_function(&f, m, "probe_deep");
    if (rc == 0) rc = launch(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
    if (rc == 0) rc = CALL(cuStreamSynchronize, NULL);
    size_t stack = 0;
    if (get_limit) get_limit(&stack, 0);
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=deep who=%s bytes=%zu rc=%d stack=%zu %s\n", who, size, rc, stack, mi);
}

/* CUdevResource: a tagged union, 144 bytes; the SM count leads the union. */
typedef struct {
    int type;
    unsigned char internal[92];
    unsigned sm_count;
    unsigned char rest[44];
} dev_resource;

static void *greens[8];
static int ngreens;

static void op_green(const char *arg) {
    CUresult (*get_resource)(CUdevice, dev_resource *, int) = dlsym(lookup_handle, "cuDeviceGetDevResource");
    CUresult (*split)(dev_resource *, unsigned *, const dev_resource *, dev_resource *, unsigned, unsigned) =
        dlsym(lookup_handle, "cuDevSmResourceSplitByCount");
    CUresult (*make_desc)(void **, dev_resource *, unsigned) = dlsym(lookup_handle, "cuDevResourceGenerateDesc");
    CUresult (*create)(void **, void *, CUdevice, unsigned) = dlsym(lookup_handle, "cuGreenCtxCreate");
    CUresult (*to_ctx)(CUcontext *, void *) = dlsym(lookup_handle, "cuCtxFromGreenCtx");
    unsigned want = (unsigned)atoi(arg);
    dev_resource all, group, rest;
    memset(&all, 0, sizeof all);
    void *desc = NULL, *green = NULL;
    CUcontext c = NULL;
    unsigned groups = 1;
    const char *step = "lookup";
    CUresult rc = get_resource && split && make_desc && create && to_ctx && ngreens < 8 ? 0 : NOT_FOUND;
    if (rc == 0) { step = "resource"; rc = get_resource(0, &all, 1); }
    if (rc == 0) { step = "split"; rc = split(&group, &groups, &all, &rest, 0, want); }
    if (rc == 0) { step = "desc"; rc = make_desc(&desc, &group, 1); }
    if (rc == 0) { step = "create"; rc = create(&green, desc, 0, 1); }
    if (rc == 0) { greens[ngreens++] = green; step = "context"; rc = to_ctx(&c, green); }
    if (rc == 0) { step = "current"; rc = CALL(cuCtxSetCurrent, c); }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=green who=%s rc=%d step=%s sms=%u %s\n", who, rc, rc ? step : "done", rc ? 0 : group.sm_count, mi);
}

static void op_green_destroy(void) {
    CUresult (*destroy)(void *) = dlsym(lookup_handle, "cuGreenCtxDestroy");
    CUresult rc = ngreens == 0 ? -1 : destroy ? destroy(greens[--ngreens]) : NOT_FOUND;
    printf("op=green_destroy who=%s rc=%d\n", who, rc);
}

static void op_module_unload(void) {
    CUresult (*unload)(void *) = dlsym(lookup_handle, "cuModuleUnload");
    CUresult rc = nmodules == 0 ? -1 : unload ? unload(modules[--nmodules]) : NOT_FOUND;
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=module_unload who=%s rc=%d %s\n", who, rc, mi);
}

static void op_info32(void) {
    CUresult (*info32)(unsigned *, unsigned *) = dlsym(lookup_handle, "cuMemGetInfo");
    unsigned f = 0, t = 0;
    CUresult rc = info32 ? info32(&f, &t) : NOT_FOUND;
    printf("op=info32 who=%s rc=%d free=%u total=%u\n", who, rc, f, t);
}

/* CUmemAllocationProp for device 0 (32 bytes; only type and location are set). */
typedef struct {
    int type, handle_types, location_type, location_id;
    void *win32;
    unsigned char flags[8];
} vmm_prop;

/* Executable graphs made by graph= and gnode=. */
static void *graph_execs[16];
static int ngraph_execs;

/* CUDA_MEM_ALLOC_NODE_PARAMS (CUmemPoolProps inline). */
typedef struct {
    int alloc_type, handle_types, location_type, location_id;
    void *win32;
    size_t max_size;
    unsigned short usage;
    unsigned char reserved[54];
    const void *access_descs;
    size_t access_desc_count;
    size_t bytesize;
    CUdeviceptr dptr;
} mem_alloc_node_params;

/* " reserved=<n> used=<n> free=<n> total=<n>": device 0's graph memory and cuMemGetInfo. */
static void graph_mem_suffix(char *buf, size_t len) {
    CUresult (*attr)(CUdevice, int, void *) = dlsym(lookup_handle, "cuDeviceGetGraphMemAttribute");
    unsigned long long used = 0, reserved = 0;
    if (attr) {
        attr(0, 0, &used);
        attr(0, 2, &reserved);
    }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    snprintf(buf, len, "reserved=%llu used=%llu %s", reserved, used, mi);
}

/* graph=SIZE (captured) and gnode=SIZE (explicit nodes): build, instantiate and launch a graph
 * that allocates and frees SIZE bytes of graph memory. */
static void op_graph(const char *arg, int explicit_nodes) {
    CUresult (*stream_create)(CUstream *, unsigned) = dlsym(lookup_handle, "cuStreamCreate");
    CUresult (*begin)(CUstream, int) = dlsym(lookup_handle, "cuStreamBeginCapture_v2");
    CUresult (*end)(CUstream, void **) = dlsym(lookup_handle, "cuStreamEndCapture");
    CUresult (*graph_create)(void **, unsigned) = dlsym(lookup_handle, "cuGraphCreate");
    CUresult (*add_alloc)(void **, void *, void **, size_t, mem_alloc_node_params *) = dlsym(lookup_handle, "cuGraphAddMemAllocNode");
    CUresult (*add_free)(void **, void *, void **, size_t, CUdeviceptr) = dlsym(lookup_handle, "cuGraphAddMemFreeNode");
    CUresult (*instantiate)(void **, void *, unsigned long long) = dlsym(lookup_handle, "cuGraphInstantiateWithFlags");
    CUresult (*launch)(void *, CUstream) = dlsym(lookup_handle, "cuGraphLaunch");
    size_t size;
    if (parse_size(arg, &size) != 0 || ngraph_execs == (int)(sizeof graph_execs / sizeof graph_execs[0])) {
        fprintf(stderr, "probe: bad size %s (or too many graphs)\n", arg);
        exit(2);
    }
    if (!stream_create || !begin || !end || !graph_create || !add_alloc || !add_free || !instantiate || !launch) {
        printf("op=%s who=%s rc=%d step=lookup\n", explicit_nodes ? "gnode" : "graph", who, NOT_FOUND);
        return;
    }
    CUstream s = NULL;
    void *g = NULL, *x = NULL;
    const char *step = "stream";
    CUresult rc = stream_create(&s, 1);
    if (rc == 0 && !explicit_nodes) {
        CUdeviceptr p = 0;
        step = "begin";
        rc = begin(s, 2);
        if (rc == 0) {
            step = "alloc";
            rc = CALL(cuMemAllocAsync, &p, size, s);
            if (rc == 0) {
                step = "free";
                rc = CALL(cuMemFreeAsync, p, s);
            }
            CUresult end_rc = end(s, &g);
            if (rc == 0 && end_rc != 0) {
                step = "end";
                rc = end_rc;
            }
        }
    } else if (rc == 0) {
        mem_alloc_node_params params;
        memset(&params, 0, sizeof params);
        params.alloc_type = 1;    /* CU_MEM_ALLOCATION_TYPE_PINNED */
        params.location_type = 1; /* CU_MEM_LOCATION_TYPE_DEVICE */
        params.location_id = 0;
        params.bytesize = size;
        void *alloc_node = NULL, *free_node = NULL;
        step = "graph";
        rc = graph_create(&g, 0);
        if (rc == 0) {
            step = "alloc_node";
            rc = add_alloc(&alloc_node, g, NULL, 0, &params);
        }
        if (rc == 0) {
            step = "free_node";
            rc = add_free(&free_node, g, &alloc_node, 1, params.dptr);
        }
    }
    if (rc == 0) {
        step = "instantiate";
        rc = instantiate(&x, g, 0);
    }
    if (rc == 0) {
        graph_execs[ngraph_execs++] = x;
        step = "launch";
        rc = launch(x, s);
        if (rc == 0) {
            step = "sync";
            rc = CALL(cuStreamSynchronize, s);
        }
    }
    char gm[192];
    graph_mem_suffix(gm, sizeof gm);
    printf("op=%s who=%s bytes=%zu rc=%d step=%s %s\n", explicit_nodes ? "gnode" : "graph", who, size, rc, rc ? step : "done", gm);
}

static void op_graph_trim(void) {
    CUresult (*destroy)(void *) = dlsym(lookup_handle, "cuGraphExecDestroy");
    CUresult (*trim)(CUdevice) = dlsym(lookup_handle, "cuDeviceGraphMemTrim");
    CUresult rc = 0;
    while (ngraph_execs > 0 && destroy && rc == 0) rc = destroy(graph_execs[--ngraph_execs]);
    if (rc == 0) rc = trim ? trim(0) : NOT_FOUND;
    char gm[192];
    graph_mem_suffix(gm, sizeof gm);
    printf("op=graph_trim who=%s rc=%d %s\n", who, rc, gm);
}

static void op_limit(const char *arg) {
    CUresult (*set)(int, size_t) = dlsym(lookup_handle, "cuCtxSetLimit");
    CUresult (*get)(size_t *, int) = dlsym(lookup_handle, "cuCtxGetLimit");
    const char *colon = strchr(arg, ':');
    size_t size;
    int limit = -1;
    if (colon && strncmp(arg, "stack:", 6) == 0) limit = 0;
    if (colon && strncmp(arg, "fifo:", 5) == 0) limit = 1;
    if (colon && strncmp(arg, "heap:", 5) == 0) limit = 2;
    if (limit < 0 || parse_size(colon + 1, &size) != 0) {
        fprintf(stderr, "probe: bad limit %s (stack:SIZE, heap:SIZE or fifo:SIZE)\n", arg);
        exit(2);
    }
    CUresult rc = set ? set(limit, size) : NOT_FOUND;
    size_t value = 0;
    if (get) get(&value, limit);
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=limit who=%s kind=%.*s bytes=%zu rc=%d value=%zu %s\n", who, (int)(colon - arg), arg, size, rc, value, mi);
}

static void op_vmm(const char *arg) {
    typedef unsigned long long H;
    CUresult (*create)(H *, size_t, const vmm_prop *, unsigned long long) = dlsym(lookup_handle, "cuMemCreate");
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) =
        dlsym(lookup_handle, "cuMemAddressReserve");
    CUresult (*map)(CUdeviceptr, size_t, size_t, H, unsigned long long) = dlsym(lookup_handle, "cuMemMap");
    CUresult (*release)(H) = dlsym(lookup_handle, "cuMemRelease");
    size_t size;
    if (parse_size(arg, &size) != 0 || nmappings == (int)(sizeof mappings / sizeof mappings[0])) {
        fprintf(stderr, "probe: bad size %s (or too many mappings)\n", arg);
        exit(2);
    }
    vmm_prop prop;
    memset(&prop, 0, sizeof prop);
    prop.type = 1;          /* CU_MEM_ALLOCATION_TYPE_PINNED */
    prop.location_type = 1; /* CU_MEM_LOCATION_TYPE_DEVICE */
    H handle = 0;
    CUdeviceptr ptr = 0;
    CUresult rc = create ? create(&handle, size, &prop, 0) : NOT_FOUND;
    CUresult release_rc = -1;
    if (rc == 0) {
        rc = reserve ? reserve(&ptr, size, 0, 0, 0) : NOT_FOUND;
        if (rc == 0) rc = map ? map(ptr, size, 0, handle, 0) : NOT_FOUND;
        if (rc == 0) {
            mapping_handles[nmappings] = handle;
            mappings[nmappings++] = (struct mapping){ptr, size};
        }
        release_rc = release ? release(handle) : NOT_FOUND;
    }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=vmm who=%s bytes=%zu rc=%d release_rc=%d %s\n", who, size, rc, release_rc, mi);
}

static void op_vmm_retain(void) {
    typedef unsigned long long H;
    CUresult (*retain)(H *, void *) = dlsym(lookup_handle, "cuMemRetainAllocationHandle");
    CUresult rc = -1;
    int same = 0;
    if (nmappings > 0 && nretained < (int)(sizeof retained / sizeof retained[0])) {
        struct mapping m = mappings[nmappings - 1];
        H h = 0;
        rc = retain ? retain(&h, (void *)(uintptr_t)(m.ptr + m.bytes / 2)) : NOT_FOUND;
        if (rc == 0) {
            retained[nretained++] = h;
            same = h == mapping_handles[nmappings - 1];
        }
    }
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=vmm_retain who=%s rc=%d same=%d %s\n", who, rc, same, mi);
}

static void op_vmm_release(void) {
    CUresult (*release)(unsigned long long) = dlsym(lookup_handle, "cuMemRelease");
    CUresult rc = nretained > 0 && release ? release(retained[--nretained]) : (CUresult)-1;
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=vmm_release who=%s rc=%d %s\n", who, rc, mi);
}

static void op_vmm_unmap(void) {
    CUresult (*unmap)(CUdeviceptr, size_t) = dlsym(lookup_handle, "cuMemUnmap");
    CUresult (*address_free)(CUdeviceptr, size_t) = dlsym(lookup_handle, "cuMemAddressFree");
    if (nmappings == 0) {
        printf("op=vmm_unmap who=%s bytes=0 rc=-1\n", who);
        return;
    }
    struct mapping m = mappings[--nmappings];
    CUresult rc = unmap ? unmap(m.ptr, m.bytes) : NOT_FOUND;
    if (rc == 0) rc = address_free ? address_free(m.ptr, m.bytes) : NOT_FOUND;
    char mi[128];
    meminfo_suffix(mi, sizeof mi);
    printf("op=vmm_unmap who=%s bytes=%zu rc=%d %s\n", who, m.bytes, rc, mi);
}

/* cuMemMap, cuMemUnmap (looked up as the entries were) and NVML's memory queries (dlopen +
 * dlsym) with null arguments, without any set-up: what the shim does with them before the
 * driver is reached. */
static void op_unguarded(void) {
    CUresult (*map)(CUdeviceptr, size_t, size_t, unsigned long long, unsigned long long) = dlsym(lookup_handle, "cuMemMap");
    CUresult (*unmap)(CUdeviceptr, size_t) = dlsym(lookup_handle, "cuMemUnmap");
    printf("op=unguarded who=%s fn=cuMemMap rc=%d\n", who, map ? map(0, 0, 0, 0, 0) : NOT_FOUND);
    printf("op=unguarded who=%s fn=cuMemUnmap rc=%d\n", who, unmap ? unmap(0, 0) : NOT_FOUND);
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    int (*info1)(void *, nvmlMemory_t *) = h ? (int (*)(void *, nvmlMemory_t *))dlsym(h, "nvmlDeviceGetMemoryInfo") : NULL;
    int (*info2)(void *, nvmlMemory_v2_t *) = h ? (int (*)(void *, nvmlMemory_v2_t *))dlsym(h, "nvmlDeviceGetMemoryInfo_v2") : NULL;
    nvmlMemory_t m1;
    nvmlMemory_v2_t m2 = {NVML_MEMORY_V2, 0, 0, 0, 0};
    printf("op=unguarded who=%s fn=nvmlDeviceGetMemoryInfo rc=%d\n", who, info1 ? info1(NULL, &m1) : NOT_FOUND);
    printf("op=unguarded who=%s fn=nvmlDeviceGetMemoryInfo_v2 rc=%d\n", who, info2 ? info2(NULL, &m2) : NOT_FOUND);
}

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;
typedef struct {
    unsigned pid;
    unsigned long long timeStamp;
    unsigned smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

/* One process list of NVML (`api`), with entries of `size` bytes whose first fields are
 * (unsigned pid, unsigned long long used). */
static void procs_line(const char *api, int (*f)(void *, unsigned *, void *), void *dev, size_t size) {
    static unsigned char buf[64 * sizeof(nvmlProcessInfo_t)];
    unsigned n = 64;
    int rc = f ? f(dev, &n, buf) : NOT_FOUND;
    printf("op=procs who=%s api=%s rc=%d n=%u list=", who, api, rc, n);
    for (unsigned i = 0; rc == 0 && i < n && i < 64; i++) {
        nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)(buf + i * size);
        printf("%s%u:%llu", i ? "," : "", p->pid, p->usedGpuMemory);
    }
    printf("\n");
}

static void op_procs(void) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    int (*init)(void) = h ? (int (*)(void))dlsym(h, "nvmlInit_v2") : NULL;
    int (*by_index)(unsigned, void **) = h ? (int (*)(unsigned, void **))dlsym(h, "nvmlDeviceGetHandleByIndex_v2") : NULL;
    void *dev = NULL;
    int rc = init && by_index ? init() : NOT_FOUND;
    if (rc == 0) rc = by_index(0, &dev);
    printf("op=procs who=%s api=self pid=%d rc=%d\n", who, (int)getpid(), rc);
    if (rc != 0) return;
    procs_line("v1", (int (*)(void *, unsigned *, void *))dlsym(h, "nvmlDeviceGetComputeRunningProcesses"), dev, sizeof(nvmlProcessInfo_v1_t));
    procs_line("v2", (int (*)(void *, unsigned *, void *))dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v2"), dev, sizeof(nvmlProcessInfo_t));
    procs_line("v3", (int (*)(void *, unsigned *, void *))dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v3"), dev, sizeof(nvmlProcessInfo_t));
    procs_line("graphics", (int (*)(void *, unsigned *, void *))dlsym(h, "nvmlDeviceGetGraphicsRunningProcesses_v3"), dev, sizeof(nvmlProcessInfo_t));
    int (*util)(void *, nvmlProcessUtilizationSample_t *, unsigned *, unsigned long long) =
        (int (*)(void *, nvmlProcessUtilizationSample_t *, unsigned *, unsigned long long))dlsym(h, "nvmlDeviceGetProcessUtilization");
    static nvmlProcessUtilizationSample_t samples[256];
    unsigned n = 256;
    rc = util ? util(dev, samples, &n, 0) : NOT_FOUND;
    printf("op=procs who=%s api=util rc=%d n=%u list=", who, rc, n);
    for (unsigned i = 0; rc == 0 && i < n && i < 256; i++) printf("%s%u:%u", i ? "," : "", samples[i].pid, samples[i].smUtil);
    printf("\n");
    int (*rates)(void *, unsigned *) = (int (*)(void *, unsigned *))dlsym(h, "nvmlDeviceGetUtilizationRates");
    unsigned r[2] = {0, 0};
    rc = rates ? rates(dev, r) : NOT_FOUND;
    printf("op=procs who=%s api=rates rc=%d gpu=%u mem=%u\n", who, rc, r[0], r[1]);
}

static void op_nvml(const char *arg) {
    unsigned index = arg ? (unsigned)atoi(arg) : 0;
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("op=nvml_init who=%s rc=-1\n", who);
        return;
    }
    int (*init)(void) = (int (*)(void))dlsym(h, "nvmlInit_v2");
    int (*by_index)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    int (*info1)(void *, nvmlMemory_t *) = (int (*)(void *, nvmlMemory_t *))dlsym(h, "nvmlDeviceGetMemoryInfo");
    int (*info2)(void *, nvmlMemory_v2_t *) = (int (*)(void *, nvmlMemory_v2_t *))dlsym(h, "nvmlDeviceGetMemoryInfo_v2");
    int (*shutdown)(void) = (int (*)(void))dlsym(h, "nvmlShutdown");
    if (!init || !by_index || !info1 || !info2 || !shutdown) {
        printf("op=nvml_init who=%s rc=-2\n", who);
        return;
    }
    int rc = init();
    printf("op=nvml_init who=%s rc=%d\n", who, rc);
    if (rc != 0) return;
    void *dev = NULL;
    rc = by_index(index, &dev);
    if (rc != 0) {
        printf("op=nvml_handle who=%s index=%u rc=%d\n", who, index, rc);
        shutdown();
        return;
    }
    nvmlMemory_t m1;
    memset(&m1, 0, sizeof m1);
    rc = info1(dev, &m1);
    printf("op=nvml who=%s index=%u version=1 rc=%d total=%llu free=%llu used=%llu\n", who, index, rc, m1.total, m1.free,
           m1.used);
    nvmlMemory_v2_t m2;
    memset(&m2, 0, sizeof m2);
    m2.version = NVML_MEMORY_V2;
    rc = info2(dev, &m2);
    printf("op=nvml who=%s index=%u version=2 rc=%d total=%llu free=%llu used=%llu reserved=%llu\n", who, index, rc,
           m2.total, m2.free, m2.used, m2.reserved);
    shutdown();
}

static void op_gpa(const char *arg) {
    char name[128];
    snprintf(name, sizeof name, "%s", arg);
    int version = 12000;
    char *at = strchr(name, '@');
    if (at) {
        *at = 0;
        version = atoi(at + 1);
    }
    void *p = (void *)0x1; /* the driver must overwrite it, even with NULL */
    int status = -1;
    CUresult rc = D.cuGetProcAddress_v2 ? D.cuGetProcAddress_v2(name, &p, version, 0, &status) : (CUresult)-1;
    char where[512];
    describe(p, where, sizeof where);
    printf("op=gpa who=%s sym=%s version=%d rc=%d status=%d pfn=%s\n", who, name, version, (int)rc, status, where);
}

static void op_gpa_cmp(const char *file) {
    FILE *f = fopen(file, "r");
    int (*version_of)(int *) = (int (*)(int *))dlsym(lookup_handle, "cuDriverGetVersion");
    int version = 0;
    if (!f || !version_of || version_of(&version) != 0 || !D.cuGetProcAddress_v2) {
        printf("op=gpa_cmp who=%s rc=-1 file_ok=%d\n", who, f != NULL);
        if (f) fclose(f);
        return;
    }
    char line[160];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n \t")] = 0;
        if (!line[0]) continue;
        char base[160];
        snprintf(base, sizeof base, "%s", line);
        unsigned long long flags = 0;
        size_t n = strlen(base);
        if (n > 5 && (strcmp(base + n - 5, "_ptsz") == 0 || strcmp(base + n - 5, "_ptds") == 0)) {
            base[n - 5] = 0;
            flags = 2; /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
        }
        char *v = strrchr(base, '_');
        if (v && v[1] == 'v' && v[2] && strspn(v + 2, "0123456789") == strlen(v + 2)) *v = 0;
        void *p = NULL;
        int status = -1;
        CUresult rc = D.cuGetProcAddress_v2(base, &p, version, flags, &status);
        void *d = dlsym(lookup_handle, line);
        Dl_info info;
        int exact = p && dladdr(p, &info) && info.dli_sname && info.dli_saddr == p;
        char gw[256], dw[256];
        describe(p, gw, sizeof gw);
        describe(d, dw, sizeof dw);
        printf("op=gpa_cmp who=%s name=%s base=%s version=%d rc=%d status=%d gpa=%s exact=%d dlsym=%s same=%d\n", who, line, base,
               version, (int)rc, status, gw, exact, dw, p != NULL && p == d);
    }
    fclose(f);
}

static void op_resolve(void) {
    char where[512];
    for (size_t i = 0; i < N_ENTRIES; i++) {
        describe(*ENTRIES[i].slot, where, sizeof where);
        printf("op=resolved who=%s fn=%s at=%s\n", who, ENTRIES[i].name, where);
    }
}

/* Hooked functions called with arguments a driver would reject harmlessly or accept cheaply;
 * with a bad configuration every one must be refused by the shim. */
static void op_hooked(void) {
    size_t a = 0, b = 0;
    CUdeviceptr p = 0;
    CUcontext ctx = NULL;
    void *arr = NULL;
    CUmemoryPool pool = NULL;
    CUDA_ARRAY_DESCRIPTOR desc = {64, 64, CU_AD_FORMAT_FLOAT, 1};
#define HOOKED(name, ...) printf("op=hooked who=%s fn=%s rc=%d\n", who, #name, CALL(name, __VA_ARGS__))
    HOOKED(cuInit, 0);
    HOOKED(cuMemGetInfo_v2, &a, &b);
    HOOKED(cuDeviceTotalMem_v2, &a, 0);
    HOOKED(cuDevicePrimaryCtxRetain, &ctx, 0);
    HOOKED(cuCtxCreate_v2, &ctx, 0, 0);
    HOOKED(cuMemAlloc_v2, &p, (size_t)1 << 20);
    HOOKED(cuMemAllocManaged, &p, (size_t)1 << 20, 1);
    HOOKED(cuMemAllocPitch_v2, &p, &a, 4096, 16, 4);
    HOOKED(cuMemAllocAsync, &p, (size_t)1 << 20, NULL);
    HOOKED(cuArrayCreate_v2, &arr, &desc);
    HOOKED(cuDeviceGetDefaultMemPool, &pool, 0);
    HOOKED(cuDevicePrimaryCtxRelease_v2, 0);
#undef HOOKED
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *lookup = "handle";
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--lookup") == 0) {
        lookup = argv[2];
        if (strcmp(lookup, "handle") && strcmp(lookup, "default") && strcmp(lookup, "global")) {
            fprintf(stderr, "probe: --lookup handle|default|global\n");
            return 2;
        }
        first = 3;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    load(lookup);
    CUcontext ctx = NULL;
    for (int i = first; i < argc; i++) {
        const char *op = argv[i];
        const char *arg = strchr(op, '=');
        size_t oplen = arg ? (size_t)(arg - op) : strlen(op);
        if (arg) arg++;
#define IS(name) (oplen == strlen(name) && strncmp(op, name, oplen) == 0)
        if (IS("init")) {
            printf("op=init who=%s rc=%d\n", who, CALL(cuInit, 0));
        } else if (IS("ctx")) {
            CUresult rc = CALL(cuDevicePrimaryCtxRetain, &ctx, 0);
            if (rc == 0) rc = CALL(cuCtxSetCurrent, ctx);
            printf("op=ctx who=%s rc=%d\n", who, rc);
        } else if (IS("release")) {
            printf("op=release who=%s rc=%d\n", who, CALL(cuDevicePrimaryCtxRelease_v2, 0));
        } else if (IS("info")) {
            size_t f = 0, t = 0;
            CUresult rc = CALL(cuMemGetInfo_v2, &f, &t);
            printf("op=info who=%s rc=%d free=%zu total=%zu\n", who, rc, f, t);
        } else if (IS("total")) {
            size_t bytes = 0;
            CUresult rc = CALL(cuDeviceTotalMem_v2, &bytes, 0);
            printf("op=total who=%s rc=%d bytes=%zu\n", who, rc, bytes);
        } else if (IS("alloc") && arg) {
            op_alloc(arg, 0);
        } else if (IS("async") && arg) {
            op_alloc(arg, 1);
        } else if (IS("free")) {
            op_free();
        } else if (IS("freeall")) {
            while (nblocks > 0) op_free();
        } else if (IS("keep_pool")) {
            unsigned long long max = UINT64_MAX;
            CUmemoryPool pool = default_pool();
            CUresult rc = pool ? CALL(cuMemPoolSetAttribute, pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &max) : -1;
            printf("op=keep_pool who=%s rc=%d\n", who, rc);
        } else if (IS("trim_pool")) {
            CUmemoryPool pool = default_pool();
            CUresult rc = pool ? CALL(cuMemPoolTrimTo, pool, 0) : -1;
            char mi[128];
            meminfo_suffix(mi, sizeof mi);
            printf("op=trim_pool who=%s rc=%d %s\n", who, rc, mi);
        } else if (IS("vmm") && arg) {
            op_vmm(arg);
        } else if (IS("vmm_unmap")) {
            op_vmm_unmap();
        } else if (IS("vmm_retain")) {
            op_vmm_retain();
        } else if (IS("vmm_release")) {
            op_vmm_release();
        } else if (IS("graph") && arg) {
            op_graph(arg, 0);
        } else if (IS("gnode") && arg) {
            op_graph(arg, 1);
        } else if (IS("graph_trim")) {
            op_graph_trim();
        } else if (IS("alloc32") && arg) {
            op_alloc32(arg);
        } else if (IS("link")) {
            op_link();
        } else if (IS("launch") && arg) {
            op_launch(arg);
        } else if (IS("module") && arg) {
            op_module(arg);
        } else if (IS("module_unload")) {
            op_module_unload();
        } else if (IS("deep") && arg) {
            op_deep(arg);
        } else if (IS("green") && arg) {
            op_green(arg);
        } else if (IS("green_destroy")) {
            op_green_destroy();
        } else if (IS("library") && arg) {
            op_library(arg);
        } else if (IS("library_unload")) {
            op_library_unload();
        } else if (IS("info32")) {
            op_info32();
        } else if (IS("limit") && arg) {
            op_limit(arg);
        } else if (IS("nvml")) {
            op_nvml(arg);
        } else if (IS("gpa") && arg) {
            op_gpa(arg);
        } else if (IS("procs")) {
            op_procs();
        } else if (IS("gpa_cmp") && arg) {
            op_gpa_cmp(arg);
        } else if (IS("resolve")) {
            op_resolve();
        } else if (IS("hooked")) {
            op_hooked();
        } else if (IS("unguarded")) {
            op_unguarded();
        } else if (IS("puts")) {
            char line[64];
            snprintf(line, sizeof line, "op=puts who=%s ok=1", who);
            puts(line);
        } else if (IS("wait")) {
            char buf[256];
            (void)!fgets(buf, sizeof buf, stdin);
        } else if (IS("sleep") && arg) {
            double end = now_s() + atof(arg) / 1000.0;
            while (now_s() < end) usleep(1000);
        } else if (IS("fork")) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) {
                printf("op=fork who=%s rc=-1\n", who);
            } else if (pid == 0) {
                who = "child";
                printf("op=fork who=child pid=%d\n", (int)getpid());
            } else {
                /* The parent skips the child's part: up to and including the next exit=. */
                while (i + 1 < argc && strncmp(argv[i + 1], "exit=", 5) != 0) i++;
                if (i + 1 < argc) i++;
                int status = 0;
                waitpid(pid, &status, 0);
                printf("op=wait who=parent child=%d exited=%d status=%d signaled=%d\n", (int)pid, WIFEXITED(status),
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status));
            }
        } else if (IS("exit") && arg) {
            fflush(stdout);
            exit(atoi(arg));
        } else {
            fprintf(stderr, "probe: unknown operation %s\n", op);
            return 2;
        }
#undef IS
    }
    return 0;
}
