/* SPDX-License-Identifier: MIT */
/* portfence oci-hook: a container fenced before its first instruction. The
 * runtime runs it at createRuntime (its init process waits in the cgroup,
 * the container's program has not started) and at poststop. Whatever goes
 * wrong at createRuntime exits non-zero, and the runtime then refuses to
 * start the container: none runs unfenced. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"
#include "loader.h"
#include "ocistate.h"

#define COMMAND "oci-hook"
#define STATE_MAX (1u << 20)

struct hook_args {
        const char *config;             /* the policy without the annotation */
        const char *policy_dir;         /* where annotated policies are */
        const char *state_dir;          /* container id -> fenced cgroup id */
};

static void hook_help(FILE *f)
{
        fprintf(f, "usage: portfence oci-hook [-c FILE] [--policy-dir DIR] [--state-dir DIR]\n\n"
                   "An OCI runtime hook (createRuntime and poststop): reads the runtime state\n"
                   "(JSON) on standard input; at createRuntime fences the container's cgroup\n"
                   "before its program starts, at poststop removes that fence.\n"
                   "The policy is FILE (default %s) unless the annotation\n"
                   "%s=NAME names DIR/NAME.conf (default DIR %s);\n"
                   "NAME 'default' means FILE. A state, policy or fence that fails makes the\n"
                   "hook fail, and the runtime refuses to start the container.\n",
                PF_POLICY_SYSTEM, PF_OCI_ANNOTATION_POLICY, PF_OCI_POLICY_DIR);
}

/* The state on standard input, whole (a runtime writes it and closes). */
static int read_state(struct pf_oci_state *state)
{
        char *text, why[PF_WHY_SIZE];
        ssize_t n = pf_cli_read_stdin(&text, STATE_MAX);
        int r;

        if (n < 0) {
                pf_error(COMMAND, "cannot read the OCI state on standard input: %s",
                         n == -EFBIG ? "longer than 1 MiB" : strerror((int)-n));
                return -1;
        }
        r = pf_oci_state_parse(text, (size_t)n, state, why);
        free(text);
        if (r < 0)
                pf_error(COMMAND, "%s", why);
        return r < 0 ? -1 : 0;
}

/* The container's record file name: its id, which runtimes keep to
 * [A-Za-z0-9_.-]; anything else is refused rather than used as a path. */
static int check_id(const char *id)
{
        if (!*id || id[0] == '.' || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                "0123456789_.-") != strlen(id)) {
                pf_error_quoting(COMMAND, "bad OCI state: container id ", id, " is not a name");
                return -1;
        }
        return 0;
}

/* The state directory, made by root for root (0700) if missing, opened
 * without following a link and checked on the descriptor. */
static int open_state_dir(const char *dir)
{
        struct stat st;
        int fd;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                pf_error(COMMAND, "cannot create '%s': %s", dir, strerror(errno));
                return -1;
        }
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                pf_error(COMMAND, "cannot open '%s': %s", dir, strerror(errno));
                return -1;
        }
        if (fstat(fd, &st) < 0 || !pf_host_trusted(&st, S_IFDIR, 0, false, 0022)) {
                pf_error(COMMAND, "cannot use '%s': not a directory only root can write", dir);
                close(fd);
                return -1;
        }
        return fd;
}

/* The policy file: the annotation's NAME in the policy directory, or the
 * default. */
static int policy_path(const struct hook_args *a, const struct pf_oci_state *state, char *out,
                       size_t size)
{
        char why[PF_WHY_SIZE];

        if (!state->has_policy || strcmp(state->policy, "default") == 0) {
                snprintf(out, size, "%s", a->config);
                return 0;
        }
        if (pf_oci_policy_name_check(state->policy, why) < 0) {
                pf_error_quoting(COMMAND, "bad annotation " PF_OCI_ANNOTATION_POLICY "=", state->policy, ": %s",
                                 why);
                return -1;
        }
        if ((size_t)snprintf(out, size, "%s/%s.conf", a->policy_dir, state->policy) >= size) {
                pf_error(COMMAND, "bad --policy-dir '%s': %s", a->policy_dir, strerror(ENAMETOOLONG));
                return -1;
        }
        return 0;
}

/* Remember which cgroup this container's fence is on: poststop comes when
 * the cgroup may be gone, with no pid to find it by. */
static int write_record(int dir, const char *id, uint64_t cgroup_id)
{
        char text[32];
        int fd = openat(dir, id, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", cgroup_id);

        if (fd < 0 || write(fd, text, (size_t)n) != n) {
                pf_error(COMMAND, "cannot record the fence of container %s: %s", id, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        return close(fd);
}

/* The fence steers in the network namespace its attach runs in: the
 * container's (its own, or the host's with --network host). Entered by
 * pidfd where the kernel has one (no path to race), else by /proc. 1 when
 * it is the hook's own (the host's), 0 when another, or a negative errno. */
static int enter_network_of(long pid, char *why)
{
        struct stat before, after;
        char path[64];
        int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0), r;

        if (stat("/proc/thread-self/ns/net", &before) < 0)
                before.st_ino = 0;
        if (fd < 0) {
                snprintf(path, sizeof(path), "/proc/%ld/ns/net", pid);
                fd = open(path, O_RDONLY | O_CLOEXEC);
        }
        if (fd < 0) {
                r = -errno;
                snprintf(why, PF_WHY_SIZE, "cannot open the network namespace of pid %ld: %s", pid,
                         strerror(-r));
                return r;
        }
        r = setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
        if (r < 0)
                snprintf(why, PF_WHY_SIZE, "cannot enter the network namespace of pid %ld: %s", pid,
                         strerror(-r));
        close(fd);
        if (r == 0 && stat("/proc/thread-self/ns/net", &after) == 0)
                r = before.st_ino == after.st_ino && before.st_dev == after.st_dev;
        return r;
}

/* ip_local_reserved_ports is per network namespace, and a container's
 * starts with none: every port the policy gives a server that the
 * container's kernel could hand to a client is reserved there before its
 * first process runs, merged with what is there. A container on the host's
 * network is the administrator's to reserve. Said on stdout (the runtime's
 * log); a failure is a note: the fence holds without it. */
static void reserve_server_ports(const struct pf_policy *policy, const char *id, bool host_network)
{
        struct pf_portset range, reserved, wanted;
        char why[PF_WHY_SIZE], text[256];

        if (host_network) {
                pf_note(COMMAND, "container %.64s shares the host's network namespace: its reserved ports "
                        "are the host's ('portfence export sysctl'), left alone", id);
                return;
        }
        if (pf_host_port_range_read(PF_PROC_PORT_RANGE, &range, why) < 0 ||
            pf_host_reserved_read(PF_PROC_RESERVED, &reserved, why) < 0) {
                pf_note(COMMAND, "container %.64s: no ports reserved: %s", id, why);
                return;
        }
        pf_policy_unreserved_server_ports(policy, &range, &reserved, &wanted);
        if (pf_portset_empty(&wanted))
                return;         /* no server port of the policy is in the container's range */
        pf_portset_union(&reserved, &wanted);
        if (pf_host_reserved_write(PF_PROC_RESERVED, &reserved, why) < 0) {
                pf_note(COMMAND, "container %.64s: no ports reserved: %s", id, why);
                return;
        }
        pf_portset_format(&wanted, text, sizeof(text));
        printf("container %.64s: reserved %s%s in its network namespace (ip_local_reserved_ports)\n", id,
               text, pf_portset_format(&wanted, NULL, 0) >= sizeof(text) ? "..." : "");
}

static int hook_create(const struct hook_args *a, const struct pf_oci_state *state)
{
        struct pf_cgroup cgroup;
        struct pf_policy *policy;
        char path[PATH_MAX], source[PATH_MAX], target[32], why[PF_WHY_SIZE];
        int dir, r, host_network = 0;

        if (state->pid <= 0) {
                pf_error(COMMAND, "bad OCI state: no 'pid' at status '%s': no cgroup to fence",
                         state->status);
                return PF_EXIT_USAGE;
        }
        if (policy_path(a, state, path, sizeof(path)) < 0)
                return PF_EXIT_USAGE;
        policy = pf_cli_load_policy(COMMAND, path);
        if (!policy)
                return PF_EXIT_USAGE;
        pf_cli_policy_source(policy, source, sizeof(source));
        snprintf(target, sizeof(target), "pid:%ld", state->pid);
        r = pf_cgroup_resolve(target, &cgroup, why);
        if (r == 0 && cgroup.root) {
                snprintf(why, PF_WHY_SIZE, "container %.64s runs in the root cgroup: refusing to "
                         "fence the whole host", state->id);
                r = -EINVAL;
        }
        dir = r == 0 ? open_state_dir(a->state_dir) : -1;
        if (r == 0 && dir < 0) {
                pf_policy_free(policy);
                return PF_EXIT_FAILURE;
        }
        if (r == 0 && pf_cli_bpffs_ready(COMMAND) < 0) {
                pf_policy_free(policy);
                close(dir);
                return PF_EXIT_FAILURE;
        }
        if (r == 0) {
                host_network = enter_network_of(state->pid, why);
                r = host_network < 0 ? host_network : 0;
        }
        if (r == 0)
                r = pf_bpf_attach(policy, source, &cgroup, false, why);
        if (r == 0)
                reserve_server_ports(policy, state->id, host_network == 1);
        pf_policy_free(policy);
        if (r < 0) {
                pf_error(COMMAND, "%s", why);
                if (dir >= 0)
                        close(dir);
                return PF_EXIT_FAILURE;
        }
        if (write_record(dir, state->id, cgroup.id) < 0) {
                pf_bpf_detach(&cgroup, why);    /* fail closed, and leave nothing */
                close(dir);
                return PF_EXIT_FAILURE;
        }
        close(dir);
        printf("%s: fenced with %s\n", cgroup.path, source[0] ? source : PF_POLICY_BUILTIN);
        return PF_EXIT_OK;
}

/* The record's cgroup id, or 0 when there is none (the container was not
 * fenced by this hook). */
static int read_record(int dir, const char *id, uint64_t *cgroup_id)
{
        char text[32] = "", *end;
        int fd = openat(dir, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        ssize_t n;

        *cgroup_id = 0;
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
                return n < 0 ? -errno : -EINVAL;
        text[n] = '\0';
        *cgroup_id = strtoull(text, &end, 10);
        return *end == '\n' && *cgroup_id ? 0 : -EINVAL;
}

static int hook_stop(const struct hook_args *a, const struct pf_oci_state *state)
{
        struct pf_cgroup cgroup = { .root = false };
        char why[PF_WHY_SIZE];
        int dir = open_state_dir(a->state_dir), r;

        if (dir < 0)
                return PF_EXIT_FAILURE;
        r = read_record(dir, state->id, &cgroup.id);
        if (r == 0 && cgroup.id) {
                r = pf_bpf_detach(&cgroup, why);
                if (r == -ENOENT)       /* removed already (cgroup prune, a detach) */
                        r = 0;
                if (r < 0)
                        pf_error(COMMAND, "%s", why);
                else
                        unlinkat(dir, state->id, 0);
        } else if (r < 0) {
                pf_error(COMMAND, "cannot read the fence record of container %s: %s", state->id,
                         strerror(-r));
        }
        close(dir);
        return r < 0 ? PF_EXIT_FAILURE : PF_EXIT_OK;
}

int pf_cmd_oci_hook(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "policy-dir", required_argument, NULL, 'p' },
                { "state-dir", required_argument, NULL, 's' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct hook_args a = { PF_POLICY_SYSTEM, PF_OCI_POLICY_DIR, PF_OCI_STATE_DIR };
        struct pf_oci_state state;
        int opt;

        while ((opt = pf_cli_getopt(COMMAND, argc, argv, "c:h", options)) != -1) {
                switch (opt) {
                case 'c': a.config = optarg; break;
                case 'p': a.policy_dir = optarg; break;
                case 's': a.state_dir = optarg; break;
                case 'h': hook_help(stdout); return PF_EXIT_OK;
                default: hook_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind < argc) {
                pf_error(COMMAND, "unexpected argument '%s'", argv[optind]);
                return PF_EXIT_USAGE;
        }
        if (geteuid() != 0) {
                pf_error(COMMAND, "needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)");
                return PF_EXIT_USAGE;
        }
        if (read_state(&state) < 0 || check_id(state.id) < 0)
                return PF_EXIT_USAGE;
        if (strcmp(state.status, "creating") == 0 || strcmp(state.status, "created") == 0)
                return hook_create(&a, &state);
        if (strcmp(state.status, "stopped") == 0)
                return hook_stop(&a, &state);
        pf_error_quoting(COMMAND, "bad OCI state: status ", state.status,
                         ": the hook runs at createRuntime (creating) and poststop (stopped)");
        return PF_EXIT_USAGE;
}
