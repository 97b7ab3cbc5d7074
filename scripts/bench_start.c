/* Process start, for scripts/bench: starts PROGRAM (default /bin/true) N times, each with
 * fork + execve + waitpid as a shell does, with the environment this program was given (the
 * benchmark sets LD_PRELOAD and errshim's variables for the mode it measures), and prints
 * "starts=<n> ns_per_start=<t>". The first WARM starts are not timed.
 *
 * usage: bench_start N WARM [PROGRAM] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void start(char *prog) {
    char *argv[] = {prog, NULL};
    pid_t p = fork();
    if (p < 0) {
        perror("fork");
        exit(1);
    }
    if (p == 0) {
        execve(prog, argv, environ);
        _exit(127);
    }
    int st;
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench_start: %s failed (status %d)\n", prog, st);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[1]), warm = atol(argv[2]);
    char *prog = argc > 3 ? argv[3] : "/bin/true";
    for (long i = 0; i < warm; i++) start(prog);
    double t0 = now();
    for (long i = 0; i < n; i++) start(prog);
    double t = now() - t0;
    printf("starts=%ld ns_per_start=%.0f\n", n, t * 1e9 / n);
    return 0;
}
