/* SPDX-License-Identifier: MIT */
/* What fences say of themselves: status, the memory of their maps, their
 * events. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fence.h"
#include "loader.h"
#include "portfence-api.bpf.h"
#include "tables.h"

/* ---- status ---------------------------------------------------------------------- */

static int read_counters(int fd, uint64_t totals[PF_FENCE_COUNTERS])
{
        int cpus = libbpf_num_possible_cpus();
        uint64_t *values;

        if (cpus <= 0 || !(values = calloc((size_t)cpus, sizeof(*values))))
                return -ENOMEM;
        for (uint32_t k = 0; k < PF_FENCE_COUNTERS; k++) {
                totals[k] = 0;
                if (bpf_map_lookup_elem(fd, &k, values) == 0)
                        for (int c = 0; c < cpus; c++)
                                totals[k] += values[c];
        }
        free(values);
        return 0;
}

static int status_one(const struct pf_cgroup *of, struct pf_fence_status *out, char *why)
{
        struct pf_cgroup cgroup = *of;
        uint64_t id = of->id;
        struct pf_bpf_settings s;
        uint32_t zero = 0, generation = 0;
        int settings = fence_open_pinned(&cgroup, "settings", why);
        int live = fence_open_pinned(&cgroup, "live", why);
        int counters = fence_open_pinned(&cgroup, "counters", why);
        int r = settings < 0 ? settings : live < 0 ? live : counters < 0 ? counters : 0;

        *out = (struct pf_fence_status){ .cgroup_id = id };
        if (r == 0 && bpf_map_lookup_elem(live, &zero, &generation) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the generation of cgroup %llu", (unsigned long long)id);
        out->unfinished = generation & PF_BPF_LIVE_INERT;
        generation &= 1;
        if (r == 0 && bpf_map_lookup_elem(settings, &generation, &s) < 0)
                r = pf_bpf_fail(-errno, why, "cannot read the settings of cgroup %llu", (unsigned long long)id);
        if (r == 0)
                r = read_counters(counters, out->counters);
        if (r == 0) {
                out->defunct = fence_defunct(id);
                out->cgroup[0] = '\0';
                if (!out->defunct)
                        pf_cgroup_path_of_id(id, out->cgroup, sizeof(out->cgroup));
                snprintf(out->policy, sizeof(out->policy), "%s", s.policy_path);
                out->policy_hash = s.policy_hash;
        }
        if (settings >= 0)
                close(settings);
        if (live >= 0)
                close(live);
        if (counters >= 0)
                close(counters);
        return r;
}

/* What an attach killed before its rename left: only its cgroup id is known. */
static struct pf_fence_status unfinished_status(uint64_t id)
{
        return (struct pf_fence_status){ .cgroup_id = id, .unfinished = true, .broken = true };
}

struct status_walk {
        pf_fence_visit visit;
        void *ctx;
};

/* One fence's status for the caller: under the lock no attach or detach is
 * half done, so a fence missing pins is broken (reported among the rest). */
static int report_one(const char *dir, uint64_t id, bool building, void *ctx)
{
        struct status_walk *walk = ctx;
        struct pf_fence_status status;
        char why[PF_WHY_SIZE];

        if (building)
                status = unfinished_status(id);
        else if (!fence_complete(dir) || status_one(&(struct pf_cgroup){ .id = id }, &status, why) < 0)
                status = (struct pf_fence_status){ .cgroup_id = id, .broken = true };
        walk->visit(&status, walk->ctx);
        return 0;
}

int pf_bpf_status(const struct pf_cgroup *only, pf_fence_visit visit, void *ctx, char *why)
{
        struct pf_fence_status status;
        char building[4200];
        int r = 0, lock;

        if (access(PF_BPF_PIN_ROOT, F_OK) < 0 && !only)
                return 0;       /* nothing fenced */
        lock = fence_lock(LOCK_SH, why);
        if (lock < 0)
                return lock;
        if (only) {
                fence_building_dir(only, building, sizeof(building));
                if (!pf_bpf_is_fenced(only) && access(building, F_OK) == 0)
                        status = unfinished_status(only->id);
                else
                        r = status_one(only, &status, why);
                r = r < 0 ? r : visit(&status, ctx);
                close(lock);
                return r;
        }
        fence_each(report_one, &(struct status_walk){ .visit = visit, .ctx = ctx });
        close(lock);
        return r;
}

/* ---- memory ---------------------------------------------------------------------- */

static uint64_t memlock_of(int fd)
{
        char path[64], line[256];
        unsigned long long bytes = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "memlock: %llu", &bytes) == 1)
                        break;
        if (f)
                fclose(f);
        return bytes;
}

static void visit_map(int fd, pf_map_visit visit, void *ctx)
{
        struct bpf_map_info info = { 0 };
        uint32_t len = sizeof(info);

        if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
                visit(info.id, info.name, memlock_of(fd), ctx);
}

int pf_bpf_fence_maps(const struct pf_cgroup *cgroup, pf_map_visit visit, void *ctx, char *why)
{
        for (size_t i = 0; i < fence_map_count; i++) {
                int fd = fence_open_pinned(cgroup, fence_map_names[i], why);
                bool outer = false;

                for (int t = 0; t < TABLES; t++)
                        outer = outer || strcmp(fence_map_names[i], fence_table_maps[t]) == 0;

                if (fd < 0)
                        return fd;
                visit_map(fd, visit, ctx);
                for (uint32_t generation = 0; outer && generation < PF_BPF_GENERATIONS; generation++) {
                        uint32_t id;
                        int inner;

                        if (bpf_map_lookup_elem(fd, &generation, &id) < 0 || (inner = bpf_map_get_fd_by_id(id)) < 0)
                                continue;
                        visit_map(inner, visit, ctx);
                        close(inner);
                }
                close(fd);
        }
        return 0;
}

/* ---- events ---------------------------------------------------------------------- */

static volatile sig_atomic_t stop_events;

static void on_stop(int sig)
{
        (void)sig;
        stop_events = 1;
}

struct event_sink {
        pf_event_visit visit;
        void *ctx;
        bool skip;              /* draining what was decided before we started */
        unsigned left;          /* 0: no limit */
};

static void decode_event(const struct pf_bpf_event *e, struct pf_fence_event *out)
{
        static const char *const hooks[PF_BPF_HOOKS] = { "bind", "connect", "sendmsg" };

        *out = (struct pf_fence_event){
                .cgroup_id = e->cgroup_id, .pid = e->pid,
                .call = e->hook < PF_BPF_HOOKS ? hooks[e->hook] : "?",
                .proto = e->proto == PF_BPF_UDP ? PF_UDP : PF_TCP,
                .action = (enum pf_action)(e->action % PF_BPF_ACTIONS),
                .port = e->port, .target = e->target, .rule = e->rule,
        };
        out->err = out->action == PF_REFUSE ? e->err : 0;
        memcpy(out->comm, e->comm, sizeof(e->comm));
        out->comm[sizeof(e->comm)] = '\0';
        if (e->family == PF_BPF_IPV6)
                pf_addr_set_in6(&out->addr, (const struct in6_addr *)(const void *)e->addr);
        else
                pf_addr_set_in4(&out->addr, (const struct in_addr *)(const void *)e->addr);
}

static int on_event(void *ctx, void *data, size_t size)
{
        struct event_sink *sink = ctx;
        struct pf_fence_event event;

        if (size < sizeof(struct pf_bpf_event) || sink->skip)
                return 0;
        if (stop_events)
                return -ECANCELED;      /* --count reached: leave the rest unread */
        decode_event(data, &event);
        sink->visit(&event, sink->ctx);
        if (sink->left && --sink->left == 0)
                stop_events = 1;
        return 0;
}

/* A ring buffer has one consumer: two readers would each miss what the
 * other took. The second one is refused, by a lock per fence. */
static int claim_events(const struct pf_cgroup *cgroup, char *why)
{
        char path[128];
        int fd;

        snprintf(path, sizeof(path), "/run/portfence-events-%llu.lock", (unsigned long long)cgroup->id);
        fd = fence_open_lock(path, LOCK_EX | LOCK_NB, why);
        if (fd == -EWOULDBLOCK)
                return pf_bpf_fail(-EBUSY, why, "another 'portfence cgroup events' (or 'cgroup learn') reads "
                            "the events of %s: a fence's events go to one reader", cgroup->path[0] ?
                            cgroup->path : "this fence");
        return fd;
}

/* live[PF_BPF_LIVE_READER]: do the programs write events? A reader killed
 * before it says no leaves them writing, as if it read on. */
static int set_reader(const struct pf_cgroup *cgroup, uint32_t reading, char *why)
{
        uint32_t which = PF_BPF_LIVE_READER;
        int fd = fence_open_pinned(cgroup, "live", why), r = 0;

        if (fd < 0)
                return fd;
        if (bpf_map_update_elem(fd, &which, &reading, BPF_ANY) < 0)
                r = pf_bpf_fail(-errno, why, "cannot ask the fence for its events: %s", strerror(errno));
        close(fd);
        return r;
}

int pf_bpf_events(const struct pf_cgroup *cgroup, unsigned count, pf_event_visit visit, void *ctx,
                  char *why)
{
        char ignored[PF_WHY_SIZE];
        struct event_sink sink = { .visit = visit, .ctx = ctx, .skip = true, .left = count };
        struct sigaction sa = { .sa_handler = on_stop };
        struct ring_buffer *rb;
        int claim = claim_events(cgroup, why), fd, r = 0;

        if (claim < 0)
                return claim;
        fd = fence_open_pinned(cgroup, "events", why);
        if (fd < 0) {
                close(claim);
                return fd;
        }
        rb = ring_buffer__new(fd, on_event, &sink, NULL);
        if (!rb) {
                close(fd);
                close(claim);
                return pf_bpf_fail(-errno, why, "cannot read the events: %s", strerror(errno));
        }
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGALRM, &sa, NULL);  /* the caller's alarm(): a --duration */
        ring_buffer__consume(rb);
        sink.skip = false;
        r = set_reader(cgroup, 1, why);
        while (r == 0 && !stop_events) {
                r = ring_buffer__poll(rb, 200);
                if (r == -EINTR || r == -ECANCELED) {
                        r = 0;
                        continue;
                }
                if (r < 0) {
                        r = pf_bpf_fail(r, why, "reading the events: %s", strerror(-r));
                        break;
                }
                r = 0;
        }
        set_reader(cgroup, 0, ignored);
        ring_buffer__free(rb);
        close(fd);
        close(claim);
        return r;
}
