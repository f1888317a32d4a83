/* SPDX-License-Identifier: MIT */
/* portfence squat: hold ports exactly as a client would, to make the seed's
 * "Address already in use" happen on purpose. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "sockets.h"

#define MAX_HELD 256

static void squat_help(FILE *f)
{
        fprintf(f, "usage: portfence squat [--proto tcp|udp] [-4|-6] [--hold SECONDS] PORT...\n"
                   "                       [-- CMD [ARGS...]]\n\n"
                   "Occupy each PORT as a client would: a connected socket whose local port is\n"
                   "PORT, on 127.0.0.1 and ::1 (-4 or -6: one of them). With CMD, run it while\n"
                   "holding the ports and exit with its status; without, hold them for SECONDS\n"
                   "(default: until interrupted). Nothing is ever killed; everything is released\n"
                   "on exit.\n");
}

struct held {
        int fds[MAX_HELD];
        unsigned count;
};

static int keep(struct held *h, int fd)
{
        if (fd < 0)
                return -1;
        if (h->count == MAX_HELD) {
                close(fd);
                errno = EMFILE;
                return -1;
        }
        h->fds[h->count++] = fd;
        return fd;
}

static socklen_t loopback(int family, unsigned port, struct sockaddr_storage *ss)
{
        memset(ss, 0, sizeof(*ss));
        if (family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *)ss;

                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t)port);
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                return sizeof(*in);
        }
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        ((struct sockaddr_in6 *)ss)->sin6_addr = in6addr_loopback;
        return sizeof(struct sockaddr_in6);
}

/* Who holds port/proto, for the error message: "pid 12 (nginx)". */
static void describe_holder(enum pf_proto proto, unsigned port, char *out, size_t size)
{
        struct pf_socket *list;
        size_t count;

        snprintf(out, size, "a socket whose owner portfence cannot see");
        if (pf_sockets_read(&list, &count) < 0)
                return;
        pf_sockets_owners(list, count);
        for (size_t i = 0; i < count; i++) {
                if (list[i].proto != proto || list[i].port != port)
                        continue;
                if (list[i].pid) {
                        snprintf(out, size, "pid %d (%s)", (int)list[i].pid, list[i].program);
                        break;
                }
                if (list[i].time_wait)
                        snprintf(out, size, "a closed connection in TIME_WAIT (no process; gone within a minute)");
        }
        free(list);
}

/* A socket bound to port on the loopback of family, connected to a peer of
 * ours: exactly what the kernel makes of a client that got that port. */
static int squat_one(struct held *h, enum pf_proto proto, int family, unsigned port)
{
        int type = (proto == PF_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC;
        struct sockaddr_storage ss, peer;
        socklen_t len = loopback(family, port, &ss), peer_len = sizeof(peer);
        int peer_fd = socket(family, type, 0), fd;

        if (peer_fd < 0)
                return -errno;
        loopback(family, 0, &peer);
        if (bind(peer_fd, (struct sockaddr *)&peer, len) < 0 ||
            (proto == PF_TCP && listen(peer_fd, 1) < 0) ||
            getsockname(peer_fd, (struct sockaddr *)&peer, &peer_len) < 0) {
                close(peer_fd);
                return -errno;
        }
        fd = keep(h, socket(family, type, 0));
        if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) < 0 ||
            connect(fd, (struct sockaddr *)&peer, peer_len) < 0) {
                int r = -errno;

                close(peer_fd);
                return r;
        }
        if (proto == PF_TCP) {  /* keep the far end; the listener was short-lived */
                keep(h, accept4(peer_fd, NULL, NULL, SOCK_CLOEXEC));
                close(peer_fd);
        } else {
                keep(h, peer_fd);
        }
        return 0;
}

/* Close everything with a reset: no TIME_WAIT is left holding a port. */
static void release(struct held *h)
{
        struct linger reset = { .l_onoff = 1, .l_linger = 0 };

        for (unsigned i = 0; i < h->count; i++) {
                setsockopt(h->fds[i], SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
                close(h->fds[i]);
        }
        h->count = 0;
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
        (void)sig;
        interrupted = 1;
}

static int run_command(char **argv)
{
        int status;
        pid_t pid = fork();

        if (pid < 0) {
                pf_error("squat", "fork: %s", strerror(errno));
                return PF_EXIT_USAGE;
        }
        if (pid == 0) {
                execvp(argv[0], argv);
                pf_error("squat", "cannot run '%s': %s", argv[0], strerror(errno));
                _exit(errno == ENOENT ? 127 : 126);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return PF_EXIT_USAGE;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct squat_args {
        enum pf_proto proto;
        bool want4, want6;
        unsigned hold;
        unsigned ports[MAX_HELD / 4], nports;
        char **command;         /* after "--", or NULL */
};

/* Options, then ports up to "--" and the command after it. 1 after --help,
 * -1 after an error (printed). */
static int parse_squat_args(int argc, char **argv, struct squat_args *a)
{
        static const struct option options[] = {
                { "proto", required_argument, NULL, 'p' },
                { "hold", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int opt;

        *a = (struct squat_args){ .proto = PF_TCP, .want4 = true, .want6 = true };
        while ((opt = pf_cli_getopt("squat", argc, argv, "+46h", options)) != -1) {
                switch (opt) {
                case 'p':
                        if (pf_proto_parse(optarg, &a->proto) < 0) {
                                pf_error("squat", "unknown proto '%s' (tcp or udp)", optarg);
                                return -1;
                        }
                        break;
                case 't':
                        if (pf_cli_parse_uint(optarg, 1, 86400 * 365, &a->hold) < 0) {
                                pf_error("squat", "bad --hold '%s': expected seconds", optarg);
                                return -1;
                        }
                        break;
                case '4': a->want6 = false; a->want4 = true; break;
                case '6': a->want4 = false; a->want6 = true; break;
                case 'h': squat_help(stdout); return 1;
                default: squat_help(stderr); return -1;
                }
        }
        for (; optind < argc; optind++) {
                if (strcmp(argv[optind], "--") == 0) {
                        a->command = argv + optind + 1;
                        break;
                }
                if (a->nports == MAX_HELD / 4 ||
                    pf_cli_parse_uint(argv[optind], 1, PF_PORT_MAX, &a->ports[a->nports]) < 0) {
                        pf_error("squat", "bad port '%s': expected 1-65535 (at most %d ports)",
                                 argv[optind], MAX_HELD / 4);
                        return -1;
                }
                a->nports++;
        }
        if (a->nports == 0 || (a->command && !*a->command)) {
                pf_error("squat", "%s", a->nports ? "no command after '--'" : "no port given");
                return -1;
        }
        return 0;
}

/* Every port on every family asked for; PF_EXIT_FOUND (said why) when one
 * cannot be taken. */
static int take_ports(const struct squat_args *a, struct held *h)
{
        for (unsigned i = 0; i < a->nports; i++) {
                for (int f = 0; f < 2; f++) {
                        const char *where = f ? "::1" : "127.0.0.1";
                        char holder[128];
                        int r;

                        if (!(f ? a->want6 : a->want4))
                                continue;
                        r = squat_one(h, a->proto, f ? AF_INET6 : AF_INET, a->ports[i]);
                        if (r == 0)
                                continue;
                        if (r == -EADDRINUSE) {
                                describe_holder(a->proto, a->ports[i], holder, sizeof(holder));
                                pf_error("squat", "%u/%s on %s is in use already, by %s", a->ports[i],
                                         pf_proto_name(a->proto), where, holder);
                        } else {
                                pf_error("squat", "%u/%s on %s: %s", a->ports[i],
                                         pf_proto_name(a->proto), where, strerror(-r));
                        }
                        return PF_EXIT_FOUND;
                }
        }
        return PF_EXIT_OK;
}

/* Say what is held, then run the command or wait for a signal or --hold. */
static int hold_ports(const struct squat_args *a)
{
        struct sigaction sa = { .sa_handler = on_signal };
        FILE *say = a->command ? stderr : stdout;

        fprintf(say, "portfence: squat: holding");
        for (unsigned i = 0; i < a->nports; i++)
                fprintf(say, " %u/%s", a->ports[i], pf_proto_name(a->proto));
        fprintf(say, " on %s as a client would (pid %d)\n",
                a->want4 && a->want6 ? "127.0.0.1 and ::1" : a->want4 ? "127.0.0.1" : "::1",
                (int)getpid());
        fflush(say);
        if (a->command)
                return run_command(a->command);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        if (a->hold)
                alarm(a->hold);
        sigaction(SIGALRM, &sa, NULL);
        while (!interrupted)
                pause();
        return PF_EXIT_OK;
}

int pf_cmd_squat(int argc, char **argv)
{
        struct squat_args a;
        struct held h = { .count = 0 };
        int status, r = parse_squat_args(argc, argv, &a);

        if (r)
                return r > 0 ? PF_EXIT_OK : PF_EXIT_USAGE;
        status = take_ports(&a, &h);
        if (status == PF_EXIT_OK)
                status = hold_ports(&a);
        release(&h);
        return status;
}
