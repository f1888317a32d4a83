/* SPDX-License-Identifier: MIT */
/* The shim's log: each line formatted into a stack buffer without stdio and
 * written with one write(2), so lines of many processes never interleave and
 * logging is safe in a signal handler. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "libc.h"
#include "shim.h"

extern char *program_invocation_short_name;

/* A descriptor the shim opened, and what it was then. A program that
 * closes every descriptor above 2 (as daemons do when they detach) may get
 * its own file or socket at that number: before every write the shim checks
 * it still has what it opened, and once it has not, writes there no more
 * (not its to close). */
struct own_fd {
        int fd;
        dev_t dev;
        ino_t ino;
};

static void own(struct own_fd *o, int fd)
{
        struct stat st;

        o->fd = -1;
        if (fd >= 0 && fstat(fd, &st) == 0) {
                o->fd = fd;
                o->dev = st.st_dev;
                o->ino = st.st_ino;
        } else if (fd >= 0) {
                close(fd);
        }
}

static bool still_own(struct own_fd *o)
{
        struct stat st;

        if (o->fd >= 0 && fstat(o->fd, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino)
                return true;
        o->fd = -1;
        return false;
}

static struct own_fd log_out = { .fd = -1 };   /* opened at load */
static bool log_is_pipe;        /* a write may raise SIGPIPE: keep it from the program */
static enum pf_log_to log_to;
static enum pf_log_level log_level = PF_LEVEL_WARN;
static enum pf_log_format log_format;

/* Room for the longest line: a program name is cut to NAME_MAX bytes, each
 * at most 6 once escaped, so every line is whole and valid. */
struct line {
        char text[2048];
        size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
        if (n > sizeof(l->text) - 1 - l->len)
                n = sizeof(l->text) - 1 - l->len;
        memcpy(l->text + l->len, s, n);
        l->len += n;
}

static void put_str(struct line *l, const char *s)
{
        put(l, s, strlen(s));
}

static void put_uint(struct line *l, unsigned long value)
{
        char digits[24];
        size_t n = sizeof(digits);

        do {
                digits[--n] = (char)('0' + value % 10);
                value /= 10;
        } while (value);
        put(l, digits + n, sizeof(digits) - n);
}

/* Text a program controls, by policy/escape.c's rules: as the command's
 * JSON writer escapes it, or safe on a text line. */
static void put_escaped(struct line *l, const char *s, const char *(*escape)(unsigned char, char *))
{
        char buf[PF_ESCAPE_SIZE];
        const char *end = s + strnlen(s, NAME_MAX);

        for (; s < end; s++) {
                const char *escaped = escape((unsigned char)*s, buf);

                if (escaped)
                        put_str(l, escaped);
                else
                        put(l, s, 1);
        }
}

static void put_json_str(struct line *l, const char *s)
{
        put(l, "\"", 1);
        put_escaped(l, s, pf_json_escape);
        put(l, "\"", 1);
}

static size_t format_hex16(uint16_t value, char *out)
{
        static const char hex[] = "0123456789abcdef";
        size_t n = 0;
        bool started = false;

        for (int shift = 12; shift >= 0; shift -= 4) {
                unsigned digit = (value >> shift) & 0xf;

                if (digit || started || shift == 0) {
                        out[n++] = hex[digit];
                        started = true;
                }
        }
        return n;
}

static void put_ipv4(struct line *l, const uint8_t b[4])
{
        for (int i = 0; i < 4; i++) {
                if (i)
                        put(l, ".", 1);
                put_uint(l, b[i]);
        }
}

/* RFC 5952: lowercase hex, no leading zeros, the longest run of two or
 * more zero words as "::". */
static void put_ipv6(struct line *l, const uint8_t b[16])
{
        uint16_t words[8];
        int best = -1, best_len = 1;

        for (int i = 0; i < 8; i++)
                words[i] = (uint16_t)(b[2 * i] << 8 | b[2 * i + 1]);
        for (int i = 0; i < 8;) {
                int j = i;

                while (j < 8 && words[j] == 0)
                        j++;
                if (j - i > best_len) {
                        best = i;
                        best_len = j - i;
                }
                i = j > i ? j : i + 1;
        }
        for (int i = 0; i < 8; i++) {
                char hex[4];

                if (i == best) {
                        put(l, "::", 2);
                        i += best_len - 1;
                        continue;
                }
                if (i && i != best + best_len)
                        put(l, ":", 1);
                put(l, hex, format_hex16(words[i], hex));
        }
}

size_t shim_format_addr(const struct sockaddr *addr, char *buf, size_t size)
{
        struct line l = { .len = 0 };
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;

        if (addr->sa_family == AF_INET) {
                put_ipv4(&l, (const uint8_t *)&((const struct sockaddr_in *)(const void *)addr)->sin_addr);
        } else if (addr->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(in6)) {
                put_str(&l, "::ffff:");
                put_ipv4(&l, in6->s6_addr + 12);
        } else if (addr->sa_family == AF_INET6) {
                put_ipv6(&l, in6->s6_addr);
        } else {
                put_str(&l, "?");
        }
        if (size) {
                size_t n = l.len < size - 1 ? l.len : size - 1;

                memcpy(buf, l.text, n);
                buf[n] = '\0';
        }
        return l.len;
}

static int open_syslog(void)
{
        struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        if (fd >= 0 && libc_connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
                close(fd);
                fd = -1;
        }
        return fd;
}

/* A private close-on-exec copy of stderr as it is at load: a program that
 * later closes fd 2 and gets a socket there must never receive our lines in
 * its stream. A socket at fd 2 already is not written to at all. */
static int open_stderr(void)
{
        struct stat st;

        if (fstat(STDERR_FILENO, &st) < 0 || S_ISSOCK(st.st_mode))
                return -1;
        return fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
}

static void put_prefix(struct line *l);
static void emit(enum pf_log_level level, struct line *l);

/* The log destination could not be opened: said once per command tree, on
 * stderr, where the lines go instead. */
static void say_log_fallback(const struct pf_log_settings *settings, int err)
{
        struct line l = { .len = 0 };

        if (!shim_log_enabled(PF_LEVEL_WARN) || !shim_mark_reported("log"))
                return;
        put_prefix(&l);
        if (settings->to == PF_LOG_FILE) {
                put_str(&l, "cannot open the log file '");
                put_escaped(&l, settings->path, pf_text_escape);
                put_str(&l, "': ");
        } else {
                put_str(&l, "cannot reach syslog at /dev/log: ");
        }
        put_str(&l, strerror(err));
        put_str(&l, "; logging to stderr");
        emit(PF_LEVEL_WARN, &l);
}

void shim_log_open(const struct pf_log_settings *settings, enum pf_log_level level)
{
        struct stat st;
        int err = 0, log_fd = -1;

        log_to = settings->to;
        log_level = level;
        log_format = settings->format;
        if (log_to == PF_LOG_FILE)
                log_fd = open(settings->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        else if (log_to == PF_LOG_SYSLOG)
                log_fd = open_syslog();
        if (log_fd < 0) {
                err = errno;
                log_to = PF_LOG_STDERR;         /* say it somewhere rather than nowhere */
                log_fd = open_stderr();
        }
        log_is_pipe = log_fd >= 0 && fstat(log_fd, &st) == 0 && S_ISFIFO(st.st_mode);
        own(&log_out, log_fd);
        if (err && settings->to != PF_LOG_STDERR)
                say_log_fallback(settings, err);
}

bool shim_mark_reported(const char *kind)
{
        const char *done = secure_getenv("PORTFENCE_REPORTED");
        char list[256];
        size_t len = strlen(kind);

        for (const char *at = done; at && (at = strstr(at, kind)); at += len)
                if ((at == done || at[-1] == ',') && (at[len] == ',' || at[len] == '\0'))
                        return false;
        struct line l = { .len = 0 };

        if (done && *done && strlen(done) < sizeof(list) - len - 2) {
                put_str(&l, done);
                put(&l, ",", 1);
        }
        put_str(&l, kind);
        memcpy(list, l.text, l.len < sizeof(list) - 1 ? l.len : sizeof(list) - 1);
        list[l.len < sizeof(list) - 1 ? l.len : sizeof(list) - 1] = '\0';
        setenv("PORTFENCE_REPORTED", list, 1);  /* at load: the program has not started yet */
        return true;
}

void shim_log_once(enum pf_log_level level, const char *kind, const char *text)
{
        if (shim_log_enabled(level) && shim_mark_reported(kind))
                shim_log_text(level, text);
}

bool shim_log_enabled(enum pf_log_level level)
{
        return level <= log_level;
}

/* write(2) whole, with SIGPIPE held back when the reader of a pipe is gone:
 * the signal belongs to the program's own writes, never to our log. */
static void write_line(const char *text, size_t len)
{
        sigset_t pipe_only, old, pending;
        bool was_pending = false;
        ssize_t n;

        if (!still_own(&log_out))
                return;
        if (log_is_pipe) {
                sigemptyset(&pipe_only);
                sigaddset(&pipe_only, SIGPIPE);
                sigpending(&pending);
                was_pending = sigismember(&pending, SIGPIPE);
                pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
        }
        while ((n = write(log_out.fd, text, len)) < 0 && errno == EINTR)
                ;
        if (log_is_pipe) {
                if (n < 0 && errno == EPIPE && !was_pending) {
                        struct timespec now = { 0, 0 };

                        while (sigtimedwait(&pipe_only, NULL, &now) < 0 && errno == EINTR)
                                ;
                }
                pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
}

static void emit(enum pf_log_level level, struct line *l)
{
        static const int syslog_severity[] = { 3, 4, 6, 7 };    /* err, warning, info, debug */
        struct line framed;     /* 2 KiB: only its length needs a value */
        int saved = errno;

        if (log_out.fd < 0)
                return;
        framed.len = 0;
        if (log_to == PF_LOG_SYSLOG) {  /* "<PRI>" with facility user, then a tag */
                put(&framed, "<", 1);
                put_uint(&framed, 8u + (unsigned)syslog_severity[level]);
                put(&framed, ">", 1);
                if (log_format == PF_FORMAT_JSON) {     /* text lines start with their tag */
                        put_str(&framed, "portfence[");
                        put_uint(&framed, (unsigned long)getpid());
                        put_str(&framed, "]: ");
                }
                put(&framed, l->text, l->len);
                l = &framed;
        } else {
                put(l, "\n", 1);
        }
        write_line(l->text, l->len);
        errno = saved;
}

static void put_prefix(struct line *l)
{
        put_str(l, "portfence[");
        put_uint(l, (unsigned long)getpid());
        put_str(l, "]: ");
        put_escaped(l, program_invocation_short_name, pf_text_escape);
        put_str(l, ": ");
}

void shim_log_text(enum pf_log_level level, const char *text)
{
        struct line l;          /* not zeroed before the level says it is used */

        if (!shim_log_enabled(level))
                return;
        l.len = 0;
        if (log_format == PF_FORMAT_JSON) {
                put_str(&l, "{\"pid\": ");
                put_uint(&l, (unsigned long)getpid());
                put_str(&l, ", \"program\": ");
                put_json_str(&l, program_invocation_short_name);
                put_str(&l, ", \"message\": ");
                put_json_str(&l, text);
                put_str(&l, "}");
        } else {
                put_prefix(&l);
                put_str(&l, text);
        }
        emit(level, &l);
}

static void put_json_event(struct line *l, const struct shim_event *e, const char *addr)
{
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        put_str(l, "{\"time\": ");
        put_uint(l, (unsigned long)now.tv_sec);
        put_str(l, ".");
        put_uint(l, (unsigned long)(now.tv_nsec / 100000000));
        put_uint(l, (unsigned long)(now.tv_nsec / 10000000 % 10));
        put_uint(l, (unsigned long)(now.tv_nsec / 1000000 % 10));
        put_str(l, ", \"pid\": ");
        put_uint(l, (unsigned long)getpid());
        put_str(l, ", \"program\": ");
        put_json_str(l, program_invocation_short_name);
        put_str(l, ", \"call\": \"");
        put_str(l, e->call);
        put_str(l, "\", \"proto\": \"");
        put_str(l, pf_proto_name(e->proto));
        put_str(l, "\", \"family\": \"");
        put_str(l, e->addr->sa_family == AF_INET6 ? "ipv6" : "ipv4");
        put_str(l, "\", \"address\": \"");
        put_str(l, addr);
        put_str(l, "\", \"port\": ");
        put_uint(l, e->port);
        put_str(l, ", \"action\": \"");
        put_str(l, pf_action_name(e->action));
        put_str(l, "\", \"target\": ");
        if (e->action == PF_REMAP)
                put_uint(l, e->target);
        else
                put_str(l, "null");
        put_str(l, ", \"errno\": ");
        if (e->err)
                put_json_str(l, pf_errno_name(e->err));
        else
                put_str(l, "null");
        put_str(l, ", \"rule\": ");
        if (e->rule)
                put_uint(l, e->rule);
        else
                put_str(l, "null");
        put_str(l, ", \"source\": ");
        if (e->rule) {
                put(l, "\"", 1);
                put_escaped(l, e->rule_file, pf_json_escape);
                put(l, ":", 1);
                put_uint(l, e->rule_line);
                put(l, "\"", 1);
        } else {
                put_str(l, "null");
        }
        put_str(l, "}");
}

/* "bind 0.0.0.0:40000/tcp: remap -> 7000", "bind [::1]:41000/udp: log" */
static void put_text_event(struct line *l, const struct shim_event *e, const char *addr)
{
        put_prefix(l);
        put_str(l, e->call);
        put_str(l, e->addr->sa_family == AF_INET6 ? " [" : " ");
        put_str(l, addr);
        put_str(l, e->addr->sa_family == AF_INET6 ? "]:" : ":");
        put_uint(l, e->port);
        put_str(l, "/");
        put_str(l, pf_proto_name(e->proto));
        put_str(l, ": ");
        put_str(l, pf_action_name(e->action));
        if (e->action == PF_REMAP) {
                put_str(l, " -> ");
                put_uint(l, e->target);
        }
        if (e->err) {
                put_str(l, " (");
                put_str(l, pf_errno_name(e->err));
                put_str(l, ")");
        }
        put_str(l, e->rule ? " [rule " : " [default]");
        if (e->rule) {
                put_uint(l, e->rule);
                put_str(l, ", ");
                put_escaped(l, e->rule_file, pf_text_escape);
                put(l, ":", 1);
                put_uint(l, e->rule_line);
                put(l, "]", 1);
        }
}

void shim_log_event(enum pf_log_level level, const struct shim_event *e)
{
        struct line l;          /* not zeroed before the level says it is used */
        char addr[64];

        if (!shim_log_enabled(level))
                return;
        l.len = 0;
        shim_format_addr(e->addr, addr, sizeof(addr));
        if (log_format == PF_FORMAT_JSON)
                put_json_event(&l, e, addr);
        else
                put_text_event(&l, e, addr);
        emit(level, &l);
}

/* ---- learning: one JSON line per bind, to the file 'portfence learn' reads -- */

static struct own_fd learn_out = { .fd = -1 };

bool shim_learn_open(const char *path)
{
        struct stat st;
        int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);

        /* Only a regular file of this user: the environment may be hostile. */
        if (fd >= 0 && (fstat(fd, &st) < 0 || !pf_host_trusted(&st, S_IFREG, geteuid(), false, 0))) {
                close(fd);
                fd = -1;
        }
        own(&learn_out, fd);
        return learn_out.fd >= 0;
}

void shim_learn_record(const char *call, enum pf_proto proto, const struct sockaddr *addr,
                       uint16_t requested, uint16_t bound)
{
        struct line l = { .len = 0 };
        char text[64];
        int saved = errno;

        if (learn_out.fd < 0)
                return;
        shim_format_addr(addr, text, sizeof(text));
        put_str(&l, "{\"" PF_LEARN_CALL "\": \"");
        put_str(&l, call);
        put_str(&l, "\", \"" PF_LEARN_PROTO "\": \"");
        put_str(&l, pf_proto_name(proto));
        put_str(&l, "\", \"" PF_LEARN_FAMILY "\": \"");
        put_str(&l, addr->sa_family == AF_INET6 ? "ipv6" : "ipv4");
        put_str(&l, "\", \"" PF_LEARN_ADDRESS "\": \"");
        put_str(&l, text);
        put_str(&l, "\", \"" PF_LEARN_PORT "\": ");
        put_uint(&l, requested);
        put_str(&l, ", \"" PF_LEARN_BOUND "\": ");
        put_uint(&l, bound);
        put_str(&l, ", \"" PF_LEARN_PID "\": ");
        put_uint(&l, (unsigned long)getpid());
        put_str(&l, ", \"" PF_LEARN_PROGRAM "\": ");
        put_json_str(&l, program_invocation_short_name);
        put_str(&l, "}\n");
        while (still_own(&learn_out) && write(learn_out.fd, l.text, l.len) < 0 && errno == EINTR)
                ;
        errno = saved;
}
