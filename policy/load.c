/* SPDX-License-Identifier: MIT */
/* Load and validate a libconfig policy file, then hand it to pack.c. */
#include "policy-internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- diagnostics ------------------------------------------------------ */

void pf_diag_free(struct pf_diag *diag)
{
        for (size_t i = 0; i < diag->count; i++) {
                free(diag->entries[i].text);
                free(diag->entries[i].file);
        }
        free(diag->entries);
        free(diag->file);
        memset(diag, 0, sizeof(*diag));
}

const char *pf_diag_format(const struct pf_diag *diag, size_t i, char *buf, size_t size)
{
        const struct pf_diag_entry *e = &diag->entries[i];
        const char *file = e->file ? e->file : diag->file;

        if (e->line)
                snprintf(buf, size, "%s:%u: %s", file, e->line, e->text);
        else
                snprintf(buf, size, "%s: %s", file, e->text);
        return buf;
}

struct loader {
        struct pf_diag *diag;
        const char *include_dir;        /* where @include looks; NULL: the current directory */
        struct pf_policy *policy;       /* the head: settings, guarded sets, pool */
        struct pf_rule *rules;
        uint32_t rule_count;
        struct pf_range *ranges;
        uint32_t range_count;
        char *strings;                  /* '\0'-separated; offset 0 is "" */
        uint32_t strings_size;
        unsigned errors;
        bool out_of_memory;
        bool remap_needs_pool;
        uint32_t name;                  /* offsets into strings */
        uint32_t log_path;
        unsigned pool_line;
};

/* Where a problem is: the file (NULL: the policy's own) and line (0: none). */
struct pos {
        const char *file;
        unsigned line;
};

static struct pos at_line(unsigned line)
{
        return (struct pos){ NULL, line };
}

__attribute__((format(printf, 3, 4)))
static void report(struct loader *l, struct pos at, const char *fmt, ...)
{
        char *file = NULL;
        struct pf_diag_entry *entries;
        va_list ap;
        char *text;
        int n;

        l->errors++;
        va_start(ap, fmt);
        n = vasprintf(&text, fmt, ap);
        va_end(ap);
        /* libconfig names an included file as written: with the directory
         * it was found in, it names the file to open. */
        if (n >= 0 && at.file && l->diag->file && strcmp(at.file, l->diag->file) != 0 &&
            (l->include_dir && at.file[0] != '/' ? asprintf(&file, "%s/%s", l->include_dir, at.file) < 0
                                                 : !(file = strdup(at.file)))) {
                free(text);
                file = NULL;
                n = -1;
        }
        entries = n < 0 ? NULL : realloc(l->diag->entries,
                                         (l->diag->count + 1) * sizeof(*entries));
        if (!entries) {
                if (n >= 0) {
                        free(text);
                        free(file);
                }
                l->out_of_memory = true;
                return;
        }
        entries[l->diag->count++] = (struct pf_diag_entry){ at.line, text, file };
        l->diag->entries = entries;
}

/* Keep a copy of text in the policy's strings; returns its offset, 0 when
 * out of memory. */
static uint32_t add_string(struct loader *l, const char *text)
{
        size_t len = strlen(text) + 1;
        char *strings = realloc(l->strings, l->strings_size + len);

        if (!strings || l->strings_size + len > UINT32_MAX) {
                free(strings == l->strings ? NULL : strings);
                l->out_of_memory = true;
                return 0;
        }
        memcpy(strings + l->strings_size, text, len);
        l->strings = strings;
        l->strings_size += (uint32_t)len;
        return l->strings_size - (uint32_t)len;
}

static unsigned line_of(const config_setting_t *s)
{
        return s ? config_setting_source_line(s) : 0;
}

/* Where a setting was written: an @include'd file names itself. */
static struct pos at(const config_setting_t *s)
{
        return (struct pos){ s ? config_setting_source_file(s) : NULL, line_of(s) };
}

/* The string offset of the @include'd file s is in, 0 for the policy's own. */
static uint32_t included_file(struct loader *l, const config_setting_t *s)
{
        const char *file = config_setting_source_file(s);
        char *path = NULL;
        uint32_t offset;

        if (!file || (l->diag->file && strcmp(file, l->diag->file) == 0))
                return 0;
        if (l->include_dir && file[0] != '/' && asprintf(&path, "%s/%s", l->include_dir, file) < 0)
                return 0;
        offset = add_string(l, path ? path : file);
        free(path);
        return offset;
}

/* ---- typed access to settings ------------------------------------------ */

static const char *type_name(int type)
{
        switch (type) {
        case CONFIG_TYPE_GROUP: return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64: return "an integer";
        case CONFIG_TYPE_FLOAT: return "a number";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL: return "a boolean";
        case CONFIG_TYPE_ARRAY: return "an array";
        case CONFIG_TYPE_LIST: return "a list";
        default: return "a value";
        }
}

/* What a setting is called in messages: a name, or a rule's number between
 * two pieces ("rule ", 3, ": to"), put together only when a message is written (a policy of 10,000
 * rules would otherwise spell 30,000 names nobody reads: a fifth of its
 * load). */
struct what {
        const char *before;     /* the whole name when rule is 0 */
        unsigned rule;
        const char *after;
};
#define NAMED(name) ((struct what){ .before = (name) })
#define OF_RULE(before, rule, after) ((struct what){ (before), (rule), (after) })

static const char *what_text(struct what w, char *buf, size_t size)
{
        if (!w.rule)
                return w.before;
        snprintf(buf, size, "%s%u%s", w.before, w.rule, w.after);
        return buf;
}

static bool expect_type(struct loader *l, const config_setting_t *s, int type, struct what what)
{
        int got = config_setting_type(s);
        char label[64];

        if (got == type || (type == CONFIG_TYPE_INT && got == CONFIG_TYPE_INT64))
                return true;
        report(l, at(s), "'%s' must be %s, not %s", what_text(what, label, sizeof(label)), type_name(type),
               type_name(got));
        return false;
}

static const char *get_string(struct loader *l, const config_setting_t *s, struct what what)
{
        return expect_type(l, s, CONFIG_TYPE_STRING, what) ? config_setting_get_string(s) : NULL;
}

/* Edit distance, to suggest the key a typo meant. */
static unsigned distance(const char *a, const char *b)
{
        unsigned row[64], lb = (unsigned)strlen(b);

        if (lb >= 64 || strlen(a) >= 64)
                return 64;
        for (unsigned j = 0; j <= lb; j++)
                row[j] = j;
        for (unsigned i = 1; a[i - 1]; i++) {
                unsigned diag = row[0];

                row[0] = i;
                for (unsigned j = 1; j <= lb; j++) {
                        unsigned up = row[j];
                        unsigned best = diag + (a[i - 1] != b[j - 1]);

                        if (up + 1 < best)
                                best = up + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        diag = up;
                        row[j] = best;
                }
        }
        return row[lb];
}

/* Every member of group must be one of keys: typos are errors, not ignored. */
static void check_keys(struct loader *l, const config_setting_t *group,
                       const char *const *keys, size_t count, struct what where,
                       const config_setting_t **found)
{
        char label[64];

        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
                const char *name = config_setting_name(s);
                const char *best = NULL;
                unsigned best_distance = 3;
                size_t k;

                for (k = 0; k < count && strcmp(keys[k], name) != 0; k++)
                        ;
                if (k < count) {
                        if (found)
                                found[k] = s;
                        continue;
                }
                for (k = 0; k < count; k++) {
                        unsigned d = distance(name, keys[k]);

                        if (d < best_distance) {
                                best_distance = d;
                                best = keys[k];
                        }
                }
                if (best)
                        report(l, at(s), "unknown key '%s'%s (did you mean '%s'?)", name,
                               what_text(where, label, sizeof(label)), best);
                else
                        report(l, at(s), "unknown key '%s'%s", name, what_text(where, label, sizeof(label)));
        }
}

/* A port list setting: a range-list string or a single integer. Returns its
 * sorted ranges in a new array (free() it), or NULL after reporting. */
static struct pf_range *get_ranges(struct loader *l, const config_setting_t *s, struct what what,
                                   size_t *count)
{
        int type = config_setting_type(s);
        struct pf_range *ranges = NULL;
        char why[PF_WHY_SIZE], label[64];
        int r;

        if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
                long long port = config_setting_get_int64(s);

                if (port < 1 || port > PF_PORT_MAX) {
                        report(l, at(s), "%s: port %lld outside 1-65535", what_text(what, label, sizeof(label)),
                               port);
                        return NULL;
                }
                ranges = malloc(sizeof(*ranges));
                if (!ranges) {
                        l->out_of_memory = true;
                        return NULL;
                }
                *ranges = (struct pf_range){ (uint16_t)port, (uint16_t)port };
                *count = 1;
                return ranges;
        }
        if (type != CONFIG_TYPE_STRING) {
                report(l, at(s), "%s must be a port list string or an integer, not %s",
                       what_text(what, label, sizeof(label)), type_name(type));
                return NULL;
        }
        r = pf_ranges_parse(config_setting_get_string(s), &ranges, count, why);
        if (r == -ENOMEM)
                l->out_of_memory = true;
        else if (r < 0)
                report(l, at(s), "%s: %s in '%s'", what_text(what, label, sizeof(label)), why,
                       config_setting_get_string(s));
        return r < 0 ? NULL : ranges;
}

/* ---- top-level keys ------------------------------------------------------ */

static void load_version(struct loader *l, const config_setting_t *root)
{
        const config_setting_t *s = config_setting_get_member(root, "version");

        if (!s) {
                report(l, at_line(1), "'version' is missing: start the policy with 'version = 1;'");
                return;
        }
        if (expect_type(l, s, CONFIG_TYPE_INT, NAMED("version")) && config_setting_get_int64(s) != 1)
                report(l, at(s), "unsupported version %lld: this portfence reads version 1",
                       config_setting_get_int64(s));
}

static void add_ephemeral_item(struct loader *l, const config_setting_t *item)
{
        struct pf_policy *p = l->policy;
        const char *text = get_string(l, item, NAMED("ephemeral"));
        const struct pf_profile *profile;
        struct pf_portset set;
        char why[PF_WHY_SIZE];
        char reason[PF_WHY_SIZE];

        if (!text)
                return;
        profile = pf_profile_find(text);
        if (profile) {
                for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                        if (pf_profile_dynamic(profile, proto, &set, why) < 0) {
                                report(l, at(item), "profile '%s': %s", text, why);
                                return;
                        }
                        pf_portset_union(&p->guarded[proto], &set);
                }
                return;
        }
        if (text[0] < '0' || text[0] > '9') {
                report(l, at(item), "unknown profile '%s' in 'ephemeral' (see 'portfence ranges')",
                       text);
                return;
        }
        if (pf_portset_parse(text, &set, reason) < 0) {
                report(l, at(item), "'ephemeral': %s in '%s'", reason, text);
                return;
        }
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                pf_portset_union(&p->guarded[proto], &set);
}

static void load_ephemeral(struct loader *l, const config_setting_t *root, bool *uses_host)
{
        const config_setting_t *s = config_setting_get_member(root, "ephemeral");
        int type;

        *uses_host = true;
        if (!s) {
                char why[PF_WHY_SIZE];
                struct pf_portset set;

                if (pf_profile_dynamic(pf_profile_find("host"), PF_TCP, &set, why) < 0) {
                        report(l, at_line(0), "default 'ephemeral = \"host\"': %s", why);
                        return;
                }
                for (int proto = 0; proto < PF_PROTO_COUNT; proto++)
                        l->policy->guarded[proto] = set;
                return;
        }
        *uses_host = false;
        type = config_setting_type(s);
        if (type == CONFIG_TYPE_STRING) {
                *uses_host = strcmp(config_setting_get_string(s), "host") == 0;
                add_ephemeral_item(l, s);
                return;
        }
        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
                report(l, at(s), "'ephemeral' must be a string or a list of strings, not %s",
                       type_name(type));
                return;
        }
        if (config_setting_length(s) == 0)
                report(l, at(s), "'ephemeral' is an empty list: name at least one profile or range");
        for (int i = 0; i < config_setting_length(s); i++) {
                const config_setting_t *item = config_setting_get_elem(s, (unsigned)i);

                if (config_setting_type(item) == CONFIG_TYPE_STRING &&
                    strcmp(config_setting_get_string(item), "host") == 0)
                        *uses_host = true;
                add_ephemeral_item(l, item);
        }
}

/* what names the setting in messages: "default_action", "rule 3: action". */
static bool get_action(struct loader *l, const config_setting_t *s, struct what what,
                       enum pf_action *out)
{
        const char *text = get_string(l, s, what);
        char label[64];

        if (!text)
                return false;
        if (pf_action_parse(text, out) < 0) {
                report(l, at(s), "%s: unknown action '%s' (allow, log, refuse or remap)",
                       what_text(what, label, sizeof(label)), text);
                return false;
        }
        return true;
}

/* A string setting whose value must be one of names; returns its index. */
static int get_choice(struct loader *l, const config_setting_t *s, struct what what,
                      const char *const *names, int count, int fallback)
{
        const char *text;
        char label[64];

        if (!s)
                return fallback;
        text = get_string(l, s, what);
        if (!text)
                return fallback;
        char choices[128] = "";

        for (int i = 0; i < count; i++) {
                if (strcmp(names[i], text) == 0)
                        return i;
                snprintf(choices + strlen(choices), sizeof(choices) - strlen(choices), "%s%s",
                         i == 0 ? "" : i == count - 1 ? " or " : ", ", names[i]);
        }
        report(l, at(s), "%s: unknown value '%s' (%s)", what_text(what, label, sizeof(label)), text, choices);
        return fallback;
}

static void load_log(struct loader *l, const config_setting_t *root)
{
        static const char *const keys[] = { "to", "level", "format" };
        static const char *const levels[] = { "error", "warn", "info", "debug" };
        static const char *const formats[] = { "text", "json" };
        struct pf_policy *p = l->policy;
        const config_setting_t *s = config_setting_get_member(root, "log");
        const config_setting_t *to;
        const char *text;

        if (!s || !expect_type(l, s, CONFIG_TYPE_GROUP, NAMED("log")))
                return;
        check_keys(l, s, keys, 3, NAMED(" in 'log'"), NULL);
        p->log_level = (uint8_t)get_choice(l, config_setting_get_member(s, "level"), NAMED("log.level"),
                                           levels, 4, PF_LEVEL_INFO);
        p->log_format = (uint8_t)get_choice(l, config_setting_get_member(s, "format"),
                                            NAMED("log.format"), formats, 2, PF_FORMAT_TEXT);
        to = config_setting_get_member(s, "to");
        if (!to || !(text = get_string(l, to, NAMED("log.to"))))
                return;
        if (strcmp(text, "stderr") == 0) {
                p->log_to = PF_LOG_STDERR;
        } else if (strcmp(text, "syslog") == 0) {
                p->log_to = PF_LOG_SYSLOG;
        } else if (strncmp(text, "file:", 5) == 0 && text[5] == '/') {
                p->log_to = PF_LOG_FILE;
                l->log_path = add_string(l, text + 5);
        } else if (strncmp(text, "file:", 5) == 0) {
                report(l, at(to), "log file '%s' must be an absolute path", text + 5);
        } else {
                report(l, at(to), "unknown log destination '%s' (stderr, syslog or file:PATH)",
                       text);
        }
}

static void load_scalars(struct loader *l, const config_setting_t *root)
{
        static const char *const on_error_names[] = { "refuse", "allow" };
        static const char *const getsockname_names[] = { "requested", "real" };
        static const char *const listen_names[] = { "allow", "log", "refuse" };
        struct pf_policy *p = l->policy;
        const config_setting_t *s;
        enum pf_action action;

        s = config_setting_get_member(root, "default_action");
        if (s && get_action(l, s, NAMED("default_action"), &action)) {
                p->default_action = (uint8_t)action;
                if (action == PF_REMAP) {
                        l->remap_needs_pool = true;
                        l->pool_line = line_of(s);
                }
        }

        s = config_setting_get_member(root, "refuse_errno");
        if (s) {
                const char *name = get_string(l, s, NAMED("refuse_errno"));
                int err;

                if (name && pf_errno_parse(name, &err) == 0)
                        p->refuse_errno = err;
                else if (name)
                        report(l, at(s), "unknown errno name '%s' (e.g. EADDRINUSE, EACCES, EPERM)",
                               name);
        }

        s = config_setting_get_member(root, "redirect_connect");
        if (s && expect_type(l, s, CONFIG_TYPE_BOOL, NAMED("redirect_connect")))
                p->redirect_connect = (uint8_t)config_setting_get_bool(s);
        s = config_setting_get_member(root, "steer");
        if (s && expect_type(l, s, CONFIG_TYPE_BOOL, NAMED("steer")))
                p->steer = (uint8_t)config_setting_get_bool(s);
        s = config_setting_get_member(root, "landlock");
        if (s && expect_type(l, s, CONFIG_TYPE_BOOL, NAMED("landlock")))
                p->landlock = (uint8_t)config_setting_get_bool(s);

        p->on_error = (uint8_t)get_choice(l, config_setting_get_member(root, "on_error"),
                                          NAMED("on_error"), on_error_names, 2, PF_ON_ERROR_REFUSE);
        p->getsockname = (uint8_t)get_choice(l, config_setting_get_member(root, "getsockname"),
                                             NAMED("getsockname"), getsockname_names, 2,
                                             PF_GETSOCKNAME_REQUESTED);
        p->unbound_listen = (uint8_t)get_choice(l, config_setting_get_member(root, "unbound_listen"),
                                                NAMED("unbound_listen"), listen_names, 3, PF_ALLOW);
}

/* client_ports: where the shim takes the local port of outgoing connects
 * from, to make a client collide with a server on purpose. */
static void load_client_ports(struct loader *l, const config_setting_t *root)
{
        const config_setting_t *s = config_setting_get_member(root, "client_ports");
        struct pf_range *ranges;
        size_t count;

        if (!s || !(ranges = get_ranges(l, s, NAMED("'client_ports'"), &count)))
                return;
        for (size_t i = 0; i < count; i++)
                pf_portset_add_range(&l->policy->client_ports, ranges[i].lo, ranges[i].hi);
        free(ranges);
}

/* remap_pool, or the default pool: ports 1024-65535 outside this host's
 * dynamic range and outside every guarded set. */
static void load_pool(struct loader *l, const config_setting_t *root)
{
        struct pf_policy *p = l->policy;
        const config_setting_t *s = config_setting_get_member(root, "remap_pool");

        if (s) {
                size_t count;
                struct pf_range *ranges = get_ranges(l, s, NAMED("'remap_pool'"), &count);

                if (!ranges)
                        return;
                pf_portset_clear(&p->pool);
                for (size_t i = 0; i < count; i++)
                        pf_portset_add_range(&p->pool, ranges[i].lo, ranges[i].hi);
                free(ranges);
                for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                        struct pf_portset both = p->pool;
                        char text[64];

                        pf_portset_intersect(&both, &p->guarded[proto]);
                        if (pf_portset_empty(&both))
                                continue;
                        pf_portset_format(&both, text, sizeof(text));
                        report(l, at(s), "remap_pool ports %s%s are guarded (%s): a remap target must not be",
                               text, strlen(text) >= sizeof(text) - 1 ? "..." : "",
                               pf_proto_name(proto));
                        return;
                }
                return;
        }
        pf_pool_default_of(p);   /* the host's range unreadable, it just stays in the pool */
}

/* ---- rules ------------------------------------------------------------ */

static bool push_range(struct loader *l, struct pf_range range)
{
        if ((l->range_count & (l->range_count - 1)) == 0) {      /* 0, 1, 2, 4, ... */
                size_t capacity = l->range_count ? 2 * (size_t)l->range_count : 1;
                struct pf_range *ranges = realloc(l->ranges, capacity * sizeof(*ranges));

                if (!ranges) {
                        l->out_of_memory = true;
                        return false;
                }
                l->ranges = ranges;
        }
        l->ranges[l->range_count++] = range;
        return true;
}

/* A rule's keys, found in one pass over its members (check_keys): a
 * lookup by name per key would walk them again for each. */
enum rule_key { KEY_PORTS, KEY_PROTO, KEY_FAMILY, KEY_ADDRESS, KEY_PROGRAM, KEY_ACTION, KEY_TO, KEY_COUNT };
static const char *const rule_keys[KEY_COUNT] = { "ports", "proto", "family", "address", "program", "action", "to" };
typedef const config_setting_t *rule_members[KEY_COUNT];

static void load_rule_ports(struct loader *l, rule_members m, struct pf_rule *rule, unsigned index)
{
        const config_setting_t *s = m[KEY_PORTS];
        struct pf_range *ranges;
        size_t count;

        rule->first_range = l->range_count;
        if (!s)
                return;
        ranges = get_ranges(l, s, OF_RULE("rule ", index, ": 'ports'"), &count);
        if (!ranges)
                return;
        rule->has_ports = true;
        for (size_t i = 0; i < count && push_range(l, ranges[i]); i++)
                rule->range_count++;
        free(ranges);
}

static unsigned rule_port_count(const struct loader *l, const struct pf_rule *rule)
{
        unsigned n = 0;

        if (!rule->has_ports)
                return PF_PORT_MAX;
        for (uint32_t i = rule->first_range; i < rule->first_range + rule->range_count; i++)
                n += l->ranges[i].hi - l->ranges[i].lo + 1u;
        return n;
}

static void load_rule_target(struct loader *l, const config_setting_t *group, rule_members m,
                             struct pf_rule *rule, unsigned index)
{
        struct pf_policy *p = l->policy;
        const config_setting_t *s = m[KEY_TO];
        long long to, last;

        if (!s) {
                if (rule->action == PF_REMAP && !l->remap_needs_pool) {
                        l->remap_needs_pool = true;
                        l->pool_line = line_of(group);
                }
                return;
        }
        if (!expect_type(l, s, CONFIG_TYPE_INT, OF_RULE("rule ", index, ": to")))
                return;
        if (rule->action != PF_REMAP) {
                report(l, at(s), "rule %u: 'to' needs action = \"remap\", not \"%s\"", index,
                       pf_action_name((enum pf_action)rule->action));
                return;
        }
        to = config_setting_get_int64(s);
        if (to < 1 || to > PF_PORT_MAX) {
                report(l, at(s), "rule %u: remap target %lld outside 1-65535", index, to);
                return;
        }
        last = to + rule_port_count(l, rule) - 1;
        if (last > PF_PORT_MAX) {
                report(l, at(s), "rule %u: remap targets %lld-%lld run past 65535", index, to,
                       last);
                return;
        }
        for (int proto = 0; proto < PF_PROTO_COUNT; proto++) {
                if (!(rule->protos & PF_PROTO_BIT(proto)))
                        continue;
                if (pf_portset_overlaps_range(&p->guarded[proto], (unsigned)to, (unsigned)last)) {
                        report(l, at(s), "rule %u: remap targets %lld-%lld are guarded (%s): choose ports outside 'ephemeral'",
                               index, to, last, pf_proto_name(proto));
                        return;
                }
        }
        rule->has_to = true;
        rule->to = (uint16_t)to;
}

static void load_rule_conditions(struct loader *l, rule_members m, struct pf_rule *rule, unsigned index)
{
        static const char *const families[] = { "ipv4", "ipv6" };
        const config_setting_t *s;
        const char *text;

        rule->protos = PF_PROTO_BOTH;
        s = m[KEY_PROTO];
        if (s && (text = get_string(l, s, NAMED("proto")))) {
                enum pf_proto proto;

                if (pf_proto_parse(text, &proto) == 0)
                        rule->protos = PF_PROTO_BIT(proto);
                else
                        report(l, at(s), "rule %u: unknown proto '%s' (tcp or udp)", index, text);
        }
        s = m[KEY_FAMILY];
        if (s) {
                rule->has_family = true;
                rule->family = (uint8_t)get_choice(l, s, OF_RULE("rule ", index, ": family"), families, 2,
                                                   PF_IPV4);
        }
        s = m[KEY_ADDRESS];
        if (s && (text = get_string(l, s, NAMED("address")))) {
                if (pf_cidr_parse(text, &rule->cidr) == 0)
                        rule->has_cidr = true;
                else
                        report(l, at(s), "rule %u: bad address or CIDR '%s'", index, text);
        }
        s = m[KEY_PROGRAM];
        if (s && (text = get_string(l, s, NAMED("program")))) {
                if (!*text)
                        report(l, at(s), "rule %u: empty program pattern", index);
                else
                        rule->program = add_string(l, text);
        }
        rule->conditional = rule->has_family || rule->has_cidr || rule->program;
}

static void load_rule(struct loader *l, const config_setting_t *group, unsigned index)
{
        rule_members m = { NULL };
        struct pf_rule *rule = &l->rules[index - 1];
        enum pf_action action;
        const config_setting_t *s;

        rule->line = line_of(group);
        rule->file = included_file(l, group);
        if (config_setting_type(group) != CONFIG_TYPE_GROUP) {
                report(l, at(group), "rule %u must be a group { ... }, not %s", index,
                       type_name(config_setting_type(group)));
                return;
        }
        check_keys(l, group, rule_keys, KEY_COUNT, OF_RULE(" in rule ", index, ""), m);
        load_rule_conditions(l, m, rule, index);
        load_rule_ports(l, m, rule, index);
        s = m[KEY_ACTION];
        if (!s) {
                report(l, at(group), "rule %u: 'action' is missing", index);
                return;
        }
        if (get_action(l, s, OF_RULE("rule ", index, ": action"), &action)) {
                rule->action = (uint8_t)action;
                load_rule_target(l, group, m, rule, index);
        }
}

static void load_rules(struct loader *l, const config_setting_t *root)
{
        const config_setting_t *s = config_setting_get_member(root, "rules");
        unsigned count;

        if (!s)
                return;
        if (config_setting_type(s) != CONFIG_TYPE_LIST) {
                report(l, at(s), "'rules' must be a list ( { ... }, ... ), not %s",
                       type_name(config_setting_type(s)));
                return;
        }
        count = (unsigned)config_setting_length(s);
        if (count > UINT16_MAX) {
                report(l, at(s), "too many rules: %u (at most %u)", count, UINT16_MAX);
                return;
        }
        l->rules = calloc(count ? count : 1, sizeof(struct pf_rule));
        if (!l->rules) {
                l->out_of_memory = true;
                return;
        }
        l->rule_count = count;
        for (unsigned i = 0; i < count; i++)
                load_rule(l, config_setting_get_elem(s, i), i + 1);
}

/* ---- remap targets that collide ------------------------------------------ */

/* Where rule i (0-based) is written, for a report there. */
static struct pos rule_pos(const struct loader *l, unsigned i)
{
        const struct pf_rule *rule = &l->rules[i];

        return (struct pos){ rule->file ? l->strings + rule->file : NULL, rule->line };
}

/* "FILE:LINE" of rule i, for a message about another rule. */
static void rule_where(const struct loader *l, unsigned i, char *buf, size_t size)
{
        struct pos p = rule_pos(l, i);

        snprintf(buf, size, "%s:%u", p.file ? p.file : l->diag->file, p.line);
}

/* The first rule that allows a port of lo-hi for proto, or -1. */
/* Which rule (index + 1, 0: none) has each port of each protocol: the
 * checks below ask a port, not every rule, so a load stays linear in the
 * rules (10,000 rules: a few milliseconds, not seconds). */
typedef uint16_t port_owners[PF_PROTO_COUNT][PF_PORT_MAX + 1];     /* rules <= UINT16_MAX */

/* The ports allow rules give to servers, the first rule of a port owning it. */
static void paint_allowed(const struct loader *l, port_owners owners)
{
        for (unsigned i = l->rule_count; i-- > 0;) {
                const struct pf_rule *rule = &l->rules[i];

                if (rule->action != PF_ALLOW || !rule->has_ports)
                        continue;
                for (uint32_t k = 0; k < rule->range_count; k++) {
                        const struct pf_range *r = &l->ranges[rule->first_range + k];

                        for (unsigned proto = 0; proto < PF_PROTO_COUNT; proto++)
                                if (rule->protos & PF_PROTO_BIT(proto))
                                        for (unsigned port = r->lo; port <= r->hi; port++)
                                                owners[proto][port] = (uint16_t)(i + 1);
                }
        }
}

/* The first owner in lo-hi for the rule's protocols, or 0. */
static uint32_t owner_in(port_owners owners, const struct pf_rule *rule, unsigned lo, unsigned hi)
{
        uint32_t first = 0;

        for (unsigned proto = 0; proto < PF_PROTO_COUNT; proto++)
                for (unsigned port = lo; (rule->protos & PF_PROTO_BIT(proto)) && port <= hi; port++)
                        if (owners[proto][port] && (!first || owners[proto][port] < first))
                                first = owners[proto][port];
        return first;
}

/* Give lo-hi to the rule for its protocols: 0, or the owner of a port taken
 * already (nothing is given then). Ranges that do not collide are given
 * once each, so all of them cost at most every port once. */
static uint32_t take_targets(port_owners owners, const struct pf_rule *rule, unsigned index, unsigned lo,
                             unsigned hi)
{
        uint32_t taken = owner_in(owners, rule, lo, hi);

        for (unsigned proto = 0; !taken && proto < PF_PROTO_COUNT; proto++)
                for (unsigned port = lo; (rule->protos & PF_PROTO_BIT(proto)) && port <= hi; port++)
                        owners[proto][port] = (uint16_t)(index + 1);
        return taken;
}

/* Two servers must never be sent to one port: a rule's "to" range that
 * overlaps another's, a port an allow rule gives to a server, or the pool
 * others are moved into, is an error naming both places. */
static void check_remap_targets(struct loader *l)
{
        bool pool_used = l->remap_needs_pool || l->policy->default_action == PF_REMAP;
        port_owners *allowed, *targets;
        char where[PATH_MAX + 16];
        unsigned with_to = 0;

        for (unsigned i = 0; i < l->rule_count; i++)
                with_to += l->rules[i].action == PF_REMAP && l->rules[i].has_to;
        if (!with_to)
                return;
        allowed = calloc(1, sizeof(*allowed));
        targets = calloc(1, sizeof(*targets));
        if (!allowed || !targets) {
                l->out_of_memory = true;
                goto out;
        }
        paint_allowed(l, *allowed);
        for (unsigned i = 0; i < l->rule_count; i++) {
                const struct pf_rule *a = &l->rules[i];
                unsigned lo = a->to, hi;
                uint32_t j;

                if (a->action != PF_REMAP || !a->has_to)
                        continue;
                hi = lo + rule_port_count(l, a) - 1u;
                if ((j = take_targets(*targets, a, i, lo, hi))) {
                        rule_where(l, j - 1, where, sizeof(where));
                        report(l, rule_pos(l, i), "rule %u: remap targets %u-%u overlap those of rule %u (%s): "
                               "two servers would be sent to one port", i + 1, lo, hi, j, where);
                } else if ((j = owner_in(*allowed, a, lo, hi))) {
                        rule_where(l, j - 1, where, sizeof(where));
                        report(l, rule_pos(l, i), "rule %u: remap targets %u-%u take ports rule %u (%s) "
                               "allows to servers", i + 1, lo, hi, j, where);
                } else if (pool_used && pf_portset_overlaps_range(&l->policy->pool, lo, hi)) {
                        report(l, rule_pos(l, i), "rule %u: remap targets %u-%u are in the remap pool, "
                               "where other servers are moved", i + 1, lo, hi);
                }
        }
out:
        free(allowed);
        free(targets);
}

/* ---- load --------------------------------------------------------------- */

static void load_config(struct loader *l, const config_setting_t *root)
{
        static const char *const keys[] = {
                "version", "ephemeral", "default_action", "refuse_errno", "remap_pool",
                "redirect_connect", "on_error", "log", "rules", "getsockname", "unbound_listen",
                "client_ports", "steer", "landlock",
        };
        bool uses_host;

        check_keys(l, root, keys, sizeof(keys) / sizeof(keys[0]), NAMED(""), NULL);
        load_version(l, root);
        load_ephemeral(l, root, &uses_host);
        pf_rank_domain_fill(l->policy, uses_host);
        load_scalars(l, root);
        load_log(l, root);
        load_pool(l, root);
        load_client_ports(l, root);
        load_rules(l, root);
        if (l->errors == 0)
                check_remap_targets(l);
        if (l->remap_needs_pool && pf_portset_empty(&l->policy->pool))
                report(l, at_line(l->pool_line ? l->pool_line : 1),
                       "remap needs a port to go to, but remap_pool is empty");
}

/* Messages in file order; stable, so one line's messages keep their order. */
static void sort_diag(struct pf_diag *diag)
{
        for (size_t i = 1; i < diag->count; i++) {
                struct pf_diag_entry e = diag->entries[i];
                size_t j = i;

                for (; j > 0 && diag->entries[j - 1].line > e.line; j--)
                        diag->entries[j] = diag->entries[j - 1];
                diag->entries[j] = e;
        }
}

/* Pack what was parsed into a compiled policy, or drop it all. */
static int finish(struct loader *l, struct pf_policy **out)
{
        struct pf_policy_parts parts = {
                .head = l->policy, .rules = l->rules, .rule_count = l->rule_count,
                .ranges = l->ranges, .range_count = l->range_count,
                .strings = l->strings, .strings_size = l->strings_size,
                .name = l->name, .log_path = l->log_path,
        };
        int r = l->out_of_memory ? -ENOMEM : l->errors ? -EINVAL : 0;

        sort_diag(l->diag);
        if (r == 0) {
                *out = pf_policy_pack(&parts);  /* takes l->policy */
                r = *out ? 0 : -ENOMEM;
        } else {
                free(l->policy);
        }
        free(l->rules);
        free(l->ranges);
        free(l->strings);
        return r;
}

typedef int (*config_reader)(config_t *cfg, const void *source);

static int read_text(config_t *cfg, const void *source)
{
        return config_read_string(cfg, source);
}

static int read_stream(config_t *cfg, const void *source)
{
        return config_read(cfg, (FILE *)source);
}

/* Line `line` of text (1-based) into buf, "" if there is none. */
static void text_line(const char *text, unsigned line, char *buf, size_t size)
{
        for (unsigned n = 1; text && n < line; n++) {
                text = strchr(text, '\n');
                text = text ? text + 1 : NULL;
        }
        snprintf(buf, size, "%.*s", text ? (int)strcspn(text, "\n") : 0, text ? text : "");
}

/* libconfig's parse error, where it is; a missing @include file named (the
 * library says only "cannot open include file"). text: the policy's own
 * text, when it did not come from a file. */
static void report_parse_error(struct loader *l, const config_t *cfg, const char *text)
{
        struct pos where = { config_error_file(cfg), (unsigned)config_error_line(cfg) };
        char line[512] = "", *name, *end;

        if (strstr(config_error_text(cfg), "include") && where.line) {
                if (where.file || l->diag->file) {
                        FILE *f = fopen(where.file ? where.file : l->diag->file, "re");

                        for (unsigned n = 0; f && n < where.line && fgets(line, sizeof(line), f); n++)
                                ;
                        if (f)
                                fclose(f);
                }
                if (!where.file && text)
                        text_line(text, where.line, line, sizeof(line));
                name = strstr(line, "@include");
                name = name ? strchr(name, '"') : NULL;
                end = name ? strchr(name + 1, '"') : NULL;
                if (end) {
                        report(l, where, "%s '%.*s'%s", config_error_text(cfg), (int)(end - name - 1),
                               name + 1, config_get_include_dir(cfg) ? "" : " (relative to the current "
                                                                          "directory)");
                        return;
                }
        }
        report(l, where, "%s", config_error_text(cfg));
}

static int load(config_reader reader, const void *source, const char *text, const char *include_dir,
                const char *name, struct pf_policy **out, struct pf_diag *diag)
{
        struct loader l = { .diag = diag };
        config_t cfg;

        l.policy = calloc(1, sizeof(*l.policy));
        if (!l.policy)
                return -ENOMEM;
        pf_policy_head_defaults(l.policy);
        add_string(&l, "");
        l.name = add_string(&l, name);
        config_init(&cfg);
        l.include_dir = include_dir;
        if (include_dir)
                config_set_include_dir(&cfg, include_dir);
        if (reader(&cfg, source) != CONFIG_TRUE)
                report_parse_error(&l, &cfg, text);
        else
                load_config(&l, config_root_setting(&cfg));
        config_destroy(&cfg);
        return finish(&l, out);
}

static int start_diag(struct pf_diag *diag, const char *name)
{
        memset(diag, 0, sizeof(*diag));
        diag->file = strdup(name);
        return diag->file ? 0 : -ENOMEM;
}

int pf_policy_load_text(const char *text, const char *name, struct pf_policy **out,
                        struct pf_diag *diag)
{
        int r = start_diag(diag, name);

        return r < 0 ? r : load(read_text, text, text, NULL, name, out, diag);
}

/* After the name of the setting at the start of text's line `line`: its
 * "=" or ":" and the "(" of a list, across blanks and line ends. */
static const char *list_opening_at_line(const char *text, unsigned line, const char *name)
{
        size_t len = strlen(name);
        const char *at = text;

        for (unsigned n = 1; at && n < line; n++) {
                at = strchr(at, '\n');
                at = at ? at + 1 : NULL;
        }
        for (; at && *at && *at != '\n'; at++) {
                const char *p = at + len;

                if (strncmp(at, name, len) != 0 || (at > text && (isalnum((unsigned char)at[-1]) ||
                                                                  at[-1] == '_' || at[-1] == '-')))
                        continue;
                p += strspn(p, " \t\r\n");
                if (*p != '=' && *p != ':')
                        continue;
                p += 1 + strspn(p + 1, " \t\r\n");
                if (*p == '(')
                        return p + 1;
        }
        return NULL;
}

int pf_policy_rules_opening(const char *text, const char *include_dir, size_t *offset)
{
        const config_setting_t *rules;
        const char *opening = NULL;
        config_t cfg;
        int r;

        config_init(&cfg);
        if (include_dir)
                config_set_include_dir(&cfg, include_dir);
        if (config_read_string(&cfg, text) != CONFIG_TRUE) {
                config_destroy(&cfg);
                return -EINVAL;
        }
        rules = config_setting_get_member(config_root_setting(&cfg), "rules");
        if (!rules) {
                *offset = strlen(text);
                r = 0;
        } else if (config_setting_source_file(rules)) {
                r = -EXDEV;
        } else {
                opening = list_opening_at_line(text, line_of(rules), "rules");
                r = opening ? 1 : -EINVAL;
                if (opening)
                        *offset = (size_t)(opening - text);
        }
        config_destroy(&cfg);
        return r;
}

/* path opened for reading if it is a regular file: a FIFO would block the
 * open or the read, a device would feed it anything. NULL with *r -errno
 * (-EISDIR, -EINVAL for what is neither a file nor a directory). */
static FILE *open_regular(const char *path, int *r)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        struct stat st;
        FILE *f;

        if (fd < 0) {
                *r = -errno;
                return NULL;
        }
        if (fstat(fd, &st) < 0)
                *r = -errno;
        else if (!S_ISREG(st.st_mode))
                *r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        else if (fcntl(fd, F_SETFL, 0) < 0 || !(f = fdopen(fd, "r")))  /* blocking again */
                *r = -errno;
        else
                return f;
        close(fd);
        return NULL;
}

int pf_policy_load(const char *path, struct pf_policy **out, struct pf_diag *diag)
{
        char *dir, *slash;
        FILE *f;
        int r;

        r = start_diag(diag, path);
        if (r < 0)
                return r;
        if (strcmp(path, PF_POLICY_BUILTIN) == 0) {
                char why[PF_WHY_SIZE];

                r = pf_policy_default(out, why);
                if (r < 0) {
                        struct loader l = { .diag = diag };

                        report(&l, at_line(0), "%s", why);
                }
                return r;
        }
        f = open_regular(path, &r);
        if (!f) {
                struct loader l = { .diag = diag };

                report(&l, at_line(0), "%s", r == -EINVAL ? "not a regular file: a policy is read from one only"
                                                          : strerror(-r));
                return r;
        }
        /* @include is relative to the policy's own directory. */
        dir = strdup(path);
        if (!dir) {
                fclose(f);
                return -ENOMEM;
        }
        slash = strrchr(dir, '/');
        if (slash)
                slash[slash == dir] = '\0';    /* "/x.conf" -> "/" */
        r = load(read_stream, f, NULL, slash ? dir : NULL, path, out, diag);
        free(dir);
        fclose(f);
        return r;
}

const char *pf_policy_path(const char *explicit_path)
{
        const char *env;

        if (explicit_path)
                return explicit_path;
        env = secure_getenv("PORTFENCE_CONFIG");
        if (env && *env)
                return env;
        if (access(PF_POLICY_SYSTEM, F_OK) == 0)
                return PF_POLICY_SYSTEM;
        return PF_POLICY_BUILTIN;
}

