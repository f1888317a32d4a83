/* SPDX-License-Identifier: MIT */
/* A fence's life: its pins, the lock every change holds, attach, reload,
 * detach and prune. Filling its maps is fill.c's; what it reports,
 * report.c's. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "host.h"
#include "loader.h"
#include "portfence-api.bpf.h"
#include "portfence.skel.h"
#include "fence.h"
#include "tables.h"

/* The pinned objects of one fenced cgroup, below PF_BPF_PIN_ROOT/<id>/. */
static const char *const fence_hook_names[] = {
        "bind4", "bind6", "connect4", "connect6", "sendmsg4", "sendmsg6",
        "getsockname4", "getsockname6", "getpeername4", "getpeername6", "recvmsg4", "recvmsg6",
        "post_bind4", "post_bind6", "sock_release", "setsockopt", "sock_ops", "steer_lookup",
};
const char *const fence_map_names[] = {
        "spans", "blocks", "rules", "settings", "live", "events", "counters", "moved", "moved_back", "fenced",
        "host", "peers", "decided", "steer", "steer_netns", "steered_ports",
};
const size_t fence_map_count = COUNT(fence_map_names);
/* The tc programs that steer UDP (steer.bpf.h), linked to each interface
 * of the namespace the attach runs in and pinned as NAME-IFINDEX. */
static const struct {
        const char *name;
        int attach_type;
} fence_wire[] = { { "udp_in", PF_BPF_TCX_INGRESS }, { "udp_out", PF_BPF_TCX_EGRESS } };

/* A pin of one of them: "udp_in-3" (bpffs takes no dot in a name). */
static bool is_wire_pin(const char *pin)
{
        for (size_t i = 0; i < COUNT(fence_wire); i++) {
                size_t n = strlen(fence_wire[i].name);

                if (strncmp(pin, fence_wire[i].name, n) == 0 && pin[n] == '-')
                        return true;
        }
        return false;
}

/* Pins of fences made by older versions, removed with the rest. */
static const char *const fence_old_map_names[] = { "verdicts" };


/* The kernel's numbers mean the policy's enums. */
_Static_assert(PF_BPF_ALLOW == PF_ALLOW && PF_BPF_LOG == PF_LOG && PF_BPF_REFUSE == PF_REFUSE &&
               PF_BPF_REMAP == PF_REMAP, "BPF actions are enum pf_action");
_Static_assert(PF_BPF_TCP == PF_TCP && PF_BPF_UDP == PF_UDP && PF_BPF_PROTOS == PF_PROTO_COUNT,
               "BPF protocols are enum pf_proto");
_Static_assert(PF_BPF_IPV4 == PF_IPV4 && PF_BPF_IPV6 == PF_IPV6, "BPF families are enum pf_family");
_Static_assert(PF_BPF_COUNTERS == PF_FENCE_COUNTERS, "one counter per action, then the others");

static bool verbose_libbpf;

/* libbpf's warnings are shown; its chatter (the verifier's log among it)
 * only under -v. Installed once, before any command reaches libbpf. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
        return level == LIBBPF_WARN || verbose_libbpf ? vfprintf(stderr, fmt, ap) : 0;
}

__attribute__((constructor)) static void install_libbpf_print(void)
{
        libbpf_set_print(libbpf_print);
}

void fence_pin_dir(const struct pf_cgroup *cgroup, char *out, size_t size)
{
        snprintf(out, size, "%s/%llu", PF_BPF_PIN_ROOT, (unsigned long long)cgroup->id);
}


/* Where an attach builds the fence before renaming it into fence_pin_dir(). */
void fence_building_dir(const struct pf_cgroup *cgroup, char *out, size_t size)
{
        snprintf(out, size, "%s/" PF_NEW_PREFIX "%llu", PF_BPF_PIN_ROOT, (unsigned long long)cgroup->id);
}

/* bpffs at /sys/fs/bpf, mounted if it is not, but only where the pins
 * outlive this command: a bpffs mounted in a private mount namespace dies
 * with it, and the fence with it. */
int pf_bpf_ready(char *why)
{
        enum pf_ns_place place;
        struct statfs fs;

        if (statfs("/sys/fs/bpf", &fs) == 0 && fs.f_type == BPF_FS_MAGIC)
                return 0;
        place = pf_host_mount_ns("/proc");
        if (place == PF_NS_PRIVATE)
                return pf_bpf_fail(-EPERM, why, "no bpffs at '/sys/fs/bpf' in this mount namespace, which is "
                            "not the host's: a fence pinned in a bpffs mounted here would end with "
                            "the namespace; mount bpffs there in the host's namespace (or run this "
                            "in it)");
        if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0)
                return pf_bpf_fail(-errno, why, "cannot mount bpffs at '/sys/fs/bpf': %s", strerror(errno));
        if (place == PF_NS_HOST)
                return 0;
        snprintf(why, PF_WHY_SIZE, "mounted bpffs at '/sys/fs/bpf', not knowing whether this mount "
                 "namespace is the host's: if it is private, its fences end with it");
        return 1;
}

void fence_close_all(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (fds[i] >= 0)
                        close(fds[i]);
                fds[i] = -1;
        }
}

int fence_open_map(const char *dir, const char *name)
{
        char path[4400];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return bpf_obj_get(path);
}

int fence_each(int (*visit)(const char *dir, uint64_t id, bool building, void *ctx), void *ctx)
{
        DIR *root = opendir(PF_BPF_PIN_ROOT);
        struct dirent *e;
        int r = 0;

        while (root && r == 0 && (e = readdir(root))) {
                bool building = strncmp(e->d_name, PF_NEW_PREFIX, strlen(PF_NEW_PREFIX)) == 0;
                uint64_t id = strtoull(e->d_name + (building ? strlen(PF_NEW_PREFIX) : 0), NULL, 10);
                char dir[4200];

                if (e->d_name[0] == '.' || !id)
                        continue;
                snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, e->d_name);
                r = visit(dir, id, building, ctx);
        }
        if (root)
                closedir(root);
        return r;
}

/* ---- one change at a time ------------------------------------------------- */

static void unpin_all(const char *dir);
static int prune_locked(void (*removed)(uint64_t id, void *ctx), void *ctx);

#define PF_FENCE_LOCK "/run/portfence.lock"

/* Every change of a fence (attach, reload, detach, prune) holds this lock
 * exclusively and a status reads under it shared: two reloads never mix
 * policies, a status never reads half a fence. A descriptor to close, or
 * -1 with the reason in why. */
int fence_open_lock(const char *path, int how, char *why)
{
        struct stat st;
        int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

        if (fd < 0)
                return pf_bpf_fail(-errno, why, "cannot open '%s': %s", path, strerror(errno));
        if (fstat(fd, &st) < 0 || !pf_host_trusted(&st, S_IFREG, 0, false, 0)) {
                close(fd);
                return pf_bpf_fail(-EPERM, why, "'%s' is not root's own lock file", path);
        }
        while (flock(fd, how) < 0) {
                int r = -errno;

                if (r == -EINTR)
                        continue;
                close(fd);
                return r == -EWOULDBLOCK ? r : pf_bpf_fail(r, why, "cannot lock '%s': %s", path, strerror(-r));
        }
        return fd;
}

int fence_lock(int how, char *why)
{
        return fence_open_lock(PF_FENCE_LOCK, how, why);
}

/* The programs skip their nesting check while the host has one fence:
 * after every change of the list of fenced cgroups, under the lock and
 * before a new fence's programs attach, its length is written down. A count
 * left too high (a loader killed in between) only keeps the check. */
static int count_fences(int fenced, int host)
{
        uint32_t which = PF_BPF_HOST_FENCES;
        int32_t count = 0;
        uint64_t key, next;

        for (int r = bpf_map_get_next_key(fenced, NULL, &next); r == 0; r = bpf_map_get_next_key(fenced, &key, &next)) {
                key = next;
                count++;
        }
        return bpf_map_update_elem(host, &which, &count, BPF_ANY) < 0 ? -errno : 0;
}

/* count_fences() with the host maps of the fence in dir. */
static void count_fences_of(const char *dir)
{
        int fds[] = { fence_open_map(dir, "fenced"), fence_open_map(dir, "host") };

        if (fds[0] >= 0 && fds[1] >= 0)
                count_fences(fds[0], fds[1]);
        fence_close_all(fds, 2);
}

/* Has the attach of the fence in dir committed? A fence an attach left
 * before its commit (kill -9) is inert: its programs decide nothing. One
 * whose generation cannot be read is not called uncommitted (status shows
 * it broken). */
static bool fence_committed(const char *dir)
{
        uint32_t which = PF_BPF_LIVE_GENERATION, generation = 0;
        int live = fence_open_map(dir, "live");

        if (live >= 0) {
                bpf_map_lookup_elem(live, &which, &generation);
                close(live);
        }
        return !(generation & PF_BPF_LIVE_INERT);
}

/* The host's list of fenced cgroups names exactly the committed fences: an
 * attach that died after registering its cgroup must not leave it there (a
 * fence above would leave that cgroup's calls alone), one that died between
 * its commit and registering is added (until then a fence above decides
 * too). */
struct scrub {
        int fenced;             /* the host's list, from the first fence that has it */
        char fence[4200];       /* that fence */
};

/* A committed fence missing from the host's list joins it. */
static int register_committed(const char *dir, uint64_t id, bool building, void *ctx)
{
        struct scrub *sc = ctx;

        if (building)
                return 0;
        if (sc->fenced < 0 && (sc->fenced = fence_open_map(dir, "fenced")) >= 0)
                snprintf(sc->fence, sizeof(sc->fence), "%s", dir);
        if (sc->fenced >= 0 && fence_committed(dir) && bpf_map_lookup_elem(sc->fenced, &id, &(uint8_t){ 0 }) < 0)
                bpf_map_update_elem(sc->fenced, &id, &(uint8_t){ 1 }, BPF_ANY);
        return 0;
}

static void scrub_fenced(void)
{
        struct scrub sc = { .fenced = -1 };
        char path[4200];
        uint64_t key, next;
        int fd;

        fence_each(register_committed, &sc);
        fd = sc.fenced;
        for (int r = fd < 0 ? -1 : bpf_map_get_next_key(fd, NULL, &next); r == 0;
             r = bpf_map_get_next_key(fd, &key, &next)) {
                key = next;
                snprintf(path, sizeof(path), "%s/%llu", PF_BPF_PIN_ROOT, (unsigned long long)key);
                if (access(path, F_OK) < 0 || !fence_committed(path))
                        bpf_map_delete_elem(fd, &key);
        }
        if (fd >= 0) {
                close(fd);
                count_fences_of(sc.fence);
        }
}

/* What killed attaches left, found under the lock (no attach is under way):
 * fences still being built (PF_NEW_PREFIX<id>) and fences never committed.
 * Both are inert; removed. */
static int remove_if_abandoned(const char *dir, uint64_t id, bool building, void *ctx)
{
        (void)id;
        (void)ctx;
        if (building || !fence_committed(dir))
                unpin_all(dir);
        return 0;
}

static void remove_abandoned(void)
{
        fence_each(remove_if_abandoned, NULL);
        scrub_fenced();
}

/* Does dir hold every pin of a fence? */
bool fence_complete(const char *dir)
{
        char path[4400];

        for (size_t i = 0; i < COUNT(fence_hook_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fence_hook_names[i]);
                if (access(path, F_OK) < 0)
                        return false;
        }
        for (size_t i = 0; i < COUNT(fence_map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fence_map_names[i]);
                if (access(path, F_OK) < 0)
                        return false;
        }
        return true;
}

/* ---- attach, reload, detach ---------------------------------------------------- */

/* The fence's moved listeners leave the host's steering map: nothing
 * steers to them once their fence is gone. */
static void forget_steering(const char *dir, uint64_t id)
{
        struct pf_bpf_steer_key *keys = calloc(PF_BPF_STEER_MAX, sizeof(*keys)), key;
        int fd = fence_open_map(dir, "steer");
        size_t found = 0;

        /* The fence's keys first, then deleted: a walk of a hash map that
         * deletes as it goes may start over. */
        for (int r = fd < 0 || !keys ? -1 : bpf_map_get_next_key(fd, NULL, &key);
             r == 0 && found < PF_BPF_STEER_MAX; r = bpf_map_get_next_key(fd, &key, &key))
                if (key.fence == id)
                        keys[found++] = key;
        for (size_t i = 0; i < found; i++)
                bpf_map_delete_elem(fd, &keys[i]);
        free(keys);
        if (fd >= 0)
                close(fd);
}

/* The fence of dir (PIN_ROOT/<id> or PIN_ROOT/new-<id>) leaves the host's
 * list of fenced cgroups. */
static void unregister(const char *dir)
{
        const char *base = strrchr(dir, '/');
        char path[4400];
        uint64_t id;
        int fd;

        base = base ? base + 1 : dir;
        if (strncmp(base, PF_NEW_PREFIX, strlen(PF_NEW_PREFIX)) == 0)
                base += strlen(PF_NEW_PREFIX);
        id = strtoull(base, NULL, 10);
        forget_steering(dir, id);
        snprintf(path, sizeof(path), "%s/fenced", dir);
        fd = bpf_obj_get(path);
        if (fd >= 0) {
                bpf_map_delete_elem(fd, &id);
                close(fd);
                count_fences_of(dir);
        }
}

/* The links of the tc programs, one pin per interface. */
static void unpin_wire(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        char path[4400];

        while (d && (e = readdir(d))) {
                int fd;

                if (!is_wire_pin(e->d_name))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                fd = bpf_obj_get(path);
                if (fd >= 0) {
                        bpf_link_detach(fd);
                        close(fd);
                }
                unlink(path);
        }
        if (d)
                closedir(d);
}

static void unpin_all(const char *dir)
{
        char path[4200];

        unregister(dir);
        unpin_wire(dir);
        for (size_t i = 0; i < COUNT(fence_hook_names); i++) {
                int fd;

                snprintf(path, sizeof(path), "%s/%s", dir, fence_hook_names[i]);
                fd = bpf_obj_get(path);
                if (fd >= 0) {
                        bpf_link_detach(fd);
                        close(fd);
                }
                unlink(path);
        }
        for (size_t i = 0; i < COUNT(fence_map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fence_map_names[i]);
                unlink(path);
        }
        for (size_t i = 0; i < COUNT(fence_old_map_names); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fence_old_map_names[i]);
                unlink(path);
        }
        rmdir(dir);
}

/* The cookie of the network namespace this thread is in, 0 if the kernel
 * cannot tell (before Linux 5.14): then the fence steers nothing. */
static uint64_t netns_cookie(void)
{
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
        if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
                cookie = 0;
        if (fd >= 0)
                close(fd);
        return cookie;
}

/* Steering is for the network namespace the attach runs in: its cookie,
 * written before the programs are linked. */
static int set_steering(struct portfence_bpf *skel, char *why)
{
        uint32_t zero = 0;
        uint64_t cookie = netns_cookie();

        if (bpf_map_update_elem(bpf_map__fd(skel->maps.steer_netns), &zero, &cookie, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot write the steering namespace: %s", strerror(errno));
        return 0;
}

struct wire_pins {
        const char *dir;
        const char *name;
};

static void wire_pin_path(const struct wire_pins *w, unsigned ifindex, char *path, size_t size)
{
        snprintf(path, size, "%s/%s-%u", w->dir, w->name, ifindex);
}

/* An interface the program is not linked to yet. */
static bool wire_unpinned(unsigned ifindex, void *ctx)
{
        char path[4400];

        wire_pin_path(ctx, ifindex, path, sizeof(path));
        return access(path, F_OK) < 0;
}

static int pin_wire_link(int link, unsigned ifindex, void *ctx, char *why)
{
        const struct wire_pins *w = ctx;
        char path[4400];
        int r = 0;

        wire_pin_path(w, ifindex, path, sizeof(path));
        if (bpf_obj_pin(link, path) < 0)
                r = pf_bpf_fail(-errno, why, "cannot pin '%s': %s", path, strerror(errno));
        close(link);
        return r;
}

/* Links the tc program prog to every interface it steers on, if it is one. */
static int attach_wire(struct bpf_program *prog, const char *name, const char *dir, char *why)
{
        for (size_t i = 0; i < COUNT(fence_wire); i++) {
                struct wire_pins pins = { dir, name };

                if (strcmp(name, fence_wire[i].name) == 0)
                        return pf_bpf_link_interfaces(bpf_program__fd(prog), fence_wire[i].attach_type, NULL,
                                                      pin_wire_link, &pins, why);
        }
        return pf_bpf_fail(-EINVAL, why, "no interface for the tc program '%s'", name);
}

/* Every program to its hook: the cgroup's, and the sk_lookup program to
 * the network namespace the attach runs in. */
static struct bpf_link *attach_program(struct bpf_program *prog, int cgroup_fd)
{
        struct bpf_link *link;
        int netns;

        if (bpf_program__type(prog) != BPF_PROG_TYPE_SK_LOOKUP)
                return bpf_program__attach_cgroup(prog, cgroup_fd);
        netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (netns < 0)
                return NULL;
        link = bpf_program__attach_netns(prog, netns);
        close(netns);
        return link;
}

/* live[PF_BPF_LIVE_WIRE]: are the tc programs linked? */
static int set_wire(int live, bool linked, char *why)
{
        uint32_t which = PF_BPF_LIVE_WIRE, value = linked;

        if (bpf_map_update_elem(live, &which, &value, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot write the fence's UDP steering: %s", strerror(errno));
        return 0;
}

/* Every program linked and pinned: a kernel that links no tc programs
 * (before Linux 6.6) leaves UDP unsteered, which live[] says. */
static int attach_and_pin(struct portfence_bpf *skel, int cgroup_fd, const char *dir, char *why)
{
        struct bpf_program *prog;
        struct bpf_map *map;
        char path[4200];
        bool wire = true;

        bpf_object__for_each_program(prog, skel->obj) {
                const char *name = bpf_program__name(prog) + 3;        /* "pf_bind4" */
                struct bpf_link *link;
                int r;

                if (bpf_program__type(prog) == BPF_PROG_TYPE_SCHED_CLS) {
                        r = wire ? attach_wire(prog, name, dir, why) : 0;
                        if (r == -EOPNOTSUPP)
                                wire = false;
                        else if (r < 0)
                                return r;
                        continue;
                }
                link = attach_program(prog, cgroup_fd);
                if (!link)
                        return pf_bpf_fail(-errno, why, "cannot attach '%s': %s", name, strerror(errno));
                r = snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path) ?
                    bpf_link__pin(link, path) : -ENAMETOOLONG;
                bpf_link__disconnect(link);     /* the pin keeps it attached */
                bpf_link__destroy(link);
                if (r < 0)
                        return pf_bpf_fail(r, why, "cannot pin '%s': %s", path, strerror(-r));
        }
        bpf_object__for_each_map(map, skel->obj) {
                const char *name = bpf_map__name(map);
                int r;

                if (strcmp(name, "socks") == 0 || strchr(name, '.'))    /* per socket; .rodata */
                        continue;
                r = snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path) ?
                    bpf_map__pin(map, path) : -ENAMETOOLONG;
                if (r < 0)
                        return pf_bpf_fail(r, why, "cannot pin '%s': %s", path, strerror(-r));
        }
        return set_wire(bpf_map__fd(skel->maps.live), wire, why);
}

/* live[PF_BPF_LIVE_GENERATION] = value. */
static int set_live(int live, uint32_t value, char *why)
{
        uint32_t which = PF_BPF_LIVE_GENERATION;

        if (bpf_map_update_elem(live, &which, &value, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot write the fence's generation: %s", strerror(errno));
        return 0;
}

/* id joins the host's list of fenced cgroups, and the count follows. */
static int register_fence(int fenced, int host, uint64_t id, char *why)
{
        int r;

        if (bpf_map_update_elem(fenced, &id, &(uint8_t){ 1 }, BPF_ANY) < 0)
                return pf_bpf_fail(-errno, why, "cannot register the fence: %s", strerror(errno));
        r = count_fences(fenced, host);
        return r < 0 ? pf_bpf_fail(r, why, "cannot count the fences: %s", strerror(-r)) : 0;
}

static int attach_locked(const struct pf_policy *policy, const char *policy_path,
                         const struct pf_cgroup *cgroup, char *why)
{
        struct portfence_bpf *skel = NULL;
        char dir[4200], building[4200];
        int cgroup_fd = -1, r;

        fence_pin_dir(cgroup, dir, sizeof(dir));
        if (access(dir, F_OK) == 0) {
                if (fence_complete(dir))
                        return pf_bpf_fail(-EEXIST, why, "%s is fenced already (portfence cgroup reload or detach)",
                                    cgroup->path);
                unpin_all(dir);         /* half a fence (an older attach that died): made anew */
        }
        fence_building_dir(cgroup, building, sizeof(building));
        if (mkdir(building, 0700) < 0)
                return pf_bpf_fail(-errno, why, "cannot create '%s': %s", building, strerror(errno));
        skel = portfence_bpf__open();
        if (!skel) {
                r = pf_bpf_fail(-errno, why, "cannot open the BPF programs: %s", strerror(errno));
                goto out;
        }
        fence_share_host_map(skel->maps.moved, "moved");
        fence_share_host_map(skel->maps.moved_back, "moved_back");
        fence_share_host_map(skel->maps.fenced, "fenced");
        fence_share_host_map(skel->maps.host, "host");
        fence_share_host_map(skel->maps.peers, "peers");
        fence_share_host_map(skel->maps.decided, "decided");
        fence_share_host_map(skel->maps.steer, "steer");
        fence_share_host_map(skel->maps.steered_ports, "steered_ports");
        r = portfence_bpf__load(skel);
        if (r < 0) {
                r = pf_bpf_fail(r, why, "the kernel refused the BPF programs: %s (a kernel with cgroup "
                         "sock_addr hooks, bpf_set_retval and socket storage is needed; -v shows "
                         "the verifier's log)", strerror(-r));
                goto out;
        }
        /* Filled before attached: the cgroup is never fenced by empty maps;
         * and inert until the commit below: a kill in between leaves
         * programs that decide nothing, never half a fence. */
        r = fence_fill_policy(policy, policy_path, cgroup->id,
                        (int[TABLES]){ bpf_map__fd(skel->maps.spans), bpf_map__fd(skel->maps.blocks),
                                       bpf_map__fd(skel->maps.rules) },
                        bpf_map__fd(skel->maps.settings), 0, why);
        if (r == 0)
                r = set_live(bpf_map__fd(skel->maps.live), PF_BPF_LIVE_INERT, why);
        if (r == 0)
                r = set_steering(skel, why);
        if (r < 0)
                goto out;
        cgroup_fd = open(cgroup->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cgroup_fd < 0) {
                r = pf_bpf_fail(-errno, why, "cannot open '%s': %s", cgroup->path, strerror(errno));
                goto out;
        }
        r = attach_and_pin(skel, cgroup_fd, building, why);
        if (r == 0 && rename(building, dir) < 0)
                r = pf_bpf_fail(-errno, why, "cannot rename '%s': %s", building, strerror(errno));
        if (r < 0)
                goto out;
        /* The commit: from this write on, the fence decides, whole. */
        r = set_live(bpf_map__fd(skel->maps.live), 0, why);
        /* Then a fence above leaves its calls alone: until this line both
         * decide, the inner one first. */
        if (r == 0)
                r = register_fence(bpf_map__fd(skel->maps.fenced), bpf_map__fd(skel->maps.host), cgroup->id, why);
        if (r < 0)
                unpin_all(dir);
out:
        if (r < 0)
                unpin_all(building);
        if (cgroup_fd >= 0)
                close(cgroup_fd);
        portfence_bpf__destroy(skel);
        return r;
}

int pf_bpf_attach(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, bool verbose, char *why)
{
        int lock, r;

        verbose_libbpf = verbose;
        r = pf_bpf_ready(why);
        if (r < 0)
                return r;
        if (mkdir(PF_BPF_PIN_ROOT, 0700) < 0 && errno != EEXIST)
                return pf_bpf_fail(-errno, why, "cannot create '%s': %s", PF_BPF_PIN_ROOT, strerror(errno));
        lock = fence_lock(LOCK_EX, why);
        if (lock < 0)
                return lock;
        remove_abandoned();
        prune_locked(NULL, NULL);       /* cheap: one link read per fence */
        r = attach_locked(policy, policy_path, cgroup, why);
        close(lock);
        return r;
}

int fence_open_pinned(const struct pf_cgroup *cgroup, const char *name, char *why)
{
        char path[4200];
        int fd;

        fence_pin_dir(cgroup, path, sizeof(path));
        if (access(path, F_OK) < 0)
                return pf_bpf_fail(-ENOENT, why, "%s is not fenced by portfence", cgroup->path);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", name);
        fd = bpf_obj_get(path);
        if (fd < 0)
                return pf_bpf_fail(-errno, why, "cannot open '%s': %s", path, strerror(errno));
        return fd;
}

static int reload_locked(const struct pf_policy *policy, const char *policy_path,
                         const struct pf_cgroup *cgroup, char *why)
{
        enum { SETTINGS = TABLES, LIVE, MAPS };       /* the tables' outer maps first */
        int fds[MAPS] = { -1, -1, -1, -1, -1 };
        uint32_t zero = 0, generation = 0, next;
        int r = 0;

        for (int i = 0; i < MAPS && r == 0; i++) {
                const char *name = i < TABLES ? fence_table_maps[i] : i == SETTINGS ? "settings" : "live";

                fds[i] = fence_open_pinned(cgroup, name, why);
                if (fds[i] < 0)
                        r = fds[i];
        }
        if (r == 0 && bpf_map_lookup_elem(fds[LIVE], &zero, &generation) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the live generation: %s", strerror(errno));
        next = (generation & 1) ^ 1;
        if (r == 0)
                r = fence_fill_policy(policy, policy_path, cgroup->id, fds, fds[SETTINGS], next, why);
        /* One 4-byte write switches every map to the new half at once. */
        if (r == 0 && bpf_map_update_elem(fds[LIVE], &zero, &next, BPF_ANY) < 0)
                r = pf_bpf_fail(-errno, why, "cannot switch to the new policy: %s", strerror(errno));
        fence_close_all(fds, MAPS);
        return r;
}

/* The program a pin of the fence in dir links, found by the pin's name
 * prefix ("udp_in"): -1 if none is pinned. */
static int wire_program(const char *dir, const char *name)
{
        size_t n = strlen(name);
        DIR *d = opendir(dir);
        struct dirent *e;
        int prog = -1;

        while (d && prog < 0 && (e = readdir(d))) {
                struct bpf_link_info info = { 0 };
                uint32_t len = sizeof(info);
                char path[4200 + sizeof(e->d_name)];
                int link;

                if (strncmp(e->d_name, name, n) != 0 || e->d_name[n] != '-')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                link = bpf_obj_get(path);
                if (link >= 0 && bpf_obj_get_info_by_fd(link, &info, &len) == 0)
                        prog = bpf_prog_get_fd_by_id(info.prog_id);
                if (link >= 0)
                        close(link);
        }
        if (d)
                closedir(d);
        return prog;
}

/* Interfaces added to the steered namespace since the fence was attached
 * get its UDP programs too, when this runs in that namespace (elsewhere it
 * cannot tell them, and leaves them). */
static int link_new_interfaces(const struct pf_cgroup *cgroup, char *why)
{
        uint64_t steered = 0, here = netns_cookie();
        uint32_t zero = 0;
        char dir[4200];
        int netns, r = 0;

        fence_pin_dir(cgroup, dir, sizeof(dir));
        netns = fence_open_map(dir, "steer_netns");
        if (netns >= 0) {
                bpf_map_lookup_elem(netns, &zero, &steered);
                close(netns);
        }
        if (!steered || steered != here)
                return 0;
        for (size_t i = 0; i < COUNT(fence_wire) && r == 0; i++) {
                struct wire_pins pins = { dir, fence_wire[i].name };
                int prog = wire_program(dir, fence_wire[i].name);

                if (prog < 0)
                        continue;       /* none pinned: a fence of an older version */
                r = pf_bpf_link_interfaces(prog, fence_wire[i].attach_type, wire_unpinned, pin_wire_link, &pins,
                                           why);
                close(prog);
        }
        return r;
}

bool pf_bpf_fence_steers_datagrams(const struct pf_cgroup *cgroup)
{
        uint32_t which = PF_BPF_LIVE_WIRE, wire = 0;
        char dir[4200];
        int live;

        fence_pin_dir(cgroup, dir, sizeof(dir));
        live = fence_open_map(dir, "live");
        if (live >= 0) {
                bpf_map_lookup_elem(live, &which, &wire);
                close(live);
        }
        return wire == 1;
}

bool pf_bpf_attach_unfinished(const struct pf_cgroup *cgroup)
{
        char dir[4200], building[4200];

        fence_pin_dir(cgroup, dir, sizeof(dir));
        fence_building_dir(cgroup, building, sizeof(building));
        return access(building, F_OK) == 0 || (access(dir, F_OK) == 0 && !fence_committed(dir));
}

int pf_bpf_reload(const struct pf_policy *policy, const char *policy_path,
                  const struct pf_cgroup *cgroup, char *why)
{
        int lock = fence_lock(LOCK_EX, why), r;

        if (lock < 0)
                return lock;
        if (pf_bpf_attach_unfinished(cgroup)) {
                close(lock);
                return pf_bpf_fail(-ENOENT, why, "%s: its attach did not finish (portfence cgroup detach, then "
                                   "attach)", cgroup->path);
        }
        remove_abandoned();
        r = reload_locked(policy, policy_path, cgroup, why);
        if (r == 0)
                r = link_new_interfaces(cgroup, why);
        close(lock);
        return r;
}

int pf_bpf_detach(const struct pf_cgroup *cgroup, char *why)
{
        char dir[4200], building[4200], events_lock[128];
        bool fenced, unfinished;
        int lock = fence_lock(LOCK_EX, why), r = 0;

        if (lock < 0)
                return lock;
        fence_pin_dir(cgroup, dir, sizeof(dir));
        fence_building_dir(cgroup, building, sizeof(building));
        fenced = access(dir, F_OK) == 0;
        unfinished = pf_bpf_attach_unfinished(cgroup);
        if (!fenced && !unfinished)
                r = cgroup->path[0] ? pf_bpf_fail(-ENOENT, why, "%s is not fenced by portfence", cgroup->path)
                                    : pf_bpf_fail(-ENOENT, why, "cgroup id %llu is not fenced by portfence",
                                           (unsigned long long)cgroup->id);
        if (r == 0) {
                unpin_all(building);
                unpin_all(dir);
                snprintf(events_lock, sizeof(events_lock), "/run/portfence-events-%llu.lock",
                         (unsigned long long)cgroup->id);
                unlink(events_lock);
        }
        if (r == 0 && (access(dir, F_OK) == 0 || access(building, F_OK) == 0))
                r = pf_bpf_fail(-ENOTEMPTY, why, "%s: could not remove everything", dir);
        remove_abandoned();
        close(lock);
        return r == 0 && unfinished ? 1 : r;
}

/* ---- defunct fences -------------------------------------------------------------- */

/* A fence whose cgroup is gone: the kernel keeps its links (they hold no
 * cgroup any more, cgroup id 0) and its pins until someone removes them. */
bool fence_defunct(uint64_t id)
{
        struct pf_cgroup cgroup = { .id = id };
        struct bpf_link_info info = { 0 };
        uint32_t len = sizeof(info);
        char why[PF_WHY_SIZE];
        int fd = fence_open_pinned(&cgroup, "bind4", why);
        bool defunct;

        if (fd < 0)
                return false;   /* not a whole fence: an attach or detach under way */
        defunct = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
                  info.cgroup.cgroup_id == 0;
        close(fd);
        return defunct;
}

struct prune {
        void (*removed)(uint64_t id, void *ctx);
        void *ctx;
        int count;
};

static int remove_if_defunct(const char *dir, uint64_t id, bool building, void *ctx)
{
        struct prune *pr = ctx;

        if (building || !fence_defunct(id))
                return 0;
        unpin_all(dir);
        if (pr->removed)
                pr->removed(id, pr->ctx);
        pr->count++;
        return 0;
}

static int prune_locked(void (*removed)(uint64_t id, void *ctx), void *ctx)
{
        struct prune pr = { .removed = removed, .ctx = ctx };

        fence_each(remove_if_defunct, &pr);
        return pr.count;
}

int pf_bpf_prune(void (*removed)(uint64_t id, void *ctx), void *ctx, char *why)
{
        int lock = fence_lock(LOCK_EX, why), count;

        if (lock < 0)
                return lock;
        remove_abandoned();
        count = prune_locked(removed, ctx);
        close(lock);
        return count;
}

bool pf_bpf_is_fenced(const struct pf_cgroup *cgroup)
{
        char dir[4200];

        fence_pin_dir(cgroup, dir, sizeof(dir));
        return access(dir, F_OK) == 0;
}

int pf_bpf_fencing_ancestor(const struct pf_cgroup *cgroup, struct pf_cgroup *ancestor)
{
        struct pf_cgroup below = *cgroup;

        while (pf_cgroup_parent(&below, ancestor) == 0) {
                if (pf_bpf_is_fenced(ancestor))
                        return 0;
                below = *ancestor;
        }
        return -ENOENT;
}
