/* SPDX-License-Identifier: MIT */
/* cgroup status --probe: a short-lived process placed in the cgroup binds a
 * port that the policy of the fence deciding there refuses or moves, and
 * what the kernel did is compared with what the policy says. What status
 * reports is what is pinned; this is whether a bind is decided. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"
#include "loader.h"

#define COMMAND "cgroup status"

/* What a bind in the cgroup did: refused with err, or bound at port. */
struct outcome {
        int err;
        uint16_t port;
};

static int keep_status(const struct pf_fence_status *status, void *ctx)
{
        *(struct pf_fence_status *)ctx = *status;
        return 0;
}

/* The policy the fence of cgroup (its own, or its nearest fenced
 * ancestor's) was made with, read again from the file it names (the hash
 * cannot tell an edit: it covers the file's name as it was given), in
 * *policy; 0, 1
 * when that fence decides nothing (said), or a negative errno and why. */
static int fence_policy(const struct pf_cgroup *cgroup, struct pf_cgroup *fence, struct pf_policy **policy,
                        char *why)
{
        struct pf_fence_status status;
        const char *path;
        int r;

        *fence = *cgroup;
        if (!pf_bpf_is_fenced(cgroup) && pf_bpf_fencing_ancestor(cgroup, fence) < 0) {
                snprintf(why, PF_WHY_SIZE, "%.300s is not fenced by portfence, nor any cgroup above it", cgroup->path);
                return -ENOENT;
        }
        r = pf_bpf_status(fence, keep_status, &status, why);
        if (r < 0)
                return r;
        if (status.unfinished || status.broken) {
                pf_text(stdout, cgroup->path);
                printf(": the fence of ");
                pf_text(stdout, fence->path);
                printf(" is %s: it decides nothing\n", status.unfinished ? "an unfinished attach" : "broken");
                return 1;
        }
        path = status.policy[0] ? status.policy : PF_POLICY_BUILTIN;
        *policy = pf_cli_load_policy(COMMAND, path);
        if (!*policy) {
                snprintf(why, PF_WHY_SIZE, "cannot read the policy of the fence of %.300s", fence->path);
                return -EINVAL;
        }
        return 0;
}

/* A guarded TCP port on 127.0.0.1 that the policy refuses or moves for this
 * command (its comm is "portfence"), free now, and its target too. */
static bool probe_port(const struct pf_policy *policy, struct pf_query *q, struct pf_verdict *v)
{
        const struct pf_portset *guarded = pf_policy_guarded(policy, PF_TCP);

        *q = (struct pf_query){ .proto = PF_TCP, .program = "portfence",
                                .addr = { .family = PF_IPV4, .v4 = { htonl(INADDR_LOOPBACK) } } };
        for (unsigned port = 1; port <= PF_PORT_MAX; port++) {
                if (!pf_portset_has(guarded, port))
                        continue;
                q->port = (uint16_t)port;
                pf_decide(policy, q, v);
                if ((v->action == PF_REFUSE || v->action == PF_REMAP) && pf_host_port_free(port, PF_TCP) &&
                    (v->action != PF_REMAP || pf_host_port_free(v->target, PF_TCP)))
                        return true;
        }
        return false;
}

/* In the child: which of port and target the socket fd listens at (0: neither). */
static uint16_t where_bound(int fd, const struct pf_query *q, uint16_t target)
{
        uint16_t ports[2] = { q->port, target };
        uint64_t inodes[2] = { 0 };
        struct stat st;
        int diag = pf_host_diag_open(), found;

        if (diag < 0 || fstat(fd, &st) < 0 || listen(fd, 1) < 0)
                return 0;
        found = pf_host_sockets_at(diag, PF_TCP, &q->addr, ports, target ? 2 : 1, inodes);
        close(diag);
        /* The target first: a steered socket is found at the port asked for too. */
        for (int i = 1; i >= 0 && found > 0; i--)
                if ((found & (1 << i)) && inodes[i] == st.st_ino)
                        return ports[i];
        return 0;
}

/* The child: into the cgroup, then one bind; the outcome down the pipe. */
static void probe_child(const struct pf_cgroup *cgroup, const struct pf_query *q, uint16_t target, int out)
{
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(q->port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct outcome o = { .err = EIO };
        char procs[4200];
        int fd, procs_fd;

        snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup->path);
        procs_fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (procs_fd >= 0 && write(procs_fd, "0", 1) == 1 &&
            (fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
                o.err = bind(fd, (struct sockaddr *)&in, sizeof(in)) < 0 ? errno : 0;
                if (o.err == 0)
                        o.port = where_bound(fd, q, target);
        }
        if (write(out, &o, sizeof(o)) != sizeof(o))
                _exit(1);
        _exit(0);
}

static int bind_in(const struct pf_cgroup *cgroup, const struct pf_query *q, uint16_t target, struct outcome *o)
{
        int pipefd[2], status;
        pid_t pid;
        ssize_t n;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                close(pipefd[0]);
                close(pipefd[1]);
                return -errno;
        }
        if (pid == 0) {
                close(pipefd[0]);
                probe_child(cgroup, q, target, pipefd[1]);
        }
        close(pipefd[1]);
        n = read(pipefd[0], o, sizeof(*o));
        close(pipefd[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        return n == sizeof(*o) ? 0 : -EIO;
}

int pf_cgroup_probe(const struct pf_cgroup *cgroup, char *why)
{
        struct pf_policy *policy = NULL;
        struct pf_cgroup fence;
        struct pf_query q;
        struct pf_verdict v;
        struct outcome o;
        bool found, as_said;
        int r = fence_policy(cgroup, &fence, &policy, why);

        if (r != 0)
                return r;
        found = probe_port(policy, &q, &v);
        pf_policy_free(policy);
        if (!found) {
                snprintf(why, PF_WHY_SIZE, "the policy of the fence of %.300s refuses and moves no guarded TCP "
                         "port that is free now: nothing to probe", fence.path);
                return -EINVAL;
        }
        r = bind_in(cgroup, &q, v.action == PF_REMAP ? v.target : 0, &o);
        if (r == 0 && o.err == EIO)
                r = -EIO;
        if (r < 0) {
                snprintf(why, PF_WHY_SIZE, "cannot probe %.300s: %s", cgroup->path, strerror(-r));
                return r;
        }
        as_said = v.action == PF_REFUSE ? o.err == v.err : o.err == 0 && o.port == v.target;
        pf_text(stdout, cgroup->path);
        printf(": probe bind 127.0.0.1:%u/tcp: ", q.port);
        if (o.err)
                printf("refused %s", pf_errno_name(o.err));
        else
                printf("bound at %u", o.port);
        if (v.action == PF_REFUSE)
                printf(" (policy: refuse %s", pf_errno_name(v.err));
        else
                printf(" (policy: remap -> %u", v.target);
        printf(", fence of ");
        pf_text(stdout, fence.path);
        printf("): %s\n", as_said ? "decided as the policy says" : "NOT decided as the policy says");
        return !as_said;
}
