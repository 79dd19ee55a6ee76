/*
 * exec_cost - what preloading a library adds to starting a program that never touches CUDA:
 * spawns /bin/true N times without and N times with LD_PRELOAD=LIB, alternating (so machine
 * load falls on both alike), and prints the mean of each and the difference. /etc/ld.so.preload
 * loads a library the same way LD_PRELOAD does.
 *
 * usage: gcc -O2 -o exec_cost bench/containers/exec_cost.c && ./exec_cost LIB [N]
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: exec_cost LIB [N]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 2000;
    char preload[4096];
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s", argv[1]);
    char *plain[] = {"PATH=/usr/bin:/bin", NULL};
    char *with[] = {"PATH=/usr/bin:/bin", preload, NULL};
    char *args[] = {"/bin/true", NULL};
    double t[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            pid_t pid;
            int status;
            double start = now();
            if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, k ? with : plain) != 0) return 1;
            waitpid(pid, &status, 0);
            t[k] += now() - start;
        }
    }
    printf("/bin/true: %.0f us plain, %.0f us with %s preloaded: +%.0f us per exec (%d each)\n", t[0] / n * 1e6,
           t[1] / n * 1e6, argv[1], (t[1] - t[0]) / n * 1e6, n);
    return 0;
}
