/* SPDX-License-Identifier: MIT */
/* The one JSON writer of the command (as bpftool's json_writer): values are
 * written as they come, commas and layout follow from nesting, strings take
 * policy/escape.c's rule, which the shim's log uses too. A top-level array
 * puts each element on a line of its own; a top-level object is one line. */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

static void separate(struct pf_json *j)
{
        if (j->depth == 0)
                return;
        if (j->pending_key) {
                j->pending_key = false;
                return;
        }
        if (j->count[j->depth - 1]++)
                fputs(j->depth == 1 && j->array[0] ? ",\n  " : ", ", j->out);
        else if (j->depth == 1 && j->array[0])
                fputs("\n  ", j->out);
}

static void done_value(struct pf_json *j)
{
        if (j->depth == 0)
                fputc('\n', j->out);
}

void pf_json_init(struct pf_json *j, FILE *out)
{
        *j = (struct pf_json){ .out = out };
}

static void begin(struct pf_json *j, char open, bool array)
{
        separate(j);
        fputc(open, j->out);
        if (j->depth < PF_JSON_DEPTH) {
                j->array[j->depth] = array;
                j->count[j->depth] = 0;
        }
        j->depth++;
}

static void end(struct pf_json *j, char close)
{
        bool lines = j->depth == 1 && j->array[0] && j->count[0];

        j->depth--;
        fputs(lines ? "\n" : "", j->out);
        fputc(close, j->out);
        done_value(j);
}

void pf_json_object_begin(struct pf_json *j) { begin(j, '{', false); }
void pf_json_object_end(struct pf_json *j) { end(j, '}'); }
void pf_json_array_begin(struct pf_json *j) { begin(j, '[', true); }
void pf_json_array_end(struct pf_json *j) { end(j, ']'); }

static void put_string(FILE *out, const char *s)
{
        char buf[PF_ESCAPE_SIZE];

        fputc('"', out);
        for (; *s; s++) {
                const char *escaped = pf_json_escape((unsigned char)*s, buf);

                if (escaped)
                        fputs(escaped, out);
                else
                        fputc(*s, out);
        }
        fputc('"', out);
}

void pf_json_key(struct pf_json *j, const char *key)
{
        separate(j);
        put_string(j->out, key);
        fputs(": ", j->out);
        j->pending_key = true;
}

void pf_json_string(struct pf_json *j, const char *s)
{
        separate(j);
        put_string(j->out, s);
        done_value(j);
}

void pf_json_uint(struct pf_json *j, uint64_t value)
{
        separate(j);
        fprintf(j->out, "%" PRIu64, value);
        done_value(j);
}

void pf_json_int(struct pf_json *j, int64_t value)
{
        separate(j);
        fprintf(j->out, "%" PRId64, value);
        done_value(j);
}

void pf_json_bool(struct pf_json *j, bool value)
{
        separate(j);
        fputs(value ? "true" : "false", j->out);
        done_value(j);
}

void pf_json_number(struct pf_json *j, const char *text)
{
        separate(j);
        fputs(text, j->out);
        done_value(j);
}

static void put_null(struct pf_json *j)
{
        separate(j);
        fputs("null", j->out);
        done_value(j);
}

void pf_json_portset(struct pf_json *j, const struct pf_portset *set)
{
        struct pf_range range = { 0, 0 };
        char text[16];

        pf_json_array_begin(j);
        while (pf_portset_next_range(set, &range)) {
                if (range.lo == range.hi)
                        snprintf(text, sizeof(text), "%u", range.lo);
                else
                        snprintf(text, sizeof(text), "%u-%u", range.lo, range.hi);
                pf_json_string(j, text);
        }
        pf_json_array_end(j);
}

/* "key": value pairs, the common case. */
void pf_json_kv_string(struct pf_json *j, const char *key, const char *value)
{
        pf_json_key(j, key);
        if (value)
                pf_json_string(j, value);
        else
                put_null(j);
}

void pf_json_kv_uint(struct pf_json *j, const char *key, uint64_t value)
{
        pf_json_key(j, key);
        pf_json_uint(j, value);
}

void pf_json_decision(struct pf_json *j, enum pf_action action, uint16_t target, int err,
                      unsigned rule)
{
        pf_json_kv_string(j, "action", pf_action_name(action));
        pf_json_key(j, "target");
        if (action == PF_REMAP)
                pf_json_uint(j, target);
        else
                put_null(j);
        pf_json_kv_string(j, "errno", action == PF_REFUSE ? pf_errno_name(err) : NULL);
        pf_json_key(j, "rule");
        if (rule)
                pf_json_uint(j, rule);
        else
                put_null(j);
}

void pf_text(FILE *out, const char *s)
{
        char buf[PF_ESCAPE_SIZE];

        for (; *s; s++) {
                const char *escaped = pf_text_escape((unsigned char)*s, buf);

                if (escaped)
                        fputs(escaped, out);
                else
                        fputc(*s, out);
        }
}

void pf_text_copy(char *out, size_t size, const char *s)
{
        char buf[PF_ESCAPE_SIZE];
        size_t used = 0;

        if (size == 0)
                return;
        for (; *s; s++) {
                const char *escaped = pf_text_escape((unsigned char)*s, buf);
                size_t n = escaped ? strlen(escaped) : 1;

                if (used + n >= size)
                        break;          /* whole escapes only */
                memcpy(out + used, escaped ? escaped : s, n);
                used += n;
        }
        out[used] = '\0';
}
