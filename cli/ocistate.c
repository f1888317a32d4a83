/* SPDX-License-Identifier: MIT */
/* The OCI runtime state (runtime-spec "State"): a strict JSON parser that
 * keeps what the hook needs and checks the rest is JSON too. A hook that
 * cannot read its state fails, and the runtime then refuses to start the
 * container: no container runs unfenced because of a parse it guessed at. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ocistate.h"
#include "portset.h"

#define MAX_DEPTH 64

struct parser {
        const char *start, *p, *end;
        unsigned depth;
        char *why;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct parser *ps, const char *fmt, ...)
{
        char what[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        snprintf(ps->why, PF_WHY_SIZE, "bad OCI state: %s at byte %zu", what, (size_t)(ps->p - ps->start));
        return -EINVAL;
}

static void skip_space(struct parser *ps)
{
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
                ps->p++;
}

static bool take(struct parser *ps, char c)
{
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == c) {
                ps->p++;
                return true;
        }
        return false;
}

static int hex4(struct parser *ps, unsigned *out)
{
        unsigned v = 0;

        if (ps->end - ps->p < 4)
                return fail(ps, "a cut \\u escape");
        for (int i = 0; i < 4; i++) {
                char c = *ps->p++;

                v <<= 4;
                if (c >= '0' && c <= '9')
                        v |= (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        v |= (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        v |= (unsigned)(c - 'A' + 10);
                else
                        return fail(ps, "a bad \\u escape");
        }
        *out = v;
        return 0;
}

/* One code point of a \u escape (a surrogate pair is two escapes). */
static int unicode_escape(struct parser *ps, unsigned *cp)
{
        unsigned low;

        if (hex4(ps, cp) < 0)
                return -EINVAL;
        if (*cp >= 0xdc00 && *cp <= 0xdfff)
                return fail(ps, "a lone low surrogate");
        if (*cp >= 0xd800 && *cp <= 0xdbff) {
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                        return fail(ps, "a lone high surrogate");
                ps->p += 2;
                if (hex4(ps, &low) < 0)
                        return -EINVAL;
                if (low < 0xdc00 || low > 0xdfff)
                        return fail(ps, "a lone high surrogate");
                *cp = 0x10000 + ((*cp - 0xd800) << 10) + (low - 0xdc00);
        }
        if (*cp == 0)
                return fail(ps, "a NUL character in a string");
        return 0;
}

/* Append n bytes to out (NULL: the string is skipped). */
static int put(struct parser *ps, char *out, size_t size, size_t *used, const char *bytes, size_t n)
{
        if (!out)
                return 0;
        if (*used + n >= size)
                return fail(ps, "a string longer than %zu bytes", size - 1);
        memcpy(out + *used, bytes, n);
        *used += n;
        return 0;
}

static size_t utf8(unsigned cp, char *b)
{
        if (cp < 0x80) {
                b[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                b[0] = (char)(0xc0 | cp >> 6);
                b[1] = (char)(0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                b[0] = (char)(0xe0 | cp >> 12);
                b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
                b[2] = (char)(0x80 | (cp & 0x3f));
                return 3;
        }
        b[0] = (char)(0xf0 | cp >> 18);
        b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        return 4;
}

/* A string, its escapes decoded into out (NUL-terminated), or skipped. */
static int string(struct parser *ps, char *out, size_t size)
{
        static const char plain[] = "\"\\/\b\f\n\r\t", named[] = "\"\\/bfnrt";
        size_t used = 0;

        if (!take(ps, '"'))
                return fail(ps, "a string expected");
        while (ps->p < ps->end && *ps->p != '"') {
                char b[4];
                size_t n = 1;
                unsigned cp;

                b[0] = *ps->p++;
                if ((unsigned char)b[0] < 0x20)
                        return fail(ps, "a control character in a string");
                if (b[0] == '\\') {
                        const char *e = ps->p < ps->end ? strchr(named, *ps->p) : NULL;

                        if (ps->p < ps->end && *ps->p == 'u') {
                                ps->p++;
                                if (unicode_escape(ps, &cp) < 0)
                                        return -EINVAL;
                                n = utf8(cp, b);
                        } else if (e && *ps->p) {
                                b[0] = plain[e - named];
                                ps->p++;
                        } else {
                                return fail(ps, "a bad escape");
                        }
                }
                if (put(ps, out, size, &used, b, n) < 0)
                        return -EINVAL;
        }
        if (ps->p == ps->end)
                return fail(ps, "an unterminated string");
        ps->p++;
        if (out)
                out[used] = '\0';
        return 0;
}

/* A JSON number; *integer set when it is a whole number that fits a long. */
static int number(struct parser *ps, long *integer, bool *whole)
{
        long v = 0;
        bool negative = false, overflow = false;

        if (ps->p < ps->end && *ps->p == '-') {
                negative = true;
                ps->p++;
        }
        if (ps->p == ps->end || *ps->p < '0' || *ps->p > '9')
                return fail(ps, "a value expected");
        if (*ps->p == '0' && ps->end - ps->p > 1 && ps->p[1] >= '0' && ps->p[1] <= '9')
                return fail(ps, "a number with a leading zero");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
                int d = *ps->p++ - '0';

                overflow |= v > (LONG_MAX - d) / 10;
                if (!overflow)
                        v = v * 10 + d;
        }
        *whole = !overflow;
        if (ps->p < ps->end && *ps->p == '.') {
                *whole = false;
                if (++ps->p == ps->end || *ps->p < '0' || *ps->p > '9')
                        return fail(ps, "a bad number");
                while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
                        ps->p++;
        }
        if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
                *whole = false;
                ps->p++;
                if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
                        ps->p++;
                if (ps->p == ps->end || *ps->p < '0' || *ps->p > '9')
                        return fail(ps, "a bad number");
                while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
                        ps->p++;
        }
        *integer = negative ? -v : v;
        return 0;
}

static int value(struct parser *ps);

/* An object's members, each given to member() (NULL: checked and skipped). */
static int object(struct parser *ps, int (*member)(struct parser *, const char *key, void *), void *ctx)
{
        char key[256];

        if (!take(ps, '{'))
                return fail(ps, "an object expected");
        if (++ps->depth > MAX_DEPTH)
                return fail(ps, "nested deeper than %d", MAX_DEPTH);
        if (take(ps, '}')) {
                ps->depth--;
                return 0;
        }
        do {
                skip_space(ps);
                if (string(ps, key, sizeof(key)) < 0)
                        return -EINVAL;
                if (!take(ps, ':'))
                        return fail(ps, "':' expected");
                if ((member ? member(ps, key, ctx) : value(ps)) < 0)
                        return -EINVAL;
        } while (take(ps, ','));
        if (!take(ps, '}'))
                return fail(ps, "',' or '}' expected");
        ps->depth--;
        return 0;
}

static int array(struct parser *ps)
{
        if (!take(ps, '['))
                return fail(ps, "an array expected");
        if (++ps->depth > MAX_DEPTH)
                return fail(ps, "nested deeper than %d", MAX_DEPTH);
        if (!take(ps, ']')) {
                do {
                        if (value(ps) < 0)
                                return -EINVAL;
                } while (take(ps, ','));
                if (!take(ps, ']'))
                        return fail(ps, "',' or ']' expected");
        }
        ps->depth--;
        return 0;
}

static int literal(struct parser *ps, const char *word)
{
        size_t n = strlen(word);

        if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
                return fail(ps, "a value expected");
        ps->p += n;
        return 0;
}

/* Any value, checked and skipped. */
static int value(struct parser *ps)
{
        long integer;
        bool whole;

        skip_space(ps);
        if (ps->p == ps->end)
                return fail(ps, "a value expected");
        switch (*ps->p) {
        case '{': return object(ps, NULL, NULL);
        case '[': return array(ps);
        case '"': return string(ps, NULL, 0);
        case 't': return literal(ps, "true");
        case 'f': return literal(ps, "false");
        case 'n': return literal(ps, "null");
        default: return number(ps, &integer, &whole);
        }
}

struct state_ctx {
        struct pf_oci_state *state;
        unsigned seen;          /* bit per member kept: a second one is an error */
};

static int seen_once(struct parser *ps, struct state_ctx *c, unsigned bit, const char *key)
{
        if (c->seen & bit)
                return fail(ps, "'%s' given twice", key);
        c->seen |= bit;
        return 0;
}

static int annotation(struct parser *ps, const char *key, void *ctx)
{
        struct state_ctx *c = ctx;

        skip_space(ps);
        if (strcmp(key, PF_OCI_ANNOTATION_POLICY) != 0)
                return value(ps);
        if (seen_once(ps, c, 1u << 3, key) < 0)
                return -EINVAL;
        c->state->has_policy = true;
        return string(ps, c->state->policy, sizeof(c->state->policy));
}

static int state_member(struct parser *ps, const char *key, void *ctx)
{
        struct state_ctx *c = ctx;
        bool whole;

        skip_space(ps);
        if (strcmp(key, "id") == 0)
                return seen_once(ps, c, 1u << 0, key) < 0 ? -EINVAL
                       : string(ps, c->state->id, sizeof(c->state->id));
        if (strcmp(key, "status") == 0)
                return seen_once(ps, c, 1u << 1, key) < 0 ? -EINVAL
                       : string(ps, c->state->status, sizeof(c->state->status));
        if (strcmp(key, "pid") == 0) {
                if (seen_once(ps, c, 1u << 2, key) < 0 || number(ps, &c->state->pid, &whole) < 0)
                        return -EINVAL;
                if (!whole || c->state->pid < 0 || c->state->pid > INT32_MAX)
                        return fail(ps, "'pid' is not a process id");
                return 0;
        }
        if (strcmp(key, "annotations") == 0) {
                if (ps->p < ps->end && *ps->p == 'n')
                        return literal(ps, "null");
                return object(ps, annotation, c);
        }
        return value(ps);
}

int pf_oci_state_parse(const char *text, size_t len, struct pf_oci_state *out, char *why)
{
        struct pf_oci_state state = { .pid = 0 };
        struct state_ctx c = { .state = &state };
        struct parser ps = { .start = text, .p = text, .end = text + len, .why = why };

        skip_space(&ps);
        if (ps.p == ps.end)
                return fail(&ps, "empty (no state on standard input)");
        if (object(&ps, state_member, &c) < 0)
                return -EINVAL;
        skip_space(&ps);
        if (ps.p != ps.end)
                return fail(&ps, "text after the object");
        if (!state.status[0])
                return fail(&ps, "no 'status'");
        *out = state;
        return 0;
}

int pf_oci_policy_name_check(const char *name, char *why)
{
        static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
        size_t len = strlen(name);

        if (len == 0 || len > 64 || name[0] == '.' || strspn(name, allowed) != len) {
                snprintf(why, PF_WHY_SIZE, "a policy name is 1-64 letters, digits, '.', '_' or '-', "
                         "not starting with '.' (never a path)");
                return -EINVAL;
        }
        return 0;
}
