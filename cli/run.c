/* SPDX-License-Identifier: MIT */
/* portfence run: start a command with libportfence.so preloaded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "host.h"
#ifdef PF_HAVE_BPF
#include "loader.h"
#endif

static void run_help(FILE *f)
{
        fprintf(f, "usage: portfence run [-c FILE] [-v] [--landlock] -- CMD [ARGS...]\n\n"
                   "Validate the policy, then run CMD with libportfence.so preloaded: its guarded\n"
                   "binds are refused or moved as the policy says, connects to moved local\n"
                   "servers follow them. -v logs every decision (level debug). --landlock (or\n"
                   "the policy's landlock = true) also restricts CMD and its children with\n"
                   "Landlock to binding the TCP ports the policy lets a server take: what the\n"
                   "shim cannot see (static and Go binaries, raw system calls, io_uring) gets\n"
                   "EACCES for the rest, a remapped port included. As root, with the policy's\n"
                   "steer = true, new TCP connections to the port a moved server asked for reach\n"
                   "it from anywhere (other hosts, namespaces, unwrapped programs) while CMD or\n"
                   "a child of it runs. The exit status is CMD's own.\n");
}

/* The installed shim of this build's own library directory (its
 * architecture's), or, for the very binary the build tree holds, the shim
 * built beside it: an installed command never looks anywhere else. */
static int find_shim(char *out, size_t size)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
                self[n] = '\0';
                if (strcmp(self, PF_BUILD_DIR "/cli/portfence") == 0) {
                        snprintf(out, size, "%s", PF_BUILD_DIR "/preload/libportfence.so");
                        return access(out, R_OK) == 0 ? 0 : -ENOENT;
                }
        }
        snprintf(out, size, "%s/portfence/libportfence.so", PF_LIBDIR);
        return access(out, R_OK) == 0 ? 0 : -ENOENT;
}

/* The run cache: $XDG_RUNTIME_DIR/portfence, else root's /run/portfence
 * (where no other user can make the name first), else /tmp/portfence-UID;
 * opened once (no symlink followed) and checked on its descriptor: a
 * directory of this user that no one else can write. Everything in it is
 * reached through that descriptor, so no one can swap a directory under our
 * feet. A descriptor, or -1 after saying what is wrong and what to do. */
static int open_cache_dir(const char *command, char *path, size_t size)
{
        const char *runtime = getenv("XDG_RUNTIME_DIR");
        struct stat st;
        int fd;

        if (runtime && *runtime == '/')
                snprintf(path, size, "%s/portfence", runtime);
        else if (getuid() == 0)
                snprintf(path, size, "/run/portfence");
        else
                snprintf(path, size, "/tmp/portfence-%u", (unsigned)getuid());
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
                pf_error(command, "cannot create the cache directory '%s': %s", path, strerror(errno));
                return -1;
        }
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                pf_error(command, "cannot use the cache directory '%s': %s", path,
                         errno == ELOOP || errno == ENOTDIR ? "it is not a directory (a symbolic link?)"
                                                            : strerror(errno));
                return -1;
        }
        if (fstat(fd, &st) < 0 || !pf_host_trusted(&st, S_IFDIR, getuid(), false, 0022)) {
                if (st.st_uid != getuid())
                        pf_error(command, "the cache directory '%s' belongs to uid %u, not to you (uid %u): "
                                 "someone made it before you; remove it (as its owner or root) or set "
                                 "XDG_RUNTIME_DIR to a directory of yours", path, (unsigned)st.st_uid,
                                 (unsigned)getuid());
                else
                        pf_error(command, "the cache directory '%s' can be written by others (mode %04o): "
                                 "chmod 700 it", path, (unsigned)(st.st_mode & 07777));
                close(fd);
                return -1;
        }
        return fd;
}

#define CACHE_KEEP 8            /* compiled policies kept however old */
#define CACHE_MIN_AGE 60        /* seconds: a file just written may not be mapped yet */

/* Does a process of ours map dir/name now? /proc/PID/maps of every process
 * we may read. */
static bool mapped_by_anyone(const char *dir, const char *name)
{
        char want[PATH_MAX + 300], line[PATH_MAX + 256], maps[300];
        DIR *proc = opendir("/proc");
        struct dirent *e;
        bool found = false;

        snprintf(want, sizeof(want), " %s/%s\n", dir, name);
        while (proc && !found && (e = readdir(proc))) {
                FILE *f;

                if (e->d_name[0] < '0' || e->d_name[0] > '9')
                        continue;
                snprintf(maps, sizeof(maps), "/proc/%s/maps", e->d_name);
                if (!(f = fopen(maps, "re")))
                        continue;
                while (!found && fgets(line, sizeof(line), f)) {
                        size_t len = strlen(line), want_len = strlen(want);

                        found = len >= want_len && strcmp(line + len - want_len, want) == 0;
                }
                fclose(f);
        }
        if (proc)
                closedir(proc);
        return found;
}

/* Keep the cache bounded: past CACHE_KEEP compiled policies, remove those
 * (and their moves files) that no live process maps and that were not
 * written or used in the last CACHE_MIN_AGE seconds. */
static void prune_cache(int dirfd, const char *dir)
{
        int list_fd = dup(dirfd);
        DIR *d = list_fd >= 0 ? fdopendir(list_fd) : NULL;
        unsigned compiled = 0;
        struct dirent *e;
        time_t now = time(NULL);

        while (d && (e = readdir(d)))
                compiled += strlen(e->d_name) == 20 && strcmp(e->d_name + 16, ".pfc") == 0;
        if (!d || compiled <= CACHE_KEEP) {
                if (d)
                        closedir(d);
                else if (list_fd >= 0)
                        close(list_fd);
                return;
        }
        rewinddir(d);
        while ((e = readdir(d))) {
                size_t len = strlen(e->d_name);
                bool pfc = len == 20 && strcmp(e->d_name + 16, ".pfc") == 0;
                bool moves = len == 22 && strcmp(e->d_name + 16, ".moves") == 0;
                struct stat st;

                if ((!pfc && !moves) || fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    now - st.st_mtime < CACHE_MIN_AGE || mapped_by_anyone(dir, e->d_name))
                        continue;
                unlinkat(dirfd, e->d_name, 0);
        }
        closedir(d);
}

/* Write the compiled policy where the shim maps it from, named by its
 * content (the hash of the compiled block) so that one policy is written
 * once, and used again. */
static int save_compiled(const char *command, const struct pf_policy *policy, char *out, size_t size)
{
        char dir[PATH_MAX], name[32];
        const struct pf_policy *existing;
        int dirfd = open_cache_dir(command, dir, sizeof(dir)), fd, r = 0;

        if (dirfd < 0)
                return -EPERM;
        snprintf(name, sizeof(name), "%016llx.pfc", (unsigned long long)pf_policy_hash(policy));
        if (snprintf(out, size, "%s/%s", dir, name) >= (int)size) {
                pf_error(command, "cannot use the cache directory '%s': %s", dir, strerror(ENAMETOOLONG));
                close(dirfd);
                return -ENAMETOOLONG;
        }
        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && pf_policy_map_fd(fd, &existing) == 0) {
                r = pf_policy_hash(existing) == pf_policy_hash(policy) ? 1 : 0;
                pf_policy_unmap(existing);
        }
        if (fd >= 0 && r == 1)
                futimens(fd, NULL);     /* used now: not pruned for a while */
        if (fd >= 0)
                close(fd);
        r = r == 1 ? 0 : pf_policy_save_at(policy, dirfd, name);
        if (r < 0)
                pf_error(command, "cannot write '%s': %s", out, strerror(-r));
        else
                prune_cache(dirfd, dir);
        close(dirfd);
        return r;
}

static bool is_sanitizer_runtime(const char *entry, size_t len)
{
        const char *base = memrchr(entry, '/', len);

        base = base ? base + 1 : entry;
        return strncmp(base, "libasan", 7) == 0 || strncmp(base, "libclang_rt.asan", 16) == 0;
}

/* The shim first in LD_PRELOAD, every existing entry kept after it; only a
 * sanitizer runtime, which must come first, stays before it. */
static char *preload_list(const char *shim)
{
        const char *old = getenv("LD_PRELOAD");
        size_t first;
        char *list;
        int n;

        if (!old || !*old)
                return strdup(shim);
        first = strcspn(old, ": ");
        if (!is_sanitizer_runtime(old, first))
                n = asprintf(&list, "%s:%s", shim, old);
        else if (!old[first])
                n = asprintf(&list, "%s:%s", old, shim);
        else
                n = asprintf(&list, "%.*s:%s:%s", (int)first, old, shim, old + first + 1);
        return n < 0 ? NULL : list;
}

int pf_run_environment(const char *command, const struct pf_policy *policy, char *cache,
                       size_t cache_size)
{
        char shim[PATH_MAX], compiled[PATH_MAX], source[PATH_MAX];
        char *preload, *slash;

        if (find_shim(shim, sizeof(shim)) < 0) {
                pf_error(command, "cannot find the shim '%s': %s", shim, strerror(ENOENT));
                return PF_EXIT_FAILURE;
        }
        if (save_compiled(command, policy, compiled, sizeof(compiled)) < 0)
                return PF_EXIT_FAILURE;
        pf_cli_policy_source(policy, source, sizeof(source));
        preload = preload_list(shim);
        if (!preload || setenv("PORTFENCE_POLICY", compiled, 1) < 0 ||
            setenv("PORTFENCE_CONFIG", source, 1) < 0 ||
            setenv("PORTFENCE_ON_ERROR", pf_policy_on_error(policy) == PF_ON_ERROR_ALLOW ? "allow"
                                                                                      : "refuse", 1) < 0 ||
            setenv("LD_PRELOAD", preload, 1) < 0) {
                free(preload);
                pf_error(command, "%s", strerror(ENOMEM));
                return PF_EXIT_FAILURE;
        }
        free(preload);
        if (cache) {
                slash = strrchr(compiled, '/');
                snprintf(cache, cache_size, "%.*s", (int)(slash - compiled), compiled);
        }
        return PF_EXIT_OK;
}

/* As root, a policy that moves servers has them steered to: the programs'
 * maps and links go to CMD as inherited descriptors, the maps named to the
 * shim in PORTFENCE_STEER ("FD:ID" for each, enum pf_run_map's order).
 * Where the kernel cannot, the moved servers are reached only by the
 * clients the shim runs, which is said. */
static void steer_moved_servers(const struct pf_policy *policy)
{
#ifdef PF_HAVE_BPF
        struct pf_run_steering steering;
        char why[PF_WHY_SIZE], value[128];
        int r;

        unsetenv("PORTFENCE_STEER");    /* only this run's own */
        if (geteuid() != 0 || !pf_policy_steer(policy) || !pf_policy_moves_servers(policy))
                return;
        r = pf_bpf_run_steering(&steering, why);
        if (r < 0) {
                pf_note("run", "steering: %s: clients the shim does not run will not reach moved servers", why);
                return;
        }
        if (r == 1)
                pf_note("run", "steering: %s: clients the shim does not run will not reach moved UDP servers",
                        why);
        value[0] = '\0';
        for (size_t i = 0; i < PF_RUN_MAPS; i++)
                snprintf(value + strlen(value), sizeof(value) - strlen(value), "%s%d:%u", i ? ":" : "",
                         steering.map_fd[i], steering.map_id[i]);
        setenv("PORTFENCE_STEER", value, 1);
        free(steering.link_fds);        /* the links stay open for CMD; only the list goes */
#else
        (void)policy;
        unsetenv("PORTFENCE_STEER");
#endif
}

/* --landlock fails where the kernel cannot; the policy's landlock = true
 * notes it and runs with the shim alone. */
static int restrict_with_landlock(const struct pf_policy *policy, bool asked, bool verbose)
{
        char why[PF_WHY_SIZE];
        unsigned rules;

        if (pf_landlock_restrict(policy, &rules, why) < 0) {
                if (asked) {
                        pf_error("run", "--landlock: %s", why);
                        return PF_EXIT_FAILURE;
                }
                pf_note("run", "landlock = true: %s: the shim alone fences the command", why);
                return PF_EXIT_OK;
        }
        if (verbose)
                pf_note("run", "landlock: %u TCP ports open to binds; any other TCP bind the shim does not "
                        "see (a static or Go binary, a raw system call, io_uring) gets EACCES, a port the "
                        "policy remaps included (Landlock knows no remap); UDP is not covered", rules);
        return PF_EXIT_OK;
}

int pf_cmd_run(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "verbose", no_argument, NULL, 'v' },
                { "landlock", no_argument, NULL, 'L' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *config = NULL, *path;
        char real[PATH_MAX];
        struct pf_policy *policy;
        bool landlock = false, verbose = false;
        int opt, r;

        while ((opt = pf_cli_getopt("run", argc, argv, "+c:vh", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'v':
                        setenv("PORTFENCE_LOG_LEVEL", "debug", 1);
                        verbose = true;
                        break;
                case 'L': landlock = true; break;
                case 'h': run_help(stdout); return PF_EXIT_OK;
                default: run_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                pf_error("run", "no command given (portfence run -- CMD [ARGS...])");
                return PF_EXIT_USAGE;
        }
        /* Named by its real path, one policy compiles to one file however
         * it was named on the command line. */
        path = pf_policy_path(config);
        if (strcmp(path, "-") != 0 && strcmp(path, PF_POLICY_BUILTIN) != 0 && realpath(path, real))
                config = real;
        policy = pf_cli_load_policy("run", config);
        if (!policy)
                return PF_EXIT_USAGE;
        r = pf_run_environment("run", policy, NULL, 0);
        if (r == PF_EXIT_OK)
                steer_moved_servers(policy);
        if (r == PF_EXIT_OK && (landlock || pf_policy_landlock(policy)))
                r = restrict_with_landlock(policy, landlock, verbose);
        pf_policy_free(policy);
        if (r != PF_EXIT_OK)
                return r;
        execvp(argv[optind], argv + optind);
        r = errno;
        pf_error("run", "cannot run '%s': %s", argv[optind], strerror(r));
        return r == ENOENT ? 127 : 126;
}
