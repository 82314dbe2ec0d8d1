/*
 * scim_resource.c: one SCIM resource on the server: looking it up by
 * externalId (adopting only a resource that carries ours, refusing a server
 * that ignores filter=), creating, replacing or patching it, removing or
 * deactivating it, and what each HTTP answer means for the record (retry,
 * reject, or stop).
 *
 * Must never: create a resource without first looking its externalId up
 * when the id map does not know it (a lost state dir must not cause
 * duplicates), adopt a resource with another externalId, or count as
 * applied what the server silently dropped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "connector.h"
#include "http_client.h"
#include "log.h"
#include "model.h"
#include "scim.h"
#include "util.h"

/* ---- HTTP outcomes -------------------------------------------------------------- */

/*
 * A response that is not what the operation wanted. 429/503 honour
 * Retry-After by sleeping up to retry_after_max here, then report RETRY (the
 * driver adds its own backoff); other 5xx and 408 are RETRY at once; 401 is
 * FATAL (every record would fail: the connector stops and is restarted with
 * backoff); every other status is a rejection of this record with the
 * server's scimType and detail.
 */
static int http_fail(struct scim_sink *s, const char *what, const struct scim_resp *r,
                     struct sk_error *err)
{
    char detail[300];
    scim_resp_detail(r, detail, sizeof(detail));
    if (r->status == 429 || r->status == 408 || r->status >= 500) {
        char wait[64] = "";
        if (r->retry_after_ms >= 0) {
            int64_t ms = r->retry_after_ms;
            if (ms > s->conf->retry_after_max_ms)
                ms = s->conf->retry_after_max_ms;
            snprintf(wait, sizeof(wait), " (Retry-After %" PRId64 " s, waited %" PRId64 " ms)",
                     r->retry_after_ms / 1000, ms);
            if (ms > 0)
                sk_sleep_ms(ms);
        }
        sk_error_set(err, SK_ERR_RETRIABLE, "%s: HTTP %ld%s: %s", what, r->status, wait, detail);
        s->unavailable = true;
        s->unavailable_err = *err;
        return -1;
    }
    if (r->status == 412) {
        /* sent with the version just read: it changed again meanwhile */
        return sk_error_set(err, SK_ERR_RETRIABLE,
                            "%s: HTTP 412, the resource changed on the server while it was "
                            "written: %s",
                            what, detail);
    }
    if (r->status == 401) {
        sk_error_set(err, SK_ERR_FATAL, "%s: HTTP 401, the server refused our credentials: %s",
                     what, detail);
        s->fatal = true;
        s->fatal_err = *err;
        return -1;
    }
    return sk_error_set(err, SK_ERR_PERMANENT, "%s: HTTP %ld: %s", what, r->status, detail);
}

/* A request that got no answer: a fatal one stops the batch, a retriable one
 * (the server is away) leaves the rest of it for the retry. */
static void note_failure(struct scim_sink *s, const struct sk_error *err)
{
    if (err->cls == SK_ERR_FATAL) {
        s->fatal = true;
        s->fatal_err = *err;
    } else if (err->cls == SK_ERR_RETRIABLE) {
        s->unavailable = true;
        s->unavailable_err = *err;
    }
}

/* One request; body may be NULL. A transport failure marks the server
 * unavailable; an answer over max_response_size (PERMANENT) fails only the
 * record it was for, as asking again would bring the same answer. */
static int request(struct scim_sink *s, const char *method, const char *path, const cJSON *body,
                   struct scim_resp *resp, struct sk_error *err)
{
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    int rc = scim_http_request(s->http, method, path, text, NULL, resp, err);
    free(text);
    if (rc < 0)
        note_failure(s, err);
    return rc;
}

static const char *endpoint_of(const char *kind)
{
    return strcmp(kind, "Group") == 0 ? "Groups" : "Users";
}

/* Pages of one lookup read at most: a filter on externalId matches one
 * resource, and a server that pages it one a page shows duplicates by page 2. */
#define LOOKUP_PAGES_MAX 10

/* What a lookup's pages showed. */
struct matches {
    int seen, total; /* resources read; the server's totalResults (-1: none) */
    int ours, others;
    char ids[160]; /* the SCIM ids of ours, for a message */
    cJSON *first;  /* the first of ours */
};

/* Reads one page of a lookup into m. 1: a ListResponse with resources, 0: with
 * none, -1 with err: it is no ListResponse (not JSON, a sign-in page). */
static int read_page(struct scim_sink *s, const char *kind, const char *uuid,
                     const struct scim_resp *r, struct matches *m, struct sk_error *err)
{
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(r->json, "totalResults");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r->json, "Resources");
    if (cJSON_IsNumber(total))
        m->total = total->valueint < 0 ? 0 : total->valueint; /* cJSON clamps it to an int */
    /* Resources may be left out when nothing matched (RFC 7644 §3.4.2) */
    if (!cJSON_IsObject(r->json) || (list && !cJSON_IsArray(list)) ||
        (!list && m->total != 0)) {
        char detail[300];
        scim_resp_detail(r, detail, sizeof(detail));
        sk_error_set(err, SK_ERR_RETRIABLE,
                     "lookup of %s externalId %s: HTTP %ld, but the answer is no SCIM "
                     "ListResponse (nothing is written while the server cannot tell whether it "
                     "holds the resource): %s",
                     kind, uuid, r->status, detail);
        s->unavailable = true;
        s->unavailable_err = *err;
        return -1;
    }
    int got = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        got++;
        m->seen++;
        const char *ext = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "externalId"));
        if (!ext || strcasecmp(ext, uuid) != 0) {
            m->others++;
            continue;
        }
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "id"));
        const char *first = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m->first, "id"));
        if (id && first && strcmp(id, first) == 0)
            return 0; /* the server ignores startIndex: page 1 again */
        size_t used = strlen(m->ids);
        snprintf(m->ids + used, sizeof(m->ids) - used, "%s%s", used ? ", " : "", id ? id : "?");
        if (m->ours++ == 0)
            m->first = cJSON_Duplicate(it, true);
    }
    return got > 0;
}

/*
 * GET /<endpoint>?filter=externalId eq "<uuid>", every page of it. Returns 1
 * with *id (and *resource if asked; caller frees both), 0 if the server has
 * none, -1 with err.
 */
static int lookup(struct scim_sink *s, const char *kind, const char *uuid, char **id,
                  cJSON **resource, struct sk_error *err)
{
    char *filter = sk_asprintf("externalId eq \"%s\"", uuid);
    char *enc = sk_http_escape(filter);
    free(filter);
    struct matches m = {.total = -1};
    int rc = 0;
    for (int page = 0; page < LOOKUP_PAGES_MAX && rc == 0; page++) {
        char *path = page ? sk_asprintf("/%s?filter=%s&startIndex=%d", endpoint_of(kind), enc,
                                        m.seen + 1)
                          : sk_asprintf("/%s?filter=%s", endpoint_of(kind), enc);
        struct scim_resp r;
        rc = request(s, "GET", path, NULL, &r, err);
        free(path);
        if (rc < 0)
            break;
        if (r.status >= 400 && r.status < 500 && r.status != 401 && r.status != 408 &&
            r.status != 429) {
            /* No person's lookup is refused for the person's sake (400 invalidFilter:
             * no filter on externalId; 403: the token may not read; 404: a wrong
             * url): every lookup would fail alike, and dead-lettering every
             * person helps no one. */
            char detail[300];
            scim_resp_detail(&r, detail, sizeof(detail));
            rc = sk_error_set(err, SK_ERR_FATAL,
                              "the server refuses to look %s up by externalId (HTTP %ld: %s); "
                              "the sink needs GET %s?filter=externalId eq \"...\" (RFC 7644 "
                              "§3.4.2.2): check url, the token's rights, the server's filters",
                              endpoint_of(kind), r.status, detail, endpoint_of(kind));
            s->fatal = true;
            s->fatal_err = *err;
        } else if (r.status != 200) {
            rc = http_fail(s, "lookup by externalId", &r, err);
        } else {
            int got = read_page(s, kind, uuid, &r, &m, err);
            /* a page with only ours when the total says there are more: read on */
            rc = got < 0 ? -1 : got == 0 || m.others || m.seen >= m.total ? 1 : 0;
        }
        scim_resp_free(&r);
    }
    free(enc);
    if (rc == 0 && m.ours < 2)
        rc = sk_error_set(err, SK_ERR_RETRIABLE,
                          "lookup of %s externalId %s: %d of %d results in %d pages; the "
                          "server's paging does not end",
                          kind, uuid, m.seen, m.total, LOOKUP_PAGES_MAX);
    if (rc < 0) {
        cJSON_Delete(m.first);
        return -1;
    }
    /* Adopt only a resource that carries our externalId. A server that ignores
     * filter= answers with every resource it has: adopting Resources[0] then
     * merged every person into one account. Such a server cannot be written
     * to safely at all, so the sink stops before it writes anything. */
    const cJSON *match_id = cJSON_GetObjectItemCaseSensitive(m.first, "id");
    rc = 0;
    if (m.others) {
        s->fatal = true; /* the whole batch stops, and nothing more is sent */
        rc = sk_error_set(err, SK_ERR_FATAL,
                          "the server ignores filter=: looking up %s externalId %s it answered %d "
                          "resource(s), %d with another externalId; writing to it would merge "
                          "accounts, so nothing is written (fix the server's filter support)",
                          kind, uuid, m.seen, m.others);
        s->fatal_err = *err;
    } else if (m.ours > 1) {
        /* which one is the person's account only an operator can tell */
        rc = sk_error_set(err, SK_ERR_PERMANENT,
                          "the server holds %d %s with externalId %s (ids %s); nothing is "
                          "written until all but one are removed",
                          m.ours, endpoint_of(kind), uuid, m.ids);
    } else if (m.first && !cJSON_IsString(match_id)) {
        rc = sk_error_set(err, SK_ERR_PERMANENT,
                          "the server holds a %s with externalId %s but without an id", kind,
                          uuid);
    } else if (m.first) {
        *id = sk_strdup(match_id->valuestring);
        if (resource) {
            *resource = m.first;
            m.first = NULL;
        }
        rc = 1;
    }
    cJSON_Delete(m.first);
    return rc;
}

/*
 * The first attribute of desired (top level, extensions included) that an
 * answer holding the whole resource lacks: the server took the request and
 * silently dropped it (an undeclared extension, an attribute it does not
 * know). NULL if the answer holds them all, or is no whole resource (RFC
 * 7644 §3.3 says the answer is the resource, with its schemas; a bare
 * {"id": ...} tells nothing either way).
 */
static const char *dropped_attribute(const cJSON *desired, const cJSON *answer)
{
    if (!cJSON_IsObject(answer) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(answer, "id")) ||
        !cJSON_IsArray(cJSON_GetObjectItem(answer, "schemas")))
        return NULL;
    const cJSON *a;
    cJSON_ArrayForEach(a, desired)
    {
        if (!a->string || strcmp(a->string, "schemas") == 0 || strcmp(a->string, "id") == 0 ||
            strcmp(a->string, "meta") == 0 || strcmp(a->string, "password") == 0 ||
            cJSON_IsNull(a) || (cJSON_IsArray(a) && !a->child))
            continue;
        const cJSON *got = cJSON_GetObjectItem(answer, a->string); /* case-insensitive (RFC 7643) */
        if (!got || cJSON_IsNull(got))
            return a->string;
    }
    return NULL;
}

/* ---- create / update / remove one resource -------------------------------------------- */

/* POST; on 409 adopt the existing resource by externalId. Returns 0 with *id (and *have). */
static int create(struct scim_sink *s, const char *kind, const char *uuid, const cJSON *desired,
                  char **id, cJSON **have, bool *adopted, struct sk_error *err)
{
    char *path = sk_asprintf("/%s", endpoint_of(kind));
    struct scim_resp r;
    int rc = request(s, "POST", path, desired, &r, err);
    free(path);
    if (rc < 0)
        return -1;
    const cJSON *new_id = cJSON_GetObjectItemCaseSensitive(r.json, "id");
    if ((r.status == 201 || r.status == 200) && cJSON_IsString(new_id)) {
        *id = sk_strdup(new_id->valuestring);
        *adopted = false;
        *have = r.json; /* what the server says it holds now */
        r.json = NULL;
        scim_resp_free(&r);
        sk_debug(s->component, "%s %s created as %s", kind, uuid, *id);
        return 0;
    }
    if (r.status == 409) {
        /* docs/architecture.md §10.2: created by someone else (or by us before a crash
         * lost the state) between our lookup and POST: adopt it. */
        rc = lookup(s, kind, uuid, id, have, err);
        if (rc == 1) {
            *adopted = true;
            scim_resp_free(&r);
            return 0;
        }
        if (rc == 0) {
            /* the conflict is with a resource that is not ours: another
             * person's, or an account made by hand before skolsync ran */
            char detail[300];
            scim_resp_detail(&r, detail, sizeof(detail));
            sk_error_set(err, SK_ERR_PERMANENT,
                         "create: HTTP 409: %s; no %s carries externalId %s, so the conflict is "
                         "with an account skolsync did not make (made by hand, or another "
                         "person's): give that account externalId %s to have it adopted, or "
                         "remove it",
                         detail, kind, uuid, uuid);
        }
        scim_resp_free(&r);
        return -1;
    }
    if (r.status == 201 || r.status == 200) {
        /* Created, but the answer names no id (a Location and no body, a body
         * that is not JSON): find it by the externalId it was created with. */
        long status = r.status;
        scim_resp_free(&r);
        rc = lookup(s, kind, uuid, id, have, err);
        if (rc == 1) {
            *adopted = false;
            sk_debug(s->component, "%s %s created as %s (found by externalId)", kind, uuid, *id);
            return 0;
        }
        if (rc == 0)
            sk_error_set(err, SK_ERR_RETRIABLE,
                         "create: HTTP %ld without an id, and no %s with externalId %s is found "
                         "(the next try looks it up again before it creates)",
                         status, kind, uuid);
        return -1;
    }
    http_fail(s, "create", &r, err);
    scim_resp_free(&r);
    return -1;
}

/* GET /<endpoint>/<id>: 1 with *have, 0 on 404, -1 with err. version (if not
 * NULL): its entity tag, from the ETag header or meta.version, "" if none. */
static int fetch(struct scim_sink *s, const char *kind, const char *id, cJSON **have,
                 char version[256], struct sk_error *err)
{
    char *path = sk_asprintf("/%s/%s", endpoint_of(kind), id);
    struct scim_resp r;
    int rc = request(s, "GET", path, NULL, &r, err);
    free(path);
    if (rc < 0)
        return -1;
    if (r.status == 200 && r.json) {
        const char *v = cJSON_GetStringValue(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(r.json, "meta"), "version"));
        if (version)
            snprintf(version, 256, "%s", r.etag[0] ? r.etag : v && sk_http_etag_ok(v) ? v : "");
        *have = r.json;
        r.json = NULL;
        rc = 1;
    } else if (r.status == 404) {
        rc = 0;
    } else {
        rc = http_fail(s, "read", &r, err);
    }
    scim_resp_free(&r);
    return rc;
}

/*
 * method on /<endpoint>/<id> with body, and when the server wants the
 * resource's version (412 Precondition Failed, 428 Precondition Required:
 * servers that take a write only with If-Match, RFC 7644 §3.14), once more
 * with If-Match: the version read now. What changed on the server meanwhile
 * is overwritten, as a write without If-Match would. 0 with *r (a 404 when
 * the read found it gone), -1 with err.
 */
static int send_matching(struct scim_sink *s, const char *kind, const char *id,
                         const char *method, const cJSON *body, struct scim_resp *r,
                         struct sk_error *err)
{
    char *path = sk_asprintf("/%s/%s", endpoint_of(kind), id);
    int rc = request(s, method, path, body, r, err);
    if (rc == 0 && (r->status == 412 || r->status == 428)) {
        char version[256] = "";
        cJSON *now = NULL;
        rc = fetch(s, kind, id, &now, version, err);
        cJSON_Delete(now);
        if (rc == 0) {
            r->status = 404; /* gone: what the write would have said */
        } else if (rc < 0) {
            scim_resp_free(r);
        } else if (version[0]) {
            scim_resp_free(r);
            char *text = body ? cJSON_PrintUnformatted(body) : NULL;
            rc = scim_http_request(s->http, method, path, text, version, r, err);
            free(text);
            if (rc < 0)
                note_failure(s, err);
        }
        rc = rc < 0 ? -1 : 0; /* no version to send: the 412/428 goes back as it came */
    }
    free(path);
    return rc;
}

/*
 * A server without PATCH (405 Method Not Allowed, 501 Not Implemented): true,
 * and the sink uses PUT with the whole resource from then on (until it is
 * opened again), instead of retrying a 501 for ever or dead-lettering every
 * update.
 */
static bool refuses_patch(struct scim_sink *s, const struct scim_resp *r)
{
    if (r->status != 405 && r->status != 501)
        return false;
    if (!s->no_patch)
        sk_warn(s->component, "the server answers PATCH with HTTP %ld: updating with PUT instead",
                r->status);
    s->no_patch = true;
    return true;
}

/* PUT or PATCH id towards desired. Returns 1 done, 0 the server has no such id (404), -1 err. */
static int update(struct scim_sink *s, const char *kind, const char *id, const cJSON *desired,
                  cJSON *have, struct sk_error *err)
{
    bool is_group = strcmp(kind, "Group") == 0;
    bool patch = s->use_patch && !s->no_patch;
    cJSON *fetched = NULL;
    cJSON *body = NULL;
    int rc = 1;
    if (patch) {
        if (!have) {
            rc = fetch(s, kind, id, &fetched, NULL, err);
            have = fetched;
        }
        if (rc == 1) {
            body = scim_patch_body(desired, have, is_group, s->dialect);
            if (!body)
                goto done; /* nothing differs */
        }
    }
    if (rc == 1) {
        struct scim_resp r;
        rc = send_matching(s, kind, id, patch ? "PATCH" : "PUT", body ? body : desired, &r, err);
        if (rc == 0) {
            const char *dropped =
                r.status == 200 && !patch ? dropped_attribute(desired, r.json) : NULL;
            if (dropped)
                rc = sk_error_set(err, SK_ERR_PERMANENT,
                                  "replace: HTTP 200, but the answer lacks \"%s\": the server "
                                  "dropped it silently (an undeclared extension?); not applied",
                                  dropped);
            else if (r.status == 200 || r.status == 204)
                rc = 1;
            else if (r.status == 404)
                rc = 0;
            else if (patch && refuses_patch(s, &r))
                rc = update(s, kind, id, desired, have, err); /* with PUT */
            else
                rc = http_fail(s, patch ? "patch" : "replace", &r, err);
            scim_resp_free(&r);
        }
    }
done:
    cJSON_Delete(body);
    cJSON_Delete(fetched);
    return rc;
}

/*
 * Sets id inactive: PATCH active=false in the dialect or, on a server
 * without PATCH, PUT of the whole resource (*have: as last sent or read;
 * read when NULL) with active=false. 1 done, 0 the server has no such id, -1 err.
 */
static int set_inactive(struct scim_sink *s, const char *kind, const char *id, cJSON **have,
                        struct sk_error *err)
{
    struct scim_resp r;
    int rc = 0;
    if (!s->no_patch) {
        cJSON *body = scim_deactivate_body(s->dialect);
        rc = send_matching(s, kind, id, "PATCH", body, &r, err);
        cJSON_Delete(body);
        if (rc == 0 && refuses_patch(s, &r))
            scim_resp_free(&r);
    }
    if (rc == 0 && s->no_patch) {
        if (!*have)
            rc = fetch(s, kind, id, have, NULL, err) - 1; /* 0: read, -1: 404, -2: failed */
        if (rc < 0)
            return rc == -1 ? 0 : -1;
        cJSON *body = cJSON_Duplicate(*have, true);
        cJSON_DeleteItemFromObjectCaseSensitive(body, "meta");
        cJSON_DeleteItemFromObjectCaseSensitive(body, "active");
        cJSON_AddFalseToObject(body, "active");
        rc = send_matching(s, kind, id, "PUT", body, &r, err);
        cJSON_Delete(body);
    }
    if (rc < 0)
        return -1;
    if (r.status == 200 || r.status == 204)
        rc = 1;
    else if (r.status == 404)
        rc = 0;
    else
        rc = http_fail(s, "deactivate", &r, err);
    scim_resp_free(&r);
    return rc;
}

/*
 * Makes the server hold `desired` for uuid. *changed: the uuid got a SCIM id
 * it did not have in the state (created or adopted).
 */
int scim_resource_upsert(struct scim_sink *s, const char *kind, const char *uuid,
                         const cJSON *desired, bool *changed, struct sk_error *err)
{
    char *desired_text = cJSON_PrintUnformatted(desired);
    char *id = NULL, *sent = NULL;
    cJSON *have = NULL;
    int rc = 0;
    *changed = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool mapped = scim_state_get_map(s->state, kind, uuid, &id, &sent) == 1;
        if (mapped && sent && strcmp(sent, desired_text) == 0)
            break; /* a replay: nothing to send */
        if (mapped && sent)
            have = cJSON_Parse(sent);
        if (!mapped) {
            /* the state does not know it: the server might (lost state dir, crash) */
            rc = lookup(s, kind, uuid, &id, &have, err);
            if (rc < 0)
                break;
            if (rc == 0) {
                bool adopted;
                if (create(s, kind, uuid, desired, &id, &have, &adopted, err) < 0) {
                    rc = -1;
                    break;
                }
                *changed = true;
                rc = 0;
                if (!adopted) {
                    const char *dropped = dropped_attribute(desired, have);
                    if (dropped) {
                        /* Created, so keep its id (no duplicate later), but
                         * as what the server holds: the next version is
                         * sent again, and this one is not counted applied. */
                        char *held = cJSON_PrintUnformatted(have);
                        scim_state_put_map(s->state, kind, uuid, id, held);
                        free(held);
                        rc = sk_error_set(err, SK_ERR_PERMANENT,
                                          "create: HTTP 201, but the answer lacks \"%s\": the "
                                          "server dropped it silently (an undeclared "
                                          "extension?); not applied",
                                          dropped);
                        break;
                    }
                    scim_state_put_map(s->state, kind, uuid, id, desired_text);
                    break;
                }
            }
            *changed = true;
            rc = 0;
        }
        if (have && scim_same_managed(desired, have, strcmp(kind, "Group") == 0)) {
            scim_state_put_map(s->state, kind, uuid, id, desired_text);
            break;
        }
        rc = update(s, kind, id, desired, have, err);
        if (rc == 1) {
            scim_state_put_map(s->state, kind, uuid, id, desired_text);
            rc = 0;
            break;
        }
        if (rc < 0)
            break;
        if (attempt == 1) {
            rc = sk_error_set(err, SK_ERR_RETRIABLE, "%s %s: SCIM id %s vanished while updating",
                              kind, uuid, id);
            break;
        }
        /* 404: deleted on the server behind our back; create it again */
        sk_warn(s->component, "%s %s: SCIM id %s is gone from the server; creating it again", kind,
                uuid, id);
        scim_state_del_map(s->state, kind, uuid);
        *changed = true;
        free(id);
        free(sent);
        cJSON_Delete(have);
        id = sent = NULL;
        have = NULL;
        rc = 0;
    }
    free(desired_text);
    free(id);
    free(sent);
    cJSON_Delete(have);
    return rc < 0 ? -1 : 0;
}

/*
 * Removes (or deactivates) uuid's resource. An unmapped uuid is looked up on
 * the server only when ask_server (an explicit delete: the state may have
 * been lost). *changed: uuid lost its SCIM id.
 */
int scim_resource_remove(struct scim_sink *s, const char *kind, const char *uuid, bool ask_server,
                         bool deactivate, bool *changed, struct sk_error *err)
{
    char *id = NULL, *sent = NULL;
    cJSON *have = NULL;
    int rc = 0;
    *changed = false;
    bool mapped = scim_state_get_map(s->state, kind, uuid, &id, &sent) == 1;
    if (mapped && sent)
        have = cJSON_Parse(sent);
    if (!mapped) {
        if (!ask_server)
            return 0;
        rc = lookup(s, kind, uuid, &id, &have, err);
        if (rc <= 0)
            goto done; /* not there: a delete of something missing is done */
        rc = 0;
    }
    struct scim_resp r;
    if (deactivate) {
        if (have && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(have, "active")))
            goto done; /* already inactive */
        rc = set_inactive(s, kind, id, &have, err);
        if (rc == 1) {
            cJSON *now = have ? have : cJSON_CreateObject();
            have = now;
            cJSON_DeleteItemFromObjectCaseSensitive(now, "active");
            cJSON_AddFalseToObject(now, "active");
            char *text = cJSON_PrintUnformatted(now);
            scim_state_put_map(s->state, kind, uuid, id, text);
            free(text);
        } else if (rc == 0) {
            scim_state_del_map(s->state, kind, uuid);
            *changed = true;
        }
        rc = rc < 0 ? -1 : 0;
    } else {
        rc = send_matching(s, kind, id, "DELETE", NULL, &r, err);
        if (rc == 0) {
            if (r.status == 204 || r.status == 200 || r.status == 404) {
                scim_state_del_map(s->state, kind, uuid);
                *changed = true;
            } else {
                rc = http_fail(s, "delete", &r, err);
            }
            scim_resp_free(&r);
        }
    }
done:
    free(id);
    free(sent);
    cJSON_Delete(have);
    return rc < 0 ? -1 : 0;
}
