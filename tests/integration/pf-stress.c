/* SPDX-License-Identifier: MIT */
/* 16 threads x 1000 rounds of: a remapped listener, a client connecting to
 * the requested port (redirected), an accept, getsockname/getpeername, and a
 * refused bind. Run under the shim with the policy of test_shim.py; prints
 * "ok" or the first failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define THREADS 16
#define ROUNDS 1000

static int failures;

static struct sockaddr_in loopback(unsigned port)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return in;
}

static void fail(unsigned t, unsigned round, const char *what, int err)
{
        if (__atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED) == 0)
                printf("thread %u round %u: %s: %s\n", t, round, what, strerror(err));
}

static unsigned port_of(int fd, bool peer)
{
        struct sockaddr_in in;
        socklen_t len = sizeof(in);
        int r = peer ? getpeername(fd, (struct sockaddr *)&in, &len)
                     : getsockname(fd, (struct sockaddr *)&in, &len);

        return r < 0 ? 0 : ntohs(in.sin_port);
}

static void *worker(void *arg)
{
        unsigned t = (unsigned)(uintptr_t)arg;
        unsigned requested = 20000 + t;         /* remapped to 7200 + t */
        struct linger reset = { .l_onoff = 1, .l_linger = 0 };
        int one = 1;

        for (unsigned round = 0; round < ROUNDS && !__atomic_load_n(&failures, __ATOMIC_RELAXED); round++) {
                struct sockaddr_in server = loopback(requested), refused = loopback(25000 + t);
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                int c = socket(AF_INET, SOCK_STREAM, 0);
                int x = socket(AF_INET, SOCK_STREAM, 0);
                int a = -1;

                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(s, (struct sockaddr *)&server, sizeof(server)) < 0)
                        fail(t, round, "bind", errno);
                else if (listen(s, 16) < 0)
                        fail(t, round, "listen", errno);
                else if (connect(c, (struct sockaddr *)&server, sizeof(server)) < 0)
                        fail(t, round, "connect", errno);
                else if ((a = accept(s, NULL, NULL)) < 0)
                        fail(t, round, "accept", errno);
                else if (port_of(s, false) != requested || port_of(c, true) != requested ||
                         port_of(a, false) != requested)
                        fail(t, round, "name calls", EPROTO);
                if (bind(x, (struct sockaddr *)&refused, sizeof(refused)) == 0 || errno != EADDRINUSE)
                        fail(t, round, "refused bind", errno);
                setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
                close(c);               /* reset: no TIME_WAIT left behind */
                if (a >= 0)
                        close(a);
                close(s);
                close(x);
        }
        return NULL;
}

int main(void)
{
        pthread_t threads[THREADS];

        for (unsigned t = 0; t < THREADS; t++)
                pthread_create(&threads[t], NULL, worker, (void *)(uintptr_t)t);
        for (unsigned t = 0; t < THREADS; t++)
                pthread_join(threads[t], NULL);
        if (failures)
                return 1;
        printf("ok\n");
        return 0;
}
