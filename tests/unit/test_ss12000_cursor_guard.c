/*
 * test_ss12000_cursor_guard.c: the ss12000-source's delete guard in its
 * cursor (connectors/ss12000/source_cursor.c, issue 15 item 7): held,
 * released and rejected deletions come back from a packed cursor as they
 * went in (a deletion taken out stays out), and a cursor written before
 * these fields existed loads with nothing held.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "connector.h"
#include "model.h"
#include "ss12000/source_internal.h"
#include "ss12000_source.pb-c.h"

#define R1 "0a000000-0000-4000-8000-000000000001"
#define R2 "0a000000-0000-4000-8000-000000000002"
#define R3 "0a000000-0000-4000-8000-000000000003"
#define P1 "0b000000-0000-4000-8000-000000000001"

static int type_of(const char *name)
{
    return sk_entity_index(sk_entity_by_name(name));
}

static bool has(const struct dels *d, const char *id, int64_t *at)
{
    for (size_t k = 0; k < d->n; k++)
        if (strcmp(d->v[k].id, id) == 0 && ss_dels_live(d, &d->v[k])) {
            *at = d->v[k].at_us;
            return true;
        }
    return false;
}

Test(ss12000_cursor_guard, held_released_and_rejected_survive_pack_and_load)
{
    struct cstate st = {0};
    st.seq = 7;
    ss_dels_add(&st.held, type_of("Room"), R1);
    ss_dels_add(&st.held, type_of("Person"), P1);
    ss_dels_add(&st.held, type_of("Room"), R3);
    ss_dels_add(&st.released, type_of("Room"), R2)->at_us = 123;
    /* R3 goes from held to rejected: the held entry is taken out. */
    sk_idmap_put(&st.held.index, R3, 0);
    ss_dels_add(&st.rejected, type_of("Room"), R3)->at_us = 456;
    size_t len;
    uint8_t *data = ss_cursor_pack(&st, &len);
    struct sk_cursor c = {.data = data, .len = len};
    struct cstate back;
    struct sk_error err = {0};
    cr_assert_eq(ss_cursor_load(&c, &back, &err), 0, "%s", err.msg);
    int64_t at = -1;
    cr_assert_eq(back.seq, 7);
    cr_assert_eq(ss_dels_count(&back.held), 2);
    cr_assert(has(&back.held, R1, &at) && has(&back.held, P1, &at));
    cr_assert(!has(&back.held, R3, &at), "a deletion taken out of the held set came back");
    cr_assert(has(&back.released, R2, &at) && at == 123);
    cr_assert(has(&back.rejected, R3, &at) && at == 456);
    char *json = ss_held_json(&back);
    cr_assert_str_eq(json, "{\"Room\":[\"" R1 "\"],\"Person\":[\"" P1 "\"]}");
    free(json);
    ss_cursor_free(&back);
    ss_cursor_free(&st);
    free(data);
}

Test(ss12000_cursor_guard, a_cursor_from_before_the_guard_fields_holds_nothing)
{
    /* What an older skolsync wrote: a type's watermark and seq, no guard. */
    Skolsync__V1__Ss12000Cursor old = SKOLSYNC__V1__SS12000_CURSOR__INIT;
    Skolsync__V1__Ss12000Cursor__TypeState ts = SKOLSYNC__V1__SS12000_CURSOR__TYPE_STATE__INIT;
    Skolsync__V1__Ss12000Cursor__TypeState *tsp = &ts;
    ts.entity = "Room";
    ts.has_full_done = ts.full_done = true;
    old.types = &tsp;
    old.n_types = 1;
    old.has_seq = true;
    old.seq = 42;
    size_t len = skolsync__v1__ss12000_cursor__get_packed_size(&old);
    uint8_t *data = malloc(len);
    skolsync__v1__ss12000_cursor__pack(&old, data);
    struct sk_cursor c = {.data = data, .len = len};
    struct cstate st;
    struct sk_error err = {0};
    cr_assert_eq(ss_cursor_load(&c, &st, &err), 0, "%s", err.msg);
    cr_assert_eq(st.seq, 42);
    cr_assert(st.t[type_of("Room")].full_done);
    cr_assert_eq(
        ss_dels_count(&st.held) + ss_dels_count(&st.released) + ss_dels_count(&st.rejected), 0);
    char *json = ss_held_json(&st);
    cr_assert_str_eq(json, "{}");
    free(json);
    ss_cursor_free(&st);
    free(data);
}
