/*
 * manpage.c: writes the reference sections of skolsync.yaml(5) from the
 * option tables (the core's, the source and sink settings and every
 * registered connector's), the same tables sk_options_apply() validates
 * with. Must never hold option text of its own: a key documented here that
 * no table declares, or the other way round, is the drift this file exists
 * to prevent.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "connector.h"
#include "daemon.h"
#include "manpage.h"

/* The next code point of a UTF-8 string; a byte that does not start a valid
 * sequence stands for itself, as Latin-1 (U+FFFD would hide what it was). */
static uint32_t next_code_point(const unsigned char **s)
{
    const unsigned char *p = *s;
    int extra = p[0] >= 0xF0 ? 3 : p[0] >= 0xE0 ? 2 : p[0] >= 0xC0 ? 1 : 0;
    uint32_t cp = extra ? p[0] & (0x3F >> extra) : p[0];
    for (int i = 1; i <= extra; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *s = p + 1;
            return p[0];
        }
        cp = cp << 6 | (p[i] & 0x3F);
    }
    *s = p + 1 + extra;
    return cp;
}

void sk_manpage_write_text(FILE *out, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    if (*p == '.' || *p == '\'')
        fputs("\\&", out);
    while (*p) {
        if (*p >= 0x80) {
            fprintf(out, "\\[u%04X]", (unsigned)next_code_point(&p));
            continue;
        }
        if (*p == '\\')
            fputs("\\e", out);
        else if (*p == '-')
            fputs("\\-", out);
        else
            fputc(*p, out);
        p++;
    }
}

static void write_option(FILE *out, const struct sk_option *o, const char *name)
{
    fputs(".TP\n\\fB", out);
    sk_manpage_write_text(out, name);
    fputs("\\fR\n", out);
    /* One sentence: "duration, default 30s: how long ...". */
    fputs(sk_opt_type_name(o->type), out);
    if (o->required) {
        fputs(", required", out);
    } else if (o->def) {
        fputs(", default \\fB", out);
        sk_manpage_write_text(out, o->def);
        fputs("\\fR", out);
    } else {
        fputs(", no default", out);
    }
    if (o->help) {
        fputs(":\n", out);
        sk_manpage_write_text(out, o->help);
    }
    fputs(".\n", out);
    if (o->type == SK_OPT_ENUM && o->choices) {
        fputs("One of:", out);
        for (const char *const *c = o->choices; *c; c++) {
            fputs(c == o->choices ? " \\fB" : ", \\fB", out);
            sk_manpage_write_text(out, *c);
            fputs("\\fR", out);
        }
        fputs(".\n", out);
    }
    if (o->type == SK_OPT_SECRET)
        fputs("A secret: give it as \\fB${env:\\fINAME\\fB}\\fR or "
              "\\fB${file:\\fIPATH\\fB}\\fR; it is never printed.\n",
              out);
}

/* Every option of table, a group's options under "group.". */
static void write_table(FILE *out, const struct sk_option *table, const char *prefix)
{
    if (!table)
        return;
    for (const struct sk_option *o = table; o->name; o++) {
        char name[256];
        snprintf(name, sizeof(name), "%s%s", prefix, o->name);
        if (o->type == SK_OPT_GROUP && o->sub) {
            char sub[sizeof(name) + 2];
            snprintf(sub, sizeof(sub), "%s.", name);
            write_table(out, o->sub, sub);
        } else if (o->type == SK_OPT_GROUPS && o->sub) {
            write_option(out, o, name); /* the map itself, then what each entry takes */
            char sub[sizeof(name) + 16];
            snprintf(sub, sizeof(sub), "%s.<name>.", name);
            write_table(out, o->sub, sub);
        } else {
            write_option(out, o, name);
        }
    }
}

static void write_heading(FILE *out, const char *macro, const char *title, const char *what)
{
    fprintf(out, "%s ", macro);
    sk_manpage_write_text(out, title);
    fputs("\n", out);
    if (what && *what) {
        /* A table's help is a phrase ("the HTTP server"); here it stands alone. */
        char first[2] = {(char)toupper((unsigned char)what[0]), '\0'};
        sk_manpage_write_text(out, first);
        sk_manpage_write_text(out, what + 1);
        fputs(".\n", out);
    }
}

static void write_sink_privacy(FILE *out, const struct sk_sink_ops *ops)
{
    fputs(".PP\nPrivacy defaults: \\fBprotected_identities\\fR \\fB", out);
    sk_manpage_write_text(out, ops->default_protected ? ops->default_protected : "allow");
    fputs("\\fR, \\fBdrop_fields\\fR [", out);
    for (size_t i = 0; ops->default_drop_fields && ops->default_drop_fields[i]; i++) {
        fputs(i ? ", " : "", out);
        sk_manpage_write_text(out, ops->default_drop_fields[i]);
    }
    fputs("].\n", out);
}

void sk_manpage_write_options(FILE *out)
{
    fputs(".SH CORE KEYS\n"
          "The top level of the file, besides \\fBsources\\fR and \\fBsinks\\fR.\n",
          out);
    for (const struct sk_option *o = sk_core_options; o->name; o++) {
        if (o->type == SK_OPT_GROUP && o->sub) {
            write_heading(out, ".SS", o->name, o->help);
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "%s.", o->name);
            write_table(out, o->sub, prefix);
        }
    }
    fputs(".SS Other top\\-level keys\n", out);
    for (const struct sk_option *o = sk_core_options; o->name; o++)
        if (o->type != SK_OPT_GROUP)
            write_option(out, o, o->name);

    fputs(".SH SOURCES\n"
          "\\fBsources\\fR maps a name to a source. Besides its type's own options "
          "(SOURCE TYPES) every source takes these keys:\n",
          out);
    write_table(out, sk_source_settings_options, "");
    fputs(".SH SINKS\n"
          "\\fBsinks\\fR maps a name to a sink. Besides its type's own options "
          "(SINK TYPES) every sink takes these keys:\n",
          out);
    write_table(out, sk_sink_settings_options, "");

    fputs(".SH SOURCE TYPES\n", out);
    for (size_t i = 0; sk_registry_sources[i]; i++) {
        write_heading(out, ".SS", sk_registry_sources[i]->type, sk_registry_sources[i]->summary);
        write_table(out, sk_registry_sources[i]->options, "");
    }
    fputs(".SH SINK TYPES\n", out);
    for (size_t i = 0; sk_registry_sinks[i]; i++) {
        write_heading(out, ".SS", sk_registry_sinks[i]->type, sk_registry_sinks[i]->summary);
        write_table(out, sk_registry_sinks[i]->options, "");
        write_sink_privacy(out, sk_registry_sinks[i]);
    }
}
