/* Clients that reset their connections, for scripts/bench's nginx row under a reset storm.
 *
 *   bench_resets PORT THREADS SECONDS
 *
 * Each thread, for SECONDS: connects to 127.0.0.1:PORT, sends a GET for /index.html, reads the
 * first bytes of the answer, and closes with SO_LINGER {1, 0}, which sends an RST instead of a
 * FIN (a phone that changed networks, a tab closed mid-response, as the server sees it). Every
 * other connection resets before reading anything. Prints "resets=N". */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;
static double seconds;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *resetter(void *out) {
    static const char req[] = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    long n = 0;
    double end = now() + seconds;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    while (now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0)
            break;
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 && write(s, req, sizeof req - 1) > 0) {
            char buf[64];
            if (n % 2 == 0 && read(s, buf, sizeof buf) < 0)
                perror("read");
            struct linger l = {1, 0};
            setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            n++;
        }
        close(s);
    }
    *(long *)out = n;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: bench_resets PORT THREADS SECONDS\n");
        return 2;
    }
    port = atoi(argv[1]);
    int threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    if (threads < 1 || threads > 256)
        return 2;
    pthread_t t[256];
    long done[256];
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, resetter, &done[i]);
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += done[i];
    }
    printf("resets=%ld\n", total);
    return 0;
}
