/* SPDX-License-Identifier: MIT */
/* pf-probe: runs a little script of socket calls given as arguments and
 * prints one line per call, so integration tests can compare behaviour with
 * and without portfence. Words:
 *   tcp4 tcp6 udp4 udp6 unix devnull   open a socket (or /dev/null); it becomes current
 *   mptcp4 mptcp6                      a stream socket of IPPROTO_MPTCP
 *   udplite4 udplite6                  a datagram socket of IPPROTO_UDPLITE
 *   fd N                               make descriptor N current
 *   bind ADDR PORT | bindnull | bindshort ADDR PORT | bindunix PATH
 *   bindunspec ADDR PORT               bind with sa_family AF_UNSPEC (an IPv4 ADDR)
 *   bind24 ADDR PORT                   an IPv6 bind with the kernel's shortest length (24:
 *                                      no sin6_scope_id, SIN6_LEN_RFC2133)
 *   rawbind ADDR PORT                  bind by syscall(SYS_bind), past libc
 *   connect ADDR PORT | listen | accept | close
 *   reset                              close with a reset (SO_LINGER 0): no TIME_WAIT
 *   sockname | peername                print the address the call reports
 *   send MSG | recv | sendto ADDR PORT MSG | sendmsg ADDR PORT MSG
 *   recvfrom | recvmsg | echo          (echo: recvfrom, then reply to the sender)
 *   reuse                              set SO_REUSEADDR (servers restarted by tests)
 *   portrange LO HI                    set IP_LOCAL_PORT_RANGE (Linux 6.3+)
 *   cat PATH                           print a (small) file's first line: "cat 0 0 TEXT"
 *   ready                              print "ready" and flush (for fixtures)
 *   wait                               read a line from stdin
 * Each result line is "WORD RET ERRNO[ extra]", ERRNO a name or 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "probe-addr.h"

static const char *errno_name(int err)
{
        const char *name = err ? strerrorname_np(err) : NULL;

        return name ? name : "0";
}

static void print_addr(const char *word, long ret, int err, const struct sockaddr_storage *ss)
{
        char text[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (ss->ss_family == AF_INET) {
                inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, text, sizeof(text));
                port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
        } else if (ss->ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, text, sizeof(text));
                port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
        }
        if (ret < 0)
                printf("%s %ld %s\n", word, ret, errno_name(err));
        else
                printf("%s %ld 0 %s %u\n", word, ret, text, port);
}

static void need(int argc, char **argv, int i, int n)
{
        if (i + n >= argc) {
                fprintf(stderr, "pf-probe: '%s' needs %d argument(s)\n", argv[i], n);
                exit(2);
        }
}

int main(int argc, char **argv)
{
        int fd = -1;

        setvbuf(stdout, NULL, _IOLBF, 0);
        for (int i = 1; i < argc; i++) {
                const char *w = argv[i];
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                char buf[512];
                long r = 0;

                errno = 0;
                if (!strcmp(w, "mptcp4") || !strcmp(w, "mptcp6")) {
                        fd = socket(w[5] == '6' ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 262);
                        printf("%s %d %s\n", w, fd < 0 ? -1 : 0, errno_name(fd < 0 ? errno : 0));
                        continue;
                }
                if (!strcmp(w, "udplite4") || !strcmp(w, "udplite6")) {
                        fd = socket(w[7] == '6' ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 136);
                        printf("%s %d %s\n", w, fd < 0 ? -1 : 0, errno_name(fd < 0 ? errno : 0));
                        continue;
                }
                if (!strcmp(w, "tcp4") || !strcmp(w, "tcp6") || !strcmp(w, "udp4") ||
                    !strcmp(w, "udp6") || !strcmp(w, "unix")) {
                        int family = w[0] == 'u' && w[1] == 'n' ? AF_UNIX : w[3] == '6' ? AF_INET6 : AF_INET;
                        int type = w[0] == 't' ? SOCK_STREAM | SOCK_CLOEXEC : SOCK_DGRAM;

                        struct timeval bound = { .tv_sec = 5 };        /* no test waits forever */

                        fd = socket(family, w[0] == 'u' && w[1] == 'n' ? SOCK_STREAM : type, 0);
                        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
                        printf("%s %d %s\n", w, fd < 0 ? -1 : 0, errno_name(fd < 0 ? errno : 0));
                        continue;
                }
                if (!strcmp(w, "devnull")) {
                        fd = open("/dev/null", O_RDWR);
                        printf("devnull %d 0\n", fd < 0 ? -1 : 0);
                } else if (!strcmp(w, "cat")) {
                        char text[4096] = "";
                        FILE *f;

                        need(argc, argv, i, 1);
                        f = fopen(argv[++i], "r");
                        if (f && !fgets(text, sizeof(text), f))
                                text[0] = '\0';
                        text[strcspn(text, "\n")] = '\0';
                        printf("cat %d %s %s\n", f ? 0 : -1, errno_name(f ? 0 : errno), text);
                        if (f)
                                fclose(f);
                } else if (!strcmp(w, "fd")) {
                        need(argc, argv, i, 1);
                        fd = atoi(argv[++i]);
                } else if (!strcmp(w, "bind") || !strcmp(w, "connect") || !strcmp(w, "bindshort") ||
                           !strcmp(w, "bindunspec") || !strcmp(w, "rawbind") || !strcmp(w, "bind24")) {
                        need(argc, argv, i, 2);
                        len = make_addr(argv[i + 1], argv[i + 2], &ss);
                        i += 2;
                        if (!strcmp(w, "bindunspec")) {
                                ss.ss_family = AF_UNSPEC;
                                r = bind(fd, (struct sockaddr *)&ss, len);
                        } else if (!strcmp(w, "rawbind")) {
                                r = syscall(SYS_bind, fd, (struct sockaddr *)&ss, len);
                        } else if (!strcmp(w, "bind24")) {
                                r = bind(fd, (struct sockaddr *)&ss, 24);
                        } else if (w[0] == 'c')
                                r = connect(fd, (struct sockaddr *)&ss, len);
                        else
                                r = bind(fd, (struct sockaddr *)&ss, w[4] ? sizeof(sa_family_t) + 2 : len);
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "bindnull")) {
                        r = bind(fd, NULL, 0);
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "bindunix")) {
                        struct sockaddr_un sun = { .sun_family = AF_UNIX };

                        need(argc, argv, i, 1);
                        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", argv[++i]);
                        unlink(sun.sun_path);
                        r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "listen")) {
                        r = listen(fd, 128);
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "accept")) {
                        r = accept(fd, NULL, NULL);
                        printf("%s %d %s\n", w, r < 0 ? -1 : 0, errno_name(r < 0 ? errno : 0));
                        if (r >= 0)
                                fd = (int)r;
                } else if (!strcmp(w, "reset")) {
                        struct linger now = { .l_onoff = 1, .l_linger = 0 };

                        setsockopt(fd, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
                        r = close(fd);
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "close")) {
                        r = close(fd);
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "sockname") || !strcmp(w, "peername")) {
                        memset(&ss, 0, sizeof(ss));
                        r = w[0] == 's' ? getsockname(fd, (struct sockaddr *)&ss, &len)
                                        : getpeername(fd, (struct sockaddr *)&ss, &len);
                        print_addr(w, r, errno, &ss);
                } else if (!strcmp(w, "send")) {
                        need(argc, argv, i, 1);
                        r = send(fd, argv[i + 1], strlen(argv[i + 1]), 0);
                        i++;
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "sendto") || !strcmp(w, "sendmsg")) {
                        need(argc, argv, i, 3);
                        len = make_addr(argv[i + 1], argv[i + 2], &ss);
                        if (w[4] == 't') {
                                r = sendto(fd, argv[i + 3], strlen(argv[i + 3]), 0,
                                           (struct sockaddr *)&ss, len);
                        } else {
                                struct iovec iov = { argv[i + 3], strlen(argv[i + 3]) };
                                struct msghdr msg = { .msg_name = &ss, .msg_namelen = len,
                                                      .msg_iov = &iov, .msg_iovlen = 1 };

                                r = sendmsg(fd, &msg, 0);
                        }
                        i += 3;
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "recv")) {
                        r = recv(fd, buf, sizeof(buf) - 1, 0);
                        buf[r > 0 ? r : 0] = '\0';
                        printf("%s %ld %s %s\n", w, r, errno_name(r < 0 ? errno : 0), buf);
                } else if (!strcmp(w, "recvfrom") || !strcmp(w, "echo")) {
                        memset(&ss, 0, sizeof(ss));
                        r = recvfrom(fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&ss, &len);
                        print_addr(w, r, errno, &ss);
                        if (r >= 0 && w[0] == 'e')
                                sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&ss, len);
                } else if (!strcmp(w, "recvmsg")) {
                        struct iovec iov = { buf, sizeof(buf) - 1 };
                        struct msghdr msg = { .msg_name = &ss, .msg_namelen = sizeof(ss),
                                              .msg_iov = &iov, .msg_iovlen = 1 };

                        memset(&ss, 0, sizeof(ss));
                        r = recvmsg(fd, &msg, 0);
                        print_addr(w, r, errno, &ss);
                } else if (!strcmp(w, "portrange")) {
                        uint32_t range;

                        need(argc, argv, i, 2);
                        range = (uint32_t)atoi(argv[i + 1]) | (uint32_t)atoi(argv[i + 2]) << 16;
                        i += 2;
                        r = setsockopt(fd, IPPROTO_IP, 51 /* IP_LOCAL_PORT_RANGE */, &range, sizeof(range));
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "reuse")) {
                        int one = 1;

                        r = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                        printf("%s %ld %s\n", w, r, errno_name(r < 0 ? errno : 0));
                } else if (!strcmp(w, "ready")) {
                        printf("ready\n");
                } else if (!strcmp(w, "wait")) {
                        if (!fgets(buf, sizeof(buf), stdin))
                                return 0;
                } else {
                        fprintf(stderr, "pf-probe: unknown word '%s'\n", w);
                        return 2;
                }
        }
        return 0;
}
