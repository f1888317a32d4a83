/* SPDX-License-Identifier: MIT */
/* portfence run: start a command with libportfence.so preloaded. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void run_help(FILE *f)
{
        fprintf(f, "usage: portfence run [-c FILE] [-v] -- CMD [ARGS...]\n\n"
                   "Validate the policy, then run CMD with libportfence.so preloaded: its guarded\n"
                   "binds are refused or moved as the policy says, connects to moved local\n"
                   "servers follow them. -v logs every decision (level debug). The exit status\n"
                   "is CMD's own.\n");
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

/* A directory only this user can write: $XDG_RUNTIME_DIR/portfence or
 * /tmp/portfence-UID. Refuses one that someone else owns. */
static int cache_dir(char *out, size_t size)
{
        const char *runtime = getenv("XDG_RUNTIME_DIR");
        struct stat st;

        if (runtime && *runtime == '/')
                snprintf(out, size, "%s/portfence", runtime);
        else
                snprintf(out, size, "/tmp/portfence-%u", (unsigned)getuid());
        if (mkdir(out, 0700) < 0 && errno != EEXIST)
                return -errno;
        if (lstat(out, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 0022))
                return -EPERM;
        return 0;
}

/* Write the compiled policy where the shim maps it from, named by its hash
 * so that one policy is written once. */
static int save_compiled(const char *command, const struct pf_policy *policy, char *out, size_t size)
{
        char dir[PATH_MAX];
        const struct pf_policy *existing;
        int r = cache_dir(dir, sizeof(dir));

        if (r < 0) {
                pf_error(command, "cannot use the cache directory '%s': %s", dir,
                         r == -EPERM ? "it must be a directory of this user that no one else can write"
                                     : strerror(-r));
                return r;
        }
        if (snprintf(out, size, "%s/%016llx.pfc", dir,
                     (unsigned long long)pf_policy_hash(policy)) >= (int)size) {
                pf_error(command, "cannot use the cache directory '%s': %s", dir, strerror(ENAMETOOLONG));
                return -ENAMETOOLONG;
        }
        if (pf_policy_map(out, &existing) == 0) {
                bool same = pf_policy_hash(existing) == pf_policy_hash(policy);

                pf_policy_unmap(existing);
                if (same)
                        return 0;
        }
        r = pf_policy_save(policy, out);
        if (r < 0)
                pf_error(command, "cannot write '%s': %s", out, strerror(-r));
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

int pf_cmd_run(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *config = NULL;
        struct pf_policy *policy;
        int opt, r;

        while ((opt = pf_cli_getopt("run", argc, argv, "+c:vh", options)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'v': setenv("PORTFENCE_LOG_LEVEL", "debug", 1); break;
                case 'h': run_help(stdout); return PF_EXIT_OK;
                default: run_help(stderr); return PF_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                pf_error("run", "no command given (portfence run -- CMD [ARGS...])");
                return PF_EXIT_USAGE;
        }
        policy = pf_cli_load_policy("run", config);
        if (!policy)
                return PF_EXIT_USAGE;
        r = pf_run_environment("run", policy, NULL, 0);
        pf_policy_free(policy);
        if (r != PF_EXIT_OK)
                return r;
        execvp(argv[optind], argv + optind);
        r = errno;
        pf_error("run", "cannot run '%s': %s", argv[optind], strerror(r));
        return r == ENOENT ? 127 : 126;
}
