/*
 * hub_lookup.c: the bodies of POST /{type}/lookup. The spec gives most
 * types {"ids": [...]}, and some more keys (persons civicNos, organisations
 * schoolUnitCodes and organisationCodes, placements personIds, activities
 * teachers and members, calendarEvents activities, student and teacher,
 * attendances activities, students and calendareEvents (sic),
 * attendanceEvents person and group, attendanceSchedule placement). Each
 * key reuses a filter's condition (hub_filter.c); a record matching any
 * value of any key is in the answer, a bare JSON array
 * (docs/ss12000-notes.md §3.4).
 *
 * Owns: reading and checking a body. Must never: let an empty body match
 * everything (the caller answers [] when hub_filter_count is 0), or take
 * more values than the caller allows.
 */
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_query.h"
#include "util.h"

bool hub_lookup_defined(const struct sk_entity *e)
{
    struct hub_filter *f = hub_filter_new(e, HUB_USE_LOOKUP, 0, 0);
    bool defined = hub_filter_lookup_key(f, "ids");
    hub_filter_free(f);
    return defined;
}

int hub_lookup_read_body(struct hub_filter *f, const char *body, size_t len, size_t max_values,
                         const char **why)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    int rc = -1;
    size_t n = 0;
    *why = "the body is not a JSON object";
    if (!cJSON_IsObject(j))
        goto out;
    const cJSON *key;
    cJSON_ArrayForEach(key, j)
    {
        if (!hub_filter_lookup_key(f, key->string)) {
            *why = "the body has a key this lookup does not take";
            goto out;
        }
        if (!cJSON_IsArray(key)) {
            *why = "a lookup key's value is not an array";
            goto out;
        }
        const cJSON *v;
        cJSON_ArrayForEach(v, key)
        {
            if (!cJSON_IsString(v)) {
                *why = "a lookup value is not a string";
                goto out;
            }
            if (++n > max_values) {
                *why = "the lookup has more values than the server takes at once (max_limit)";
                goto out;
            }
            if (hub_filter_add(f, key->string, v->valuestring, why) < 0)
                goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}
