/* SPDX-License-Identifier: MIT */
/* Benchmark: the cost of each enforcer, in one run. Children run the same
 * loops plain, with libportfence.so preloaded, and (as root, given the
 * portfence command) inside a cgroup fenced by the BPF programs; the parent
 * prints ns per iteration and the ratios (targets: <= 1.05 for an allowed
 * port, a remapped port and an unguarded call; start-up of /bin/true at most
 * 1 ms slower with the shim; at most 1 MiB more RSS), then the map memory
 * of two fences of the shipped policy (1 MiB for the first, 64 KiB more for
 * the second).
 *
 * usage: bench-fence PATH/TO/libportfence.so [PATH/TO/portfence SHIPPED.conf] */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "loader.h"
#include "policy.h"

#define ROUNDS 7
#define STARTS 300

enum loop {
        BIND_ALLOWED, BIND_REMAPPED, BIND_UNGUARDED, CONNECT_ACCEPT, CONNECT_NOT_MOVED,
        CONNECT_MOVED, LOOP_COUNT
};

static const char *const loop_names[] = {
        "socket+bind+close, allowed port  ",
        "socket+bind+close, remapped port ",
        "socket+bind+close, port 0        ",
        "connect+accept+close, allowed    ",
        "connect, guarded port not moved  ",
        "connect+accept+close, moved port ",
};

static const unsigned iterations[] = { 20000, 20000, 20000, 5000, 20000, 5000 };

static const char policy_text[] =
        "version = 1;\n"
        "ephemeral = \"20000-29999\";\n"
        "remap_pool = \"7000-7099\";\n"
        "rules = ( { ports = \"8080\"; action = \"allow\"; },\n"
        "          { ports = \"20000-20099\"; action = \"remap\"; to = 7300; } );\n"
        "log = { level = \"error\"; };\n";

static double now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct sockaddr_in loopback(unsigned port)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return in;
}

static void bind_loop(unsigned port, unsigned n)
{
        struct sockaddr_in in = loopback(port);

        for (unsigned i = 0; i < n; i++) {
                int fd = socket(AF_INET, SOCK_DGRAM, 0);

                if (bind(fd, (struct sockaddr *)&in, sizeof(in)) < 0) {
                        perror("bench-shim: bind");
                        exit(1);
                }
                close(fd);
        }
}

/* A connect that fails as addressed: nothing was moved from the port, so
 * the shim must not pay more than a table lookup. */
static void refused_loop(unsigned port, unsigned n)
{
        struct sockaddr_in in = loopback(port);

        for (unsigned i = 0; i < n; i++) {
                int c = socket(AF_INET, SOCK_STREAM, 0);

                if (connect(c, (struct sockaddr *)&in, sizeof(in)) == 0 || errno != ECONNREFUSED) {
                        perror("bench-shim: connect to a port nobody moved");
                        exit(1);
                }
                close(c);
        }
}

/* connect+accept to a server on port (7399: allowed; 20003: moved to 7303
 * when fenced, which the connect follows). */
static void connect_loop(unsigned port, unsigned n)
{
        struct sockaddr_in in = loopback(port);
        struct linger reset = { 1, 0 };
        int one = 1, server = socket(AF_INET, SOCK_STREAM, 0);

        setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(server, (struct sockaddr *)&in, sizeof(in)) < 0 || listen(server, 64) < 0) {
                perror("bench-shim: listen");
                exit(1);
        }
        for (unsigned i = 0; i < n; i++) {
                int c = socket(AF_INET, SOCK_STREAM, 0), a;

                if (connect(c, (struct sockaddr *)&in, sizeof(in)) < 0 ||
                    (a = accept(server, NULL, NULL)) < 0) {
                        perror("bench-shim: connect");
                        exit(1);
                }
                setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
                close(c);
                close(a);
        }
        close(server);
}

/* In a child: run one loop (n times, on port: 0 for the loop's own),
 * print ns per iteration. scripts/bench runs the loops this way too, under
 * callgrind and strace and in fenced cgroups. */
static int child_loop(enum loop which, unsigned n, unsigned port)
{
        static const unsigned ports[] = { 8080, 20001, 0, 7399, 20002, 20003 };
        double start = now_ns();

        if (!port)
                port = ports[which];
        switch (which) {
        case BIND_ALLOWED: case BIND_REMAPPED: case BIND_UNGUARDED: bind_loop(port, n); break;
        case CONNECT_NOT_MOVED: refused_loop(port, n); break;
        default: connect_loop(port, n); break;
        }
        printf("%.1f\n", (now_ns() - start) / n);
        return 0;
}

static long rss_kib(void)
{
        char line[256];
        long kib = -1;
        FILE *f = fopen("/proc/self/status", "r");

        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        if (f)
                fclose(f);
        return kib;
}

/* Run argv with or without the shim, in a cgroup if one is given; returns
 * what it printed as a number, and its wall time in *ns. */
static double spawn_in(char *const argv[], const char *shim, const char *cgroup, double *ns)
{
        int out[2];
        char buf[64] = "";
        double start = now_ns();
        pid_t pid;
        ssize_t n;

        if (pipe(out) < 0)
                exit(1);
        pid = fork();
        if (pid == 0) {
                dup2(out[1], STDOUT_FILENO);
                close(out[0]);
                if (shim)
                        setenv("LD_PRELOAD", shim, 1);
                else
                        unsetenv("LD_PRELOAD");
                if (cgroup) {
                        char procs[4200];
                        FILE *f;

                        snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
                        f = fopen(procs, "w");
                        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0)
                                _exit(126);
                }
                execv(argv[0], argv);
                _exit(127);
        }
        close(out[1]);
        n = read(out[0], buf, sizeof(buf) - 1);
        close(out[0]);
        waitpid(pid, NULL, 0);
        if (ns)
                *ns = now_ns() - start;
        buf[n > 0 ? n : 0] = '\0';
        return atof(buf);
}

/* portfence run --landlock: what building and applying the ruleset adds to
 * a start (one rule per open port: Landlock has no ranges). */
static void bench_landlock(const char *portfence, const char *policy)
{
        char *shim_args[] = { (char *)portfence, "run", "-c", (char *)policy, "--", "/bin/true", NULL };
        char *landlock_args[] = { (char *)portfence, "run", "--landlock", "-c", (char *)policy, "--", "/bin/true",
                                  NULL };
        double shim_total = 0, landlock_total = 0, ns;
        enum { RUNS = 20 };

        spawn_in(landlock_args, NULL, NULL, &ns);     /* the compiled policy cached, as for later runs */
        for (int i = 0; i < RUNS; i++) {
                spawn_in(shim_args, NULL, NULL, &ns);
                shim_total += ns;
                spawn_in(landlock_args, NULL, NULL, &ns);
                landlock_total += ns;
        }
        printf("\nportfence run --landlock of /bin/true with %s: +%.1f ms over 'run' (%.1f ms) "
               "(target <= 5 ms)\n", policy, (landlock_total - shim_total) / RUNS / 1e6,
               shim_total / RUNS / 1e6);
}

static double spawn(char *const argv[], const char *shim, double *ns)
{
        return spawn_in(argv, shim, NULL, ns);
}

/* The loops plain and with an enforcer: the shim, or the cgroup. */
static void compare_loops(const char *self, const char *shim, const char *cgroup)
{
        char which[8];

        printf("loop                               without      with   ratio (target <= 1.05)\n");
        for (int loop = 0; loop < LOOP_COUNT; loop++) {
                double best_plain = 1e18, best_fenced = 1e18;
                char *args[] = { (char *)self, "--loop", which, NULL };

                snprintf(which, sizeof(which), "%d", loop);
                for (int round = 0; round < ROUNDS; round++) {  /* interleaved, best of */
                        double plain = spawn(args, NULL, NULL);
                        double fenced = spawn_in(args, shim, cgroup, NULL);

                        best_plain = plain < best_plain ? plain : best_plain;
                        best_fenced = fenced < best_fenced ? fenced : best_fenced;
                }
                printf("%s %7.0f ns %7.0f ns   %.3f\n", loop_names[loop], best_plain, best_fenced,
                       best_fenced / best_plain);
        }
}

/* ---- map memory: what the kernel charges per fence --------------------------- */

#define MAX_MAPS 64

struct map_list {
        uint32_t ids[MAX_MAPS];
        uint64_t bytes[MAX_MAPS];
        char names[MAX_MAPS][16];
        unsigned count;
};

static void add_map(uint32_t id, const char *name, uint64_t memlock, void *ctx)
{
        struct map_list *list = ctx;

        for (unsigned i = 0; i < list->count; i++)
                if (list->ids[i] == id)
                        return;
        if (list->count == MAX_MAPS)
                return;
        list->ids[list->count] = id;
        list->bytes[list->count] = memlock;
        snprintf(list->names[list->count], sizeof(list->names[0]), "%s", name);
        list->count++;
}

static bool listed(const struct map_list *list, uint32_t id)
{
        for (unsigned i = 0; i < list->count; i++)
                if (list->ids[i] == id)
                        return true;
        return false;
}

/* A cgroup of the bench's own, fenced by policy: 0, or -1 and nothing left. */
static int fenced_cgroup(const char *portfence, const char *policy, const char *mount, int n,
                         struct pf_cgroup *out)
{
        char command[8192];
        struct stat st;

        snprintf(out->path, sizeof(out->path), "%s/bench-fence-%d-%d", mount, getpid(), n);
        if (mkdir(out->path, 0755) < 0)
                return -1;
        snprintf(command, sizeof(command), "%s cgroup attach -c %s %s >/dev/null", portfence, policy,
                 out->path);
        if (system(command) != 0 || stat(out->path, &st) < 0) {
                rmdir(out->path);
                return -1;
        }
        out->id = st.st_ino;
        return 0;
}

static void unfence(const char *portfence, const struct pf_cgroup *cgroup)
{
        char command[8192];

        snprintf(command, sizeof(command), "%s cgroup detach %s >/dev/null", portfence, cgroup->path);
        if (system(command) != 0)
                fprintf(stderr, "bench-fence: detach failed\n");
        rmdir(cgroup->path);
}

/* The shipped policy on two cgroups: the maps of the first, and what the
 * second adds (targets: <= 1024 KiB, then <= 64 KiB more). */
static void print_map_memory(const char *portfence, const char *policy, const char *mount)
{
        struct pf_cgroup first, second;
        struct map_list one = { .count = 0 }, both;
        char why[PF_WHY_SIZE];
        uint64_t total = 0, more = 0;

        if (fenced_cgroup(portfence, policy, mount, 1, &first) < 0) {
                printf("map memory: skipped (attach failed)\n");
                return;
        }
        if (pf_bpf_fence_maps(&first, add_map, &one, why) == 0 &&
            fenced_cgroup(portfence, policy, mount, 2, &second) == 0) {
                printf("\nmap memory of a fence of %s:\n", policy);
                for (unsigned i = 0; i < one.count; i++) {
                        printf("  map %-16s %8.1f KiB\n", one.names[i], one.bytes[i] / 1024.0);
                        total += one.bytes[i];
                }
                both = one;
                pf_bpf_fence_maps(&second, add_map, &both, why);
                for (unsigned i = 0; i < both.count; i++)
                        if (!listed(&one, both.ids[i]))
                                more += both.bytes[i];
                printf("map memory of one fence: %.1f KiB (target <= 1024 KiB)\n", total / 1024.0);
                printf("a second fence of the same policy adds: %.1f KiB (target <= 64 KiB)\n",
                       more / 1024.0);
                unfence(portfence, &second);
        }
        unfence(portfence, &first);
}

/* As root with cgroup v2: the same loops in a cgroup fenced by portfence. */
static void bench_cgroup(const char *self, const char *portfence, const char *policy_path,
                         const char *shipped)
{
        char cgroup[4200], command[8192], mount[4096], why[PF_WHY_SIZE];

        if (pf_cgroup_mount(mount, sizeof(mount), why) < 0 || geteuid() != 0) {
                printf("\ncgroup: skipped (needs root and cgroup v2)\n");
                return;
        }
        snprintf(cgroup, sizeof(cgroup), "%s/bench-fence-%d", mount, getpid());
        if (mkdir(cgroup, 0755) < 0) {
                printf("\ncgroup: skipped (%s: %s)\n", cgroup, strerror(errno));
                return;
        }
        snprintf(command, sizeof(command), "%s cgroup attach -c %s %s >/dev/null", portfence,
                 policy_path, cgroup);
        if (system(command) == 0) {
                printf("\nBPF cgroup programs (the same loops inside a fenced cgroup):\n");
                compare_loops(self, NULL, cgroup);
                snprintf(command, sizeof(command), "%s cgroup detach %s >/dev/null", portfence, cgroup);
                if (system(command) != 0)
                        fprintf(stderr, "bench-fence: detach failed\n");
        } else {
                printf("\ncgroup: skipped (attach failed)\n");
        }
        rmdir(cgroup);
        print_map_memory(portfence, shipped, mount);
}

int main(int argc, char **argv)
{
        char self[4096], compiled[] = "/tmp/bench-fence-XXXXXX", source[] = "/tmp/bench-fence-XXXXXX";
        struct pf_policy *policy = NULL;
        struct pf_diag diag;
        ssize_t len;
        int fd;

        if (argc >= 3 && argc <= 5 && strcmp(argv[1], "--loop") == 0 && atoi(argv[2]) >= 0 &&
            atoi(argv[2]) < LOOP_COUNT) {
                enum loop which = (enum loop)atoi(argv[2]);

                return child_loop(which, argc > 3 ? (unsigned)atoi(argv[3]) : iterations[which],
                                  argc > 4 ? (unsigned)atoi(argv[4]) : 0);
        }
        if (argc == 2 && strcmp(argv[1], "--rss") == 0) {
                printf("%ld\n", rss_kib());
                return 0;
        }
        if (argc != 2 && argc != 4) {
                fprintf(stderr, "usage: bench-fence PATH/TO/libportfence.so [PATH/TO/portfence "
                        "SHIPPED.conf]\n");
                return 2;
        }
        len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        fd = mkstemp(compiled);
        if (len < 0 || fd < 0 || pf_policy_load_text(policy_text, "bench.conf", &policy, &diag) < 0 ||
            pf_policy_save(policy, compiled) < 0) {
                fprintf(stderr, "bench-shim: cannot prepare the policy\n");
                return 1;
        }
        close(fd);
        self[len] = '\0';
        pf_diag_free(&diag);
        pf_policy_free(policy);
        setenv("PORTFENCE_POLICY", compiled, 1);

        printf("LD_PRELOAD shim:\n");
        compare_loops(self, argv[1], NULL);

        /* The shim asks a guarded socket its protocol: one getsockopt(2). */
        {
                int probe = socket(AF_INET, SOCK_DGRAM, 0), value;
                socklen_t size = sizeof(value);
                double start = now_ns();

                for (int i = 0; i < 100000; i++)
                        getsockopt(probe, SOL_SOCKET, SO_PROTOCOL, &value, &size);
                printf("for scale: one getsockopt(SO_PROTOCOL) costs %.0f ns here\n",
                       (now_ns() - start) / 100000);
                close(probe);
        }

        char *true_args[] = { "/bin/true", NULL };
        double plain_total = 0, shim_total = 0, ns;

        for (int i = 0; i < STARTS; i++) {
                spawn(true_args, NULL, &ns);
                plain_total += ns;
                spawn(true_args, argv[1], &ns);
                shim_total += ns;
        }
        printf("start-up of /bin/true: %.0f us without, %.0f us with: +%.0f us (target <= 1000 us)\n",
               plain_total / STARTS / 1e3, shim_total / STARTS / 1e3,
               (shim_total - plain_total) / STARTS / 1e3);

        char *rss_args[] = { self, "--rss", NULL };
        double rss_plain = spawn(rss_args, NULL, NULL), rss_shim = spawn(rss_args, argv[1], NULL);

        printf("RSS: %.0f KiB without, %.0f KiB with: +%.0f KiB (target <= 1024 KiB)\n", rss_plain,
               rss_shim, rss_shim - rss_plain);
        unlink(compiled);

        if (argc == 4) {
                int fd = mkstemp(source);
                bool written = fd >= 0 && write(fd, policy_text, strlen(policy_text)) ==
                                                 (ssize_t)strlen(policy_text);

                if (fd >= 0)
                        close(fd);
                if (written)
                        bench_cgroup(self, argv[2], source, argv[3]);
                unlink(source);
                bench_landlock(argv[2], argv[3]);
        }
        return 0;
}
