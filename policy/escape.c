/* SPDX-License-Identifier: MIT */
/* How text a program controls (its name, a path) is written out: one rule
 * for JSON and one for text lines, shared by the command and the shim, so no
 * name can break a line, forge one, or inject a field. Allocation-free and
 * async-signal-safe. */
#include <string.h>

#include "policy.h"

static const char hex[] = "0123456789abcdef";

/* PREFIX and the byte in two hex digits, into buf. */
static const char *hex_escape(char buf[PF_ESCAPE_SIZE], const char *prefix, unsigned char c)
{
        size_t n = strlen(prefix);

        memcpy(buf, prefix, n);
        buf[n] = hex[c >> 4];
        buf[n + 1] = hex[c & 15];
        buf[n + 2] = '\0';
        return buf;
}

/* Inside a JSON string: '"' and '\' escaped, every other byte below 0x20 or
 * from 0x7f up as \u00XX. Names are bytes, not always UTF-8: read as
 * Latin-1, any byte string becomes valid JSON, and the bytes come back
 * exactly (each code point below 0x100 is one byte). */
const char *pf_json_escape(unsigned char c, char buf[PF_ESCAPE_SIZE])
{
        if (c == '"' || c == '\\') {
                buf[0] = '\\';
                buf[1] = (char)c;
                buf[2] = '\0';
                return buf;
        }
        return c >= 0x20 && c < 0x7f ? NULL : hex_escape(buf, "\\u00", c);
}

/* On a text line: control bytes, DEL and '\' as \xNN, so a line stays one
 * line; other bytes (UTF-8 names) as they are. */
const char *pf_text_escape(unsigned char c, char buf[PF_ESCAPE_SIZE])
{
        return c >= 0x20 && c != 0x7f && c != '\\' ? NULL : hex_escape(buf, "\\x", c);
}
