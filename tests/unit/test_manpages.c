/*
 * test_manpages.c: skolsync.yaml(5) documents every key the option tables
 * declare (it is generated from them), skolsync(1) has a section for every
 * command `skolsync --help` lists, and both render without a warning.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "connector.h"
#include "daemon.h"
#include "manpage.h"
#include "sk_test.h"

#define PAGE_1 SK_BINARY_DIR "/man/skolsync.1"
#define PAGE_5 SK_BINARY_DIR "/man/skolsync.yaml.5"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s (built by the skolsync_man target)", path);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, mem);
    fclose(f);
    fclose(mem);
    return text;
}

static char *roff(const char *text)
{
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    sk_manpage_write_text(mem, text);
    fclose(mem);
    return out;
}

/* Every option of table (a group's under "group.") is a .TP tag of page. */
static size_t expect_documented(const char *page, const struct sk_option *table, const char *prefix,
                                const char *where)
{
    size_t checked = 0;
    for (const struct sk_option *o = table; o && o->name; o++) {
        char *name = skt_fmt("%s%s", prefix, o->name);
        if (o->type == SK_OPT_GROUP && o->sub) {
            char *sub = skt_fmt("%s.", name);
            checked += expect_documented(page, o->sub, sub, where);
            free(sub);
        } else {
            char *escaped = roff(name);
            char *tag = skt_fmt(".TP\n\\fB%s\\fR\n", escaped);
            cr_expect_not_null(strstr(page, tag), "%s: option \"%s\" is not in %s", where, name,
                               PAGE_5);
            free(tag);
            free(escaped);
            checked++;
        }
        free(name);
    }
    return checked;
}

Test(manpages, every_option_of_every_table_is_in_skolsync_yaml_5)
{
    char *page = read_file(PAGE_5);
    size_t n = expect_documented(page, sk_core_options, "", "core");
    n += expect_documented(page, sk_source_settings_options, "", "every source");
    n += expect_documented(page, sk_sink_settings_options, "", "every sink");
    for (size_t i = 0; sk_registry_sources[i]; i++) {
        char *type = roff(sk_registry_sources[i]->type);
        char *heading = skt_fmt(".SS %s\n", type);
        cr_expect_not_null(strstr(page, heading), "no section for %s",
                           sk_registry_sources[i]->type);
        n += expect_documented(page, sk_registry_sources[i]->options, "",
                               sk_registry_sources[i]->type);
        free(heading);
        free(type);
    }
    for (size_t i = 0; sk_registry_sinks[i]; i++) {
        char *type = roff(sk_registry_sinks[i]->type);
        char *heading = skt_fmt(".SS %s\n", type);
        cr_expect_not_null(strstr(page, heading), "no section for %s", sk_registry_sinks[i]->type);
        n += expect_documented(page, sk_registry_sinks[i]->options, "", sk_registry_sinks[i]->type);
        free(heading);
        free(type);
    }
    cr_log_info("%zu options documented", n);
    cr_assert_gt(n, 100);
    free(page);
}

/* The built page holds exactly what the tables write now: a stale page (the
 * build step skipped or a table changed without a rebuild) fails here. */
Test(manpages, the_page_holds_the_current_generated_reference)
{
    char *page = read_file(PAGE_5);
    char *generated = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&generated, &len);
    sk_manpage_write_options(mem);
    fclose(mem);
    cr_assert_gt(len, 1000);
    cr_assert_not_null(strstr(page, generated), "%s differs from `skolsync connectors --man`",
                       PAGE_5);
    cr_assert_null(strstr(page, "@OPTIONS@"));
    cr_assert_null(strstr(page, "@VERSION@"));
    free(generated);
    free(page);
}

Test(manpages, text_is_escaped_for_roff)
{
    char *out = roff(".x-\\ 'q Lärare \xe2\x82\xac");
    cr_assert_str_eq(out, "\\&.x\\-\\e 'q L\\[u00E4]rare \\[u20AC]");
    free(out);
    out = roff("'leading quote");
    cr_assert_str_eq(out, "\\&'leading quote");
    free(out);
    out = roff("bad \xff byte");
    cr_assert_str_eq(out, "bad \\[u00FF] byte");
    free(out);
}

Test(manpages, skolsync_1_has_a_section_for_every_command)
{
    char *page = read_file(PAGE_1);
    char *help = NULL;
    char *cmd = skt_fmt("%s --help", skt_skolsync());
    cr_assert_eq(skt_sh(cmd, 10, &help), 0);
    const char *list = strstr(help, "commands:\n");
    cr_assert_not_null(list, "%s", help);
    size_t n = 0;
    for (const char *line = strchr(list, '\n') + 1; strncmp(line, "  ", 2) == 0;
         line = strchr(line, '\n') + 1) {
        char name[64];
        cr_assert_eq(sscanf(line, " %63s", name), 1);
        char *section = skt_fmt(".SS %s\n", name);
        cr_expect_not_null(strstr(page, section), "skolsync(1) has no section for \"%s\"", name);
        free(section);
        n++;
    }
    cr_assert_geq(n, 7, "%s", help);
    for (const char *code = "0\0001\0002\0003\00064\0"; *code; code += strlen(code) + 1) {
        char *item = skt_fmt(".TP\n.B %s\n", code);
        cr_expect_not_null(strstr(page, item), "EXIT STATUS lacks %s", code);
        free(item);
    }
    free(cmd);
    free(help);
    free(page);
}

/* man-db's and groff's own checks: any warning (a bad escape, a line that
 * cannot be broken at 80 columns, an unknown macro) fails. */
static void expect_renders_clean(const char *page)
{
    char *out = NULL;
    char *cmd = skt_fmt("MANWIDTH=80 man --warnings -l %s 2>&1 >/dev/null", page);
    cr_assert_eq(skt_sh(cmd, 60, &out), 0, "%s", out);
    cr_expect_str_empty(out, "man --warnings -l %s:\n%s", page, out);
    free(out);
    free(cmd);
    cmd = skt_fmt("groff -man -ww -Tutf8 -z %s 2>&1", page);
    cr_assert_eq(skt_sh(cmd, 60, &out), 0, "%s", out);
    cr_expect_str_empty(out, "groff -ww %s:\n%s", page, out);
    free(out);
    free(cmd);
}

Test(manpages, both_pages_render_without_warnings)
{
    expect_renders_clean(PAGE_1);
    expect_renders_clean(PAGE_5);
}
