/* SPDX-License-Identifier: MIT */
/* Finding cgroup v2, for every part of portfence: its mount from
 * /proc/self/mountinfo (hybrid hosts mount it at /sys/fs/cgroup/unified, pure
 * v2 hosts at /sys/fs/cgroup), and the cgroup a user names. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cgroup.h"

/* Fields 5 (mount point) and, after " - ", the type and super options. */
static bool mountinfo_line(char *line, char **point, char **type, char **options)
{
        char *dash = strstr(line, " - "), *save = NULL, *field = strtok_r(line, " ", &save);

        for (int i = 1; field && i < 5; i++)
                field = strtok_r(NULL, " ", &save);
        if (!field || !dash)
                return false;
        *point = field;
        save = NULL;
        *type = strtok_r(dash + 3, " ", &save);
        strtok_r(NULL, " ", &save);     /* source */
        *options = strtok_r(NULL, " \n", &save);
        return *type && *options;
}

int pf_cgroup_mount(char *out, size_t size, char *why)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], *point, *type, *options;
        int r = -ENOENT;

        if (!f) {
                r = -errno;
                snprintf(why, PF_WHY_SIZE, "/proc/self/mountinfo: %s", strerror(-r));
                return r;
        }
        while (r < 0 && fgets(line, sizeof(line), f)) {
                if (mountinfo_line(line, &point, &type, &options) && strcmp(type, "cgroup2") == 0 &&
                    (size_t)snprintf(out, size, "%s", point) < size)
                        r = 0;
        }
        fclose(f);
        if (r < 0)
                snprintf(why, PF_WHY_SIZE, "no cgroup v2 mount in /proc/self/mountinfo");
        return r;
}

bool pf_cgroup_v1_net_controllers(void)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], *point, *type, *options;
        bool found = false;

        while (f && !found && fgets(line, sizeof(line), f))
                found = mountinfo_line(line, &point, &type, &options) &&
                        strcmp(type, "cgroup") == 0 &&
                        (strstr(options, "net_cls") || strstr(options, "net_prio"));
        if (f)
                fclose(f);
        return found;
}

/* "0::/some/path" from /proc/PID/cgroup. */
int pf_cgroup_of_pid(const char *pid, char *out, size_t size, char *why)
{
        char path[64], line[4096];
        FILE *f;
        int r = -ENOENT;

        if (strcmp(pid, "self") != 0 && (!*pid || strspn(pid, "0123456789") != strlen(pid))) {
                snprintf(why, PF_WHY_SIZE, "bad cgroup 'pid:%s': not a process id", pid);
                return -EINVAL;
        }
        snprintf(path, sizeof(path), "/proc/%s/cgroup", pid);
        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                snprintf(why, PF_WHY_SIZE, "cannot find the cgroup of 'pid:%s': %s", pid,
                         r == -ENOENT ? "no such process" : strerror(-r));
                return r;
        }
        while (r < 0 && fgets(line, sizeof(line), f)) {
                if (strncmp(line, "0::", 3) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        snprintf(out, size, "%s", line + 3);
                        r = 0;
                }
        }
        fclose(f);
        if (r < 0)
                snprintf(why, PF_WHY_SIZE, "cannot find the cgroup of 'pid:%s': in no cgroup v2", pid);
        return r;
}

int pf_cgroup_resolve(const char *arg, struct pf_cgroup *out, char *why)
{
        char mount[4096], below[4096], real[4096];
        struct statfs fs;
        struct stat st;
        size_t len;
        int n, r = pf_cgroup_mount(mount, sizeof(mount), why);

        if (r < 0)
                return r;
        *out = (struct pf_cgroup){ .root = false };
        if (!*arg) {
                snprintf(why, PF_WHY_SIZE, "bad cgroup '': empty (an unset variable?)");
                return -EINVAL;
        }
        if (strncmp(arg, "id:", 3) == 0) {
                char *end;

                errno = 0;
                out->id = strtoull(arg + 3, &end, 10);
                if (!arg[3] || *end || errno || out->id == 0) {
                        snprintf(why, PF_WHY_SIZE, "bad cgroup '%.400s': expected id:NUMBER", arg);
                        return -EINVAL;
                }
                return 0;
        }
        if (strncmp(arg, "pid:", 4) == 0) {
                r = pf_cgroup_of_pid(arg + 4, below, sizeof(below), why);
                if (r < 0)
                        return r;
                /* systemd runs the control processes (ExecStartPre=...) of a
                 * delegated unit in its .control subgroup: the unit is above. */
                len = strlen(below);
                if (strcmp(arg + 4, "self") == 0 && len >= 9 && strcmp(below + len - 9, "/.control") == 0)
                        below[len - 9] = '\0';
                n = snprintf(out->path, sizeof(out->path), "%s%s", mount, below);
        } else if (arg[0] == '/') {
                n = snprintf(out->path, sizeof(out->path), "%s", arg);
        } else {
                n = snprintf(out->path, sizeof(out->path), "%s/%s", mount, arg);
        }
        if (n >= (int)sizeof(out->path)) {
                snprintf(why, PF_WHY_SIZE, "bad cgroup '%s': %s", arg, strerror(ENAMETOOLONG));
                return -ENAMETOOLONG;
        }
        if (!realpath(out->path, real)) {
                r = -errno;
                snprintf(why, PF_WHY_SIZE, "bad cgroup '%.400s': %s", out->path, strerror(-r));
                return r;
        }
        len = strlen(mount);
        if (statfs(real, &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC || stat(real, &st) < 0 ||
            !S_ISDIR(st.st_mode) || strncmp(real, mount, len) != 0 ||
            (real[len] != '/' && real[len] != '\0')) {
                snprintf(why, PF_WHY_SIZE, "bad cgroup '%s': not a cgroup v2 directory (the v2 mount is %s)", arg, mount);
                return -ENOTDIR;
        }
        snprintf(out->path, sizeof(out->path), "%s", real);
        out->id = st.st_ino;
        out->root = real[len] == '\0';
        return 0;
}

int pf_cgroup_parent(const struct pf_cgroup *cgroup, struct pf_cgroup *parent)
{
        char mount[4096], why[PF_WHY_SIZE];
        struct stat st;
        char *slash;
        size_t len;

        if (!cgroup->path[0] || cgroup->root || pf_cgroup_mount(mount, sizeof(mount), why) < 0)
                return -ENOENT;
        len = strlen(mount);
        snprintf(parent->path, sizeof(parent->path), "%s", cgroup->path);
        slash = strrchr(parent->path, '/');
        if (!slash || (size_t)(slash - parent->path) < len)
                return -ENOENT;
        *slash = '\0';
        if (stat(parent->path, &st) < 0)
                return -errno;
        parent->id = st.st_ino;
        parent->root = strlen(parent->path) == len;
        return 0;
}

/* Depth first below dir (an open descriptor, closed here) for the
 * directory whose inode is id: 1 when found (its path in out), else 0. */
static int find_inode_below(int dir, char *path, size_t len, size_t size, uint64_t id)
{
        DIR *d = fdopendir(dir);
        struct dirent *e;
        int found = 0;

        if (!d) {
                close(dir);
                return 0;
        }
        while (!found && (e = readdir(d))) {
                int below;

                if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                if ((size_t)snprintf(path + len, size - len, "/%s", e->d_name) >= size - len)
                        continue;
                if (e->d_ino == id)
                        found = 1;
                else if ((below = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0)
                        found = find_inode_below(below, path, strlen(path), size, id);
        }
        if (!found)
                path[len] = '\0';
        closedir(d);
        return found;
}

int pf_cgroup_path_of_id(uint64_t id, char *out, size_t size)
{
        char why[PF_WHY_SIZE];
        struct stat st;
        int dir;

        out[0] = '\0';
        if (pf_cgroup_mount(out, size, why) < 0)
                return -ENOENT;
        dir = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir >= 0 && fstat(dir, &st) == 0 && st.st_ino == id) {
                close(dir);
                return 0;       /* the root cgroup */
        }
        if (dir < 0 || !find_inode_below(dir, out, strlen(out), size, id)) {
                out[0] = '\0';
                return -ENOENT;
        }
        return 0;
}

int pf_cgroup_kubepods(char *out, size_t size, char *why)
{
        static const char *const names[] = { "kubepods.slice", "kubepods" };
        char mount[4096], path[4096 + 32];
        struct stat st;
        int found = 0;

        if (pf_cgroup_mount(mount, sizeof(mount), why) < 0)
                return -ENOENT;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                snprintf(path, sizeof(path), "%s/%s", mount, names[i]);
                if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && found++ == 0 &&
                    (size_t)snprintf(out, size, "%s", path) >= size)
                        return -ENAMETOOLONG;
        }
        if (found == 1)
                return 0;
        snprintf(why, PF_WHY_SIZE, found ? "both %.150s/kubepods.slice and %.150s/kubepods exist: name the pod root"
                                         : "no %.150s/kubepods.slice or %.150s/kubepods: not a Kubernetes node, "
                                           "or this process is not in the host's cgroup namespace", mount, mount);
        return found ? -EEXIST : -ENOENT;
}
