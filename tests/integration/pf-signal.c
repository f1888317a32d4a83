/* SPDX-License-Identifier: MIT */
/* A signal handler that calls connect() while the main loop binds: the shim
 * must stay async-signal-safe. The handler connects (non-blocking) to the
 * requested port of a listener the policy moved; it must reach it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t handled, refused;

static struct sockaddr_in loopback(unsigned port)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return in;
}

static void on_alarm(int sig)
{
        struct sockaddr_in server = loopback(20005);
        int saved = errno;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

        (void)sig;
        if (connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0 && errno != EINPROGRESS &&
            errno != EAGAIN)
                refused++;
        close(fd);
        handled++;
        errno = saved;
}

int main(void)
{
        struct sockaddr_in server = loopback(20005);
        struct itimerval every = { { 0, 500 }, { 0, 500 } };
        struct sigaction sa = { .sa_handler = on_alarm };
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;

        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(s, (struct sockaddr *)&server, sizeof(server)) < 0 || listen(s, 4096) < 0) {
                perror("pf-signal: listener");
                return 1;
        }
        fcntl(s, F_SETFL, O_NONBLOCK);
        sigaction(SIGALRM, &sa, NULL);
        setitimer(ITIMER_REAL, &every, NULL);
        for (int i = 0; i < 20000 && handled < 200; i++) {
                struct sockaddr_in guarded = loopback(21000 + i % 100);
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                int a;

                bind(fd, (struct sockaddr *)&guarded, sizeof(guarded));
                close(fd);
                while ((a = accept(s, NULL, NULL)) >= 0)
                        close(a);
                if (i % 100 == 0)
                        usleep(1000);
        }
        every = (struct itimerval){ { 0, 0 }, { 0, 0 } };
        setitimer(ITIMER_REAL, &every, NULL);
        printf("handled %d refused %d\n", (int)handled, (int)refused);
        return handled >= 20 && refused == 0 ? 0 : 1;
}
