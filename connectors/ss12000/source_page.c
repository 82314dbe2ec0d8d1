/*
 * source_page.c: what one page of an SS 12000 server says: its data and
 * next token, the records in it that lack required fields, hold bytes
 * cJSON would break or numbers a double would change, the server's short reason for an error, and
 * whether its paging would ever end.
 *
 * Must never: quote more of a body than a short reason (a body may hold
 * personal data), or skip a page it could not read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "connector.h"
#include "log.h"
#include "model.h"
#include "source.h"
#include "source_internal.h"
#include "util.h"

static uint64_t digest(const char *text)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = text; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

void ss_paging_guard_forget(struct paging_guard *g)
{
    g->chain[0] = '\0';
    g->n = 0;
    g->empty_in_a_row = 0;
    g->hit = false;
}

/*
 * Called with each page of a chain (chain: its identity; items on the page;
 * next: the token it gave, or NULL). -1 with err on a token seen before in
 * the chain, or too many empty pages with a token in a row, and g->hit set.
 * RETRIABLE, not FATAL: the chain's own type (or deletedEntities) fails on
 * its own (ss_part_failed), the other types are stored.
 */
int ss_paging_guard_page(struct paging_guard *g, const char *chain, int page_no, size_t items,
                         const char *next, const char *url, struct sk_error *err)
{
    if (page_no == 0 || strcmp(g->chain, chain) != 0) {
        snprintf(g->chain, sizeof(g->chain), "%s", chain);
        g->n = 0;
        g->empty_in_a_row = 0;
    }
    if (!next)
        return 0;
    uint64_t d = digest(next);
    bool seen = false;
    for (size_t k = 0; k < g->n && !seen; k++)
        seen = g->tokens[k] == d;
    if (seen) {
        g->hit = true;
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "GET %s: the server sent a pageToken it had sent before in this "
                            "query (after %zu pages): paging would never end",
                            url, g->n);
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->tokens = sk_realloc(g->tokens, g->cap * sizeof(*g->tokens));
    }
    g->tokens[g->n++] = d;
    g->empty_in_a_row = items ? 0 : g->empty_in_a_row + 1;
    if (g->empty_in_a_row > EMPTY_PAGES_MAX) {
        g->hit = true;
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "GET %s: %d empty pages in a row, each with a new pageToken: "
                            "paging would never end",
                            url, g->empty_in_a_row);
    }
    return 0;
}

/*
 * The start of a body for a log line: one line, printable. Only for bodies
 * that are not JSON (an HTML error page): a cut-off JSON page holds personal
 * data, and logs never do.
 */
static void snippet(const char *body, char out[64])
{
    size_t skip = body ? strspn(body, " \t\r\n") : 0;
    if (body && (body[skip] == '{' || body[skip] == '[')) {
        snprintf(out, 64, "cut-off or invalid JSON");
        return;
    }
    size_t k = 0;
    for (; body && body[k] && k < 63; k++)
        out[k] = (unsigned char)body[k] < 0x20 ? ' ' : body[k];
    out[k] = '\0';
}

/* Called after ss_parse_page: r->arena holds the page's parse. */
struct ss_page_check ss_page_check(const struct ss_resp *r)
{
    struct ss_page_check pc = {.body = r->body};
    size_t at;
    bool bad = r->text_checked ? r->text_bad : r->body && sk_json_text_bad(r->body, r->len, &at);
    pc.inexact = r->arena && sk_json_arena_inexact(r->arena, &pc.inexact_at);
    if (r->body && (bad || pc.inexact))
        pc.n_spans = sk_json_array_spans(r->body, r->len, "data", &pc.spans);
    return pc;
}

/* What is wrong with item k (why, at byte at of it) into err, PERMANENT. */
static void item_error(struct sk_error *err, const struct sk_entity *e, const char *why, size_t at,
                       size_t k)
{
    sk_error_set(err, SK_ERR_PERMANENT, "%s: %s at byte %zu of the record (item %zu of the page)",
                 e->name, why, at, k);
}

/* Dead-letters item k if its bytes are bad; true if it did. */
bool ss_page_item_bad(const struct ss_page_check *pc, size_t k, const struct sk_entity *e,
                      const char *url, struct sk_batch *out)
{
    if (k >= pc->n_spans)
        return false;
    const char *start = pc->body + pc->spans[k][0];
    size_t len = pc->spans[k][1] - pc->spans[k][0], at;
    const char *bad = sk_json_text_bad(start, len, &at);
    if (!bad)
        return false;
    struct sk_error err = {0};
    item_error(&err, e, bad, at, k);
    sk_batch_add_bad(out, e, NULL, (uint8_t *)sk_strndup(start, len), len, url, &err);
    return true;
}

/*
 * The page's parse names only its first such number: an item that ends
 * before it is clean, one after it is parsed again on its own for its
 * verdict and position (only on such a page, nearly never).
 */
bool ss_page_item_inexact(const struct ss_page_check *pc, size_t k, const struct sk_entity *e,
                          struct ss_item_refusal *why)
{
    if (!pc->inexact || k >= pc->n_spans || pc->spans[k][1] <= pc->inexact_at)
        return false;
    const char *start = pc->body + pc->spans[k][0];
    size_t len = pc->spans[k][1] - pc->spans[k][0], at;
    struct sk_json_arena *arena;
    const char *inexact =
        sk_json_arena_parse(start, len, &arena) ? sk_json_arena_inexact(arena, &at) : NULL;
    sk_json_arena_free(arena);
    if (!inexact)
        return false;
    item_error(&why->err, e, inexact, at, k);
    why->text = start;
    why->len = len;
    return true;
}

/*
 * What the server said about an error, short and printable: the message of
 * a JSON error body (message, detail, error_description, title, error or
 * code), else the start of a text body's first line. Never more: an error
 * body may quote the request, and the reason reaches logs and the API.
 */
void ss_server_reason(const struct ss_resp *r, char out[REASON_MAX])
{
    static const char *const keys[] = {"message", "detail", "error_description",
                                       "title",   "error",  "code"};
    const char *text = NULL;
    cJSON *doc = r->body ? cJSON_ParseWithLength(r->body, r->len) : NULL;
    for (size_t k = 0; cJSON_IsObject(doc) && !text && k < sizeof(keys) / sizeof(keys[0]); k++)
        text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, keys[k]));
    if (!text && doc)
        text = "a JSON body without a message";
    if (!text)
        text = r->body && r->len ? r->body : "an empty body";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)text;
         *p && *p != '\n' && k < REASON_MAX - 4; p++)
        out[k++] = *p >= 0x20 && *p < 0x7f ? (char)*p : '?';
    if (k == REASON_MAX - 4 && text[k]) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    cJSON_Delete(doc);
}

/*
 * Parses a list/deletedEntities page: the body, its data and its next token.
 * The tree stays r's (r->arena): valid until ss_resp_free(r), never deleted
 * on its own.
 */
cJSON *ss_parse_page(struct ss_resp *r, const char *url, const cJSON **data, const char **next,
                     struct sk_error *err)
{
    if (r->status != 200) {
        /* what the server said, short: never the body itself */
        char why[REASON_MAX];
        ss_server_reason(r, why);
        sk_error_set(err, SK_ERR_RETRIABLE, "GET %s: HTTP %ld: %s", url, r->status, why);
        return NULL;
    }
    cJSON *doc = r->json ? r->json : sk_json_arena_parse(r->body, r->len, &r->arena);
    r->json = doc;
    if (!cJSON_IsObject(doc)) {
        /* An HTML error page with 200, a cut-off body: never skip the page,
         * retry it (the driver backs off). */
        char start[64];
        if (doc)
            snprintf(start, sizeof(start), "valid JSON, but %s, not a page object",
                     cJSON_IsArray(doc) ? "a list" : "a scalar");
        else
            snippet(r->body, start);
        sk_error_set(err, SK_ERR_RETRIABLE,
                     "GET %s: HTTP %ld: the body is not a JSON page (%s, %zu bytes: %s)", url,
                     r->status, r->content_type[0] ? r->content_type : "no content type", r->len,
                     start);
        return NULL;
    }
    *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(doc, "pageToken");
    if (tok && !cJSON_IsNull(tok) && !cJSON_IsString(tok)) {
        /* Not "no more pages": the records after this page would be lost
         * and the watermark would move past them. Do not guess a string
         * for it either (5 or 5.0?): the page fails. */
        sk_error_set(err, SK_ERR_RETRIABLE,
                     "GET %s: the page's pageToken is %s, not a string: the next page cannot be "
                     "asked for",
                     url,
                     cJSON_IsNumber(tok)   ? "a number"
                     : cJSON_IsBool(tok)   ? "a boolean"
                     : cJSON_IsObject(tok) ? "an object"
                                           : "a list");
        return NULL;
    }
    size_t tok_len = cJSON_IsString(tok) ? strlen(tok->valuestring) : 0;
    if (tok_len > PAGE_TOKEN_MAX) {
        /* not cut (the server would not know it), not dropped (the records
         * after this page would be lost): the page fails, its type alone */
        sk_error_set(err, SK_ERR_RETRIABLE,
                     "GET %s: the page's pageToken is %zu bytes, more than %d: it fits neither "
                     "in the next page's URL nor in the source's cursor",
                     url, tok_len, PAGE_TOKEN_MAX);
        return NULL;
    }
    *next = tok_len ? tok->valuestring : NULL;
    return doc;
}
