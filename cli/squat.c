/* SPDX-License-Identifier: MIT */
/* portfence squat: hold ports exactly as a client would, to make the seed's
 * "Address already in use" happen on purpose. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
                   "holding the ports and exit with its status (128+N if signal N ended it);\n"
                   "SIGINT, SIGTERM and SIGHUP are passed on to it, and it is sent SIGTERM if\n"
                   "squat dies. Without CMD, hold them for SECONDS (default: until SIGINT,\n"
                   "SIGTERM or SIGHUP). Options go anywhere before '--'. Everything is released\n"
                   "on exit, with a reset: no TIME_WAIT is left on a port.\n");
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
                if (list[i].owner_count) {
                        char program[4 * sizeof(list[i].owners[0].program)];

                        pf_text_copy(program, sizeof(program), list[i].owners[0].program);
                        snprintf(out, size, "pid %d (%s)", (int)list[i].owners[0].pid, program);
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

static volatile sig_atomic_t interrupted;      /* the signal that came, or 0 */
static volatile pid_t command_pid;

/* The command gets what squat got: the test runner that stops squat stops
 * what it runs, and squat releases its ports once it is gone. */
static void on_signal(int sig)
{
        interrupted = sig;
        if (command_pid > 0)
                kill(command_pid, sig);
}

static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP };

static void catch_signals(void)
{
        struct sigaction sa = { .sa_handler = on_signal };

        for (size_t i = 0; i < PF_COUNT(forwarded); i++)
                sigaction(forwarded[i], &sa, NULL);
}

static void exec_command(char **argv, pid_t parent)
{
        struct sigaction dfl = { .sa_handler = SIG_DFL };

        for (size_t i = 0; i < PF_COUNT(forwarded); i++)
                sigaction(forwarded[i], &dfl, NULL);
        /* Dies with squat: a killed test runner leaves no server behind. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                _exit(128 + SIGTERM);
        execvp(argv[0], argv);
        pf_error("squat", "cannot run '%s': %s", argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
}

static int run_command(char **argv)
{
        pid_t parent = getpid(), pid;
        int status;

        catch_signals();
        pid = fork();
        if (pid < 0) {
                pf_error("squat", "fork: %s", strerror(errno));
                return PF_EXIT_FAILURE;
        }
        if (pid == 0)
                exec_command(argv, parent);
        command_pid = pid;
        if (interrupted)                /* came before command_pid was known */
                kill(pid, interrupted);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return PF_EXIT_FAILURE;
        command_pid = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct squat_args {
        enum pf_proto proto;
        bool want4, want6;
        unsigned hold;
        unsigned ports[MAX_HELD / 4], nports;
        char **command;         /* after "--", or NULL */
};

/* Options and ports in any order up to "--", the command after it. 1 after
 * --help, -1 after an error (printed). */
static int parse_squat_args(int argc, char **argv, struct squat_args *a)
{
        static const struct option options[] = {
                { "proto", required_argument, NULL, 'p' },
                { "hold", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        bool only4 = false, only6 = false;
        int opt, end = 1;

        *a = (struct squat_args){ .proto = PF_TCP, .want4 = true, .want6 = true };
        while (end < argc && strcmp(argv[end], "--") != 0)
                end++;
        if (end < argc)
                a->command = argv + end + 1;
        /* getopt sees what comes before "--" only, ports moved behind the options. */
        while ((opt = pf_cli_getopt("squat", end, argv, "46h", options)) != -1) {
                switch (opt) {
                case 'p':
                        if (pf_proto_parse(optarg, &a->proto) < 0) {
                                pf_error("squat", "unknown proto '%s' (tcp or udp)", optarg);
                                return -1;
                        }
                        break;
                case 't':
                        if (pf_cli_parse_uint(optarg, 1, 86400 * 365, &a->hold) < 0) {
                                pf_error("squat", "bad --hold '%s': expected seconds, 1 or more", optarg);
                                return -1;
                        }
                        break;
                case '4': only4 = true; break;
                case '6': only6 = true; break;
                case 'h': squat_help(stdout); return 1;
                default: return -1;
                }
        }
        if (only4 && only6) {
                pf_error("squat", "-4 and -6 together: give one of them, or neither for both");
                return -1;
        }
        a->want4 = !only6;
        a->want6 = !only4;
        for (; optind < end; optind++) {
                unsigned port;

                if (pf_cli_parse_uint(argv[optind], 1, PF_PORT_MAX, &port) < 0) {
                        pf_error("squat", "bad port '%s': expected a number 1-65535", argv[optind]);
                        return -1;
                }
                for (unsigned i = 0; i < a->nports; i++) {
                        if (a->ports[i] == port) {
                                pf_error("squat", "port %u is given twice", port);
                                return -1;
                        }
                }
                if (a->nports == MAX_HELD / 4) {
                        pf_error("squat", "more than %d ports", MAX_HELD / 4);
                        return -1;
                }
                a->ports[a->nports++] = port;
        }
        if (a->nports == 0) {
                pf_error("squat", "no port given (portfence squat PORT... [-- CMD])");
                return -1;
        }
        if (a->command && !*a->command) {
                pf_error("squat", "no command after '--'");
                return -1;
        }
        if (a->command && a->hold) {
                pf_error("squat", "--hold and a command contradict each other: the ports are held "
                         "while the command runs");
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
                        char holder[256];
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
        catch_signals();
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
