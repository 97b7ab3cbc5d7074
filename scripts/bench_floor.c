/* The floor for scripts/bench: the least an LD_PRELOAD interposer can do and still see what a
 * call returned. Each hook calls the next definition of its symbol (dlsym RTLD_NEXT, resolved
 * in a constructor) and tests the result's sign; nothing else. Its "floor" row in the table is
 * what any library that wraps these functions costs on the machine, with no work of its own,
 * measured the same way as errshim: the rest of an errshim row is errshim's own work.
 *
 * Built by scripts/bench as a shared library: cc -O2 -shared -fPIC -o bench_floor.so. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* Written on a failure only, so that the sign test stays in the code. */
static volatile long failures;

#define HOOK(ret, name, params, args)                                   \
    static ret(*real_##name) params;                                    \
    ret name params {                                                   \
        ret r = real_##name args;                                       \
        if (__builtin_expect(r < 0, 0)) failures++;                     \
        return r;                                                       \
    }

HOOK(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n))
HOOK(ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n))
HOOK(ssize_t, readv, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt))
HOOK(ssize_t, writev, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt))
HOOK(ssize_t, recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags))
HOOK(ssize_t, send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags))
HOOK(int, socket, (int domain, int type, int protocol), (domain, type, protocol))
HOOK(int, connect, (int fd, const struct sockaddr *addr, socklen_t len), (fd, addr, len))
HOOK(int, accept, (int fd, struct sockaddr *addr, socklen_t *len), (fd, addr, len))
HOOK(int, shutdown, (int fd, int how), (fd, how))
HOOK(int, close, (int fd), (fd))

#define RESOLVE(name) *(void **)&real_##name = dlsym(RTLD_NEXT, #name)

__attribute__((constructor)) static void resolve(void) {
    RESOLVE(read);
    RESOLVE(write);
    RESOLVE(readv);
    RESOLVE(writev);
    RESOLVE(recv);
    RESOLVE(send);
    RESOLVE(socket);
    RESOLVE(connect);
    RESOLVE(accept);
    RESOLVE(shutdown);
    RESOLVE(close);
}
