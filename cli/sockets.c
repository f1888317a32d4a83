/* SPDX-License-Identifier: MIT */
/* The TCP and UDP sockets of this network namespace, from sock_diag (through
 * policy/host.c, which the shim shares), and their owners, from /proc/PID/fd (no parsing of ss output). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host.h"
#include "sockets.h"


static int push(struct pf_socket **list, size_t *count, const struct pf_socket *s)
{
        if ((*count & (*count + 1)) == 0 || *count == 0) {      /* grow at 0, 1, 3, 7, ... */
                struct pf_socket *grown = realloc(*list, (2 * *count + 2) * sizeof(**list));

                if (!grown)
                        return -ENOMEM;
                *list = grown;
        }
        (*list)[(*count)++] = *s;
        return 0;
}

static void to_socket(const struct inet_diag_msg *m, enum pf_proto proto, struct pf_socket *s)
{
        memset(s, 0, sizeof(*s));
        s->proto = proto;
        s->family = m->idiag_family;
        memcpy(s->addr, m->id.idiag_src, m->idiag_family == AF_INET ? 4 : 16);
        s->port = ntohs(m->id.idiag_sport);
        s->peer_port = ntohs(m->id.idiag_dport);
        s->listening = proto == PF_TCP ? m->idiag_state == TCP_LISTEN : s->peer_port == 0;
        s->time_wait = proto == PF_TCP && m->idiag_state == TCP_TIME_WAIT;
        s->inode = m->idiag_inode;
}

struct collect {
        struct pf_socket **list;
        size_t *count;
        enum pf_proto proto;
};

static int collect_one(const struct inet_diag_msg *m, void *ctx)
{
        struct collect *c = ctx;
        struct pf_socket s;

        to_socket(m, c->proto, &s);
        return push(c->list, c->count, &s);
}

/* Every socket of family and protocol, in any state. */
static int dump(int family, enum pf_proto proto, struct pf_socket **list, size_t *count)
{
        struct pf_socket_query q = { .family = family, .proto = proto };
        struct collect c = { .list = list, .count = count, .proto = proto };

        return pf_host_sockets(&q, collect_one, &c);
}

int pf_sockets_read(struct pf_socket **list, size_t *count)
{
        static const int families[] = { AF_INET, AF_INET6 };
        int r = 0;

        *list = NULL;
        *count = 0;
        for (int f = 0; f < 2 && r == 0; f++)
                for (int proto = 0; proto < PF_PROTO_COUNT && r == 0; proto++)
                        r = dump(families[f], proto, list, count);
        /* No IPv6 in this kernel: nothing to list there. */
        if (r == -EAFNOSUPPORT || r == -ENOENT)
                r = 0;
        if (r < 0) {
                free(*list);
                *list = NULL;
                *count = 0;
        }
        return r;
}

static void read_comm(const char *pid, char *out, size_t size)
{
        char path[64];
        FILE *f;

        size_t n = 0;

        snprintf(path, sizeof(path), "/proc/%s/comm", pid);
        f = fopen(path, "re");
        if (f) {
                n = fread(out, 1, size - 1, f);
                fclose(f);
        }
        /* The kernel ends the name with one newline; a name may hold more. */
        if (n && out[n - 1] == '\n')
                n--;
        if (n)
                out[n] = '\0';
}

/* pid holds s (once per process, however many descriptors). */
static void add_owner(struct pf_socket *s, const char *pid)
{
        struct pf_socket_owner *o;

        for (unsigned i = 0; i < s->owner_count; i++)
                if (s->owners[i].pid == atoi(pid))
                        return;
        if (s->owner_count == PF_SOCKET_OWNERS)
                return;
        o = &s->owners[s->owner_count++];
        o->pid = atoi(pid);
        snprintf(o->program, sizeof(o->program), "?");
        read_comm(pid, o->program, sizeof(o->program));
}

void pf_sockets_owners(struct pf_socket *list, size_t count)
{
        DIR *proc = opendir("/proc");
        struct dirent *p;

        while (proc && (p = readdir(proc))) {
                char path[300], link[64];
                struct dirent *f;
                DIR *fds;

                if (strspn(p->d_name, "0123456789") != strlen(p->d_name))
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/fd", p->d_name);
                if (!(fds = opendir(path)))
                        continue;
                while ((f = readdir(fds))) {
                        char fd_path[600];
                        unsigned long inode;
                        ssize_t n;

                        snprintf(fd_path, sizeof(fd_path), "%s/%s", path, f->d_name);
                        n = readlink(fd_path, link, sizeof(link) - 1);
                        if (n <= 0)
                                continue;
                        link[n] = '\0';
                        if (sscanf(link, "socket:[%lu]", &inode) != 1)
                                continue;
                        for (size_t i = 0; i < count; i++)
                                if (list[i].inode == inode)
                                        add_owner(&list[i], p->d_name);
                }
                closedir(fds);
        }
        if (proc)
                closedir(proc);
}

void pf_socket_address(const struct pf_socket *s, char *buf, size_t size)
{
        if (!inet_ntop(s->family, s->addr, buf, (socklen_t)size))
                snprintf(buf, size, "?");
}

void pf_socket_format(const struct pf_socket *s, char *buf, size_t size)
{
        char text[INET6_ADDRSTRLEN];

        pf_socket_address(s, text, sizeof(text));
        snprintf(buf, size, s->family == AF_INET6 ? "[%s]:%u" : "%s:%u", text,
                 s->port);
}
