/* Micro benchmark for scripts/bench: times successful socket calls, one benchmark after the
 * other, in one process, so that the caller can run the same binary bare, under LD_PRELOAD
 * (errshim, libfiu) or under strace and compare.
 *
 * usage: bench_micro [-n ITERS] [-c CHURN] [-w WARMUP] [-k CHUNKS] BENCH...
 *   BENCH: unix-rw tcp-rw unix-sendrecv tcp-sendrecv unix-vec tcp-vec churn, or all
 *   -n ITERS   round trips per I/O benchmark (a round trip is 2 hooked calls)
 *   -c CHURN   cycles of the churn benchmark (6 hooked calls each: socket, connect, accept,
 *              close of the accepted end, shutdown(SHUT_WR) and close of the client)
 *   -w WARMUP  untimed round trips (or cycles) before each timed loop
 *   -k CHUNKS  the timed loop is cut into CHUNKS equal parts, each timed on its own; the
 *              result is the median part, so that a moment of noise on the machine (another
 *              process, the hypervisor) spoils one part instead of the whole run (default 5)
 *   -p BLOCK   also a paired measurement: ITERS (CHURN) more round trips (cycles) in blocks of
 *              BLOCK, alternating between the functions this program is bound to (a preload's
 *              hooks, if any) and libc's own definitions of the same functions, found with
 *              dlsym on libc itself; the order alternates AB BA. Both run in the same process
 *              on the same sockets within a fraction of a millisecond of each other, so noise
 *              that differs from process to process (several percent on a VM) cancels out.
 *              paired_ratio is the median over the pairs of hooked time / libc time; with no
 *              preload both sides are libc and the ratio shows the method's own noise (0: off)
 *
 * Prints one line per benchmark (ns: the whole timed loop; ns_per_call: the median chunk;
 * with -p, direct_ns_per_call and paired_ratio as well):
 *   bench=unix-rw ops=20000 calls=40000 ns=12345678 ns_per_call=308.6
 *   bench=unix-rw ... ns_per_call=308.6 direct_ns_per_call=305.1 paired_ratio=1.0112
 * and last a line saying which preload libraries are mapped, so the caller can check that the
 * mode it asked for is the one measured:
 *   maps errshim=1 fiu=0 floor=0
 * Every call must succeed: the program exits 1 at the first failure, so a benchmark never
 * measures an error path by accident. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "bench_micro: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

enum io { IO_RW, IO_SENDRECV, IO_VEC };

/* n round trips of 1 byte: a -> b. The loop body is all the program does, so that
 * instruction counts (callgrind) and times are those of the two calls plus a compare each. */
static void roundtrips(int a, int b, enum io io, long n) {
    char c = 'x', d;
    struct iovec wi = {&c, 1}, ri = {&d, 1};
    switch (io) {
    case IO_RW:
        for (long i = 0; i < n; i++)
            if (write(a, &c, 1) != 1 || read(b, &d, 1) != 1) die("write/read");
        break;
    case IO_SENDRECV:
        for (long i = 0; i < n; i++)
            if (send(a, &c, 1, 0) != 1 || recv(b, &d, 1, 0) != 1) die("send/recv");
        break;
    case IO_VEC:
        for (long i = 0; i < n; i++)
            if (writev(a, &wi, 1) != 1 || readv(b, &ri, 1) != 1) die("writev/readv");
        break;
    }
}

/* The functions a loop calls: those this program is bound to, or libc's own. */
struct api {
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*readv)(int, const struct iovec *, int);
    int (*socket)(int, int, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*shutdown)(int, int);
    int (*close)(int);
};
static struct api bound, direct;
static long block; /* -p: round trips (cycles) per block; 0: no paired measurement */

static void *libc_sym(void *h, const char *name) {
    void *f = dlsym(h, name);
    if (!f) {
        fprintf(stderr, "bench_micro: libc has no %s\n", name);
        exit(2);
    }
    return f;
}

static void apis(void) {
    bound = (struct api){write, read, send, recv, writev, readv, socket, connect, accept, shutdown, close};
    void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        fprintf(stderr, "bench_micro: libc.so.6 is not loaded: %s\n", dlerror());
        exit(2);
    }
    direct = (struct api){libc_sym(h, "write"),  libc_sym(h, "read"),    libc_sym(h, "send"),
                          libc_sym(h, "recv"),   libc_sym(h, "writev"),  libc_sym(h, "readv"),
                          libc_sym(h, "socket"), libc_sym(h, "connect"), libc_sym(h, "accept"),
                          libc_sym(h, "shutdown"), libc_sym(h, "close")};
}

/* roundtrips(), through an api (the paired measurement). roundtrips() itself calls the
 * functions directly, through the PLT as programs do, because callgrind's per-call
 * instruction counts come from it. */
static void roundtrips_via(const struct api *f, int a, int b, enum io io, long n) {
    char c = 'x', d;
    struct iovec wi = {&c, 1}, ri = {&d, 1};
    for (long i = 0; i < n; i++) {
        int ok;
        switch (io) {
        case IO_RW: ok = f->write(a, &c, 1) == 1 && f->read(b, &d, 1) == 1; break;
        case IO_SENDRECV: ok = f->send(a, &c, 1, 0) == 1 && f->recv(b, &d, 1, 0) == 1; break;
        default: ok = f->writev(a, &wi, 1) == 1 && f->readv(b, &ri, 1) == 1; break;
        }
        if (!ok) die("paired round trip");
    }
}

static int listener(struct sockaddr_in *addr) {
    socklen_t len = sizeof *addr;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0) die("socket");
    if (bind(l, (struct sockaddr *)addr, len) < 0 || listen(l, 128) < 0) die("bind/listen");
    if (getsockname(l, (struct sockaddr *)addr, &len) < 0) die("getsockname");
    return l;
}

/* A connected pair: AF_UNIX socketpair, or a loopback TCP connection with Nagle off (a 1-byte
 * ping-pong in one direction would otherwise wait for delayed ACKs). */
static void pair(int tcp, int sv[2]) {
    if (!tcp) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
        return;
    }
    struct sockaddr_in a;
    int l = listener(&a), one = 1;
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (sv[0] < 0) die("socket");
    if (connect(sv[0], (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    sv[1] = accept(l, NULL, NULL);
    if (sv[1] < 0) die("accept");
    close(l);
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* The timed loop, cut into `chunks` parts: each part's time per call goes into per_call[]. */
#define MAX_CHUNKS 64
static int chunks = 5;

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void report(const char *name, long n, long calls_per_op, double total, double *per_call, int k) {
    printf("bench=%s ops=%ld calls=%ld ns=%.0f ns_per_call=%.2f", name, n, calls_per_op * n, total,
           k ? median(per_call, k) : 0.0);
}

/* The paired measurement (-p): `n` operations each way, in blocks, AB BA; `run` does `m`
 * operations through an api. Ends report()'s line. */
static void paired(long n, long calls_per_op, void (*run)(const struct api *, long, void *), void *ctx) {
    if (block <= 0 || n <= 0) {
        printf("\n");
        return;
    }
    long pairs = n / block > 0 ? n / block : 1, m = n / pairs;
    double *ratio = malloc(sizeof(double) * pairs), direct_total = 0;
    if (!ratio) die("malloc");
    for (long i = 0; i < pairs; i++) {
        double t[2];
        for (int j = 0; j < 2; j++) {
            int hooked = (i & 1) ? j : !j;
            double t0 = now_ns();
            run(hooked ? &bound : &direct, m, ctx);
            t[hooked] = now_ns() - t0;
        }
        ratio[i] = t[1] / t[0];
        direct_total += t[0];
    }
    printf(" direct_ns_per_call=%.2f paired_ratio=%.4f\n", direct_total / (double)(pairs * m * calls_per_op),
           median(ratio, pairs));
    free(ratio);
}

struct io_ctx {
    int a, b;
    enum io io;
};

static void run_io(const struct api *f, long m, void *ctx) {
    struct io_ctx *c = ctx;
    roundtrips_via(f, c->a, c->b, c->io, m);
}

static void bench_io(const char *name, int tcp, enum io io, long n, long warm) {
    int sv[2], k = n < chunks ? (int)n : chunks;
    double per_call[MAX_CHUNKS], total = 0;
    pair(tcp, sv);
    roundtrips(sv[0], sv[1], io, warm);
    for (int i = 0; i < k; i++) {
        long m = n / k + (i < n % k);
        double t0 = now_ns();
        roundtrips(sv[0], sv[1], io, m);
        double t = now_ns() - t0;
        total += t;
        per_call[i] = t / (2.0 * m);
    }
    report(name, n, 2, total, per_call, k);
    struct io_ctx ctx = {sv[0], sv[1], io};
    paired(n, 2, run_io, &ctx);
    close(sv[0]);
    close(sv[1]);
}

/* Connection churn on loopback TCP. The accepted end closes first, so TIME_WAIT lands on the
 * listener's side (whose port is new in every process) and the client's ephemeral ports are
 * free for reuse at once; the client's shutdown(SHUT_WR) then runs in CLOSE_WAIT and succeeds. */
static void churn_cycles(const struct api *f, int l, const struct sockaddr_in *a, long n) {
    for (long i = 0; i < n; i++) {
        int c = f->socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0) die("socket");
        if (f->connect(c, (const struct sockaddr *)a, sizeof *a) < 0) die("connect");
        int s = f->accept(l, NULL, NULL);
        if (s < 0) die("accept");
        if (f->close(s) != 0) die("close (accepted)");
        if (f->shutdown(c, SHUT_WR) != 0) die("shutdown");
        if (f->close(c) != 0) die("close");
    }
}

struct churn_ctx {
    int l;
    const struct sockaddr_in *a;
};

static void run_churn(const struct api *f, long m, void *ctx) {
    struct churn_ctx *x = ctx;
    churn_cycles(f, x->l, x->a, m);
}

static void bench_churn(long n, long warm) {
    struct sockaddr_in a;
    int l = listener(&a), k = n < chunks ? (int)n : chunks;
    double per_call[MAX_CHUNKS], total = 0;
    churn_cycles(&bound, l, &a, warm);
    for (int i = 0; i < k; i++) {
        long m = n / k + (i < n % k);
        double t0 = now_ns();
        churn_cycles(&bound, l, &a, m);
        double t = now_ns() - t0;
        total += t;
        per_call[i] = t / (6.0 * m);
    }
    report("churn", n, 6, total, per_call, k);
    struct churn_ctx ctx = {l, &a};
    paired(n, 6, run_churn, &ctx);
    close(l);
}

/* Whether a library whose path contains `name` is mapped into this process. */
static int mapped(const char *name) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!f) return -1;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}

static long num(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "bench_micro: not a count: '%s'\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    long n = 20000, churn = 5000, warm = 1000;
    int opt;
    while ((opt = getopt(argc, argv, "n:c:w:k:p:")) != -1) {
        switch (opt) {
        case 'p': block = num(optarg); break;
        case 'n': n = num(optarg); break;
        case 'c': churn = num(optarg); break;
        case 'w': warm = num(optarg); break;
        case 'k':
            chunks = (int)num(optarg);
            if (chunks < 1 || chunks > MAX_CHUNKS) {
                fprintf(stderr, "bench_micro: -k takes 1 to %d\n", MAX_CHUNKS);
                return 2;
            }
            break;
        default:
            fprintf(stderr, "usage: bench_micro [-n ITERS] [-c CHURN] [-w WARMUP] [-k CHUNKS] [-p BLOCK] BENCH...\n");
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "bench_micro: name at least one benchmark (or all)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    apis();
    for (int i = optind; i < argc; i++) {
        const char *b = argv[i];
        int all = strcmp(b, "all") == 0, known = all;
        if (all || strcmp(b, "unix-rw") == 0) known = 1, bench_io("unix-rw", 0, IO_RW, n, warm);
        if (all || strcmp(b, "tcp-rw") == 0) known = 1, bench_io("tcp-rw", 1, IO_RW, n, warm);
        if (all || strcmp(b, "unix-sendrecv") == 0) known = 1, bench_io("unix-sendrecv", 0, IO_SENDRECV, n, warm);
        if (all || strcmp(b, "tcp-sendrecv") == 0) known = 1, bench_io("tcp-sendrecv", 1, IO_SENDRECV, n, warm);
        if (all || strcmp(b, "unix-vec") == 0) known = 1, bench_io("unix-vec", 0, IO_VEC, n, warm);
        if (all || strcmp(b, "tcp-vec") == 0) known = 1, bench_io("tcp-vec", 1, IO_VEC, n, warm);
        if (all || strcmp(b, "churn") == 0) known = 1, bench_churn(churn, warm < churn ? warm : churn);
        if (!known) {
            fprintf(stderr, "bench_micro: unknown benchmark '%s'\n", b);
            return 2;
        }
    }
    printf("maps errshim=%d fiu=%d floor=%d\n", mapped("liberrshim"), mapped("fiu_posix_preload"), mapped("bench_floor"));
    return 0;
}
