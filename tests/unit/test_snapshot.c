/*
 * test_snapshot.c: a sink's view of a snapshot (daemon/snapshot.c,
 * docs/architecture.md §4.6): complete only once every partition of the
 * topic showed its begin and its end marker; the keys it holds are those
 * applied on a partition after that partition's begin (before it, a record
 * is older than the listing); a new listing forgets the one under way; a
 * record of another source is noticed.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "snapshot.h"

#define A "00000000-0000-4000-8000-00000000000a"
#define B "00000000-0000-4000-8000-00000000000b"
#define C "00000000-0000-4000-8000-00000000000c"
#define D "00000000-0000-4000-8000-00000000000d"

static struct sk_snapshot_marker marker(enum sk_snapshot_phase phase, const char *id, int parts)
{
    struct sk_snapshot_marker m = {.phase = phase, .partitions = parts};
    strcpy(m.id, id);
    strcpy(m.source, "sis");
    return m;
}

Test(snapshot, complete_after_every_partition_begun_and_ended)
{
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker b = marker(SK_SNAPSHOT_BEGIN, "sis@1", 2);
    struct sk_snapshot_marker e = marker(SK_SNAPSHOT_END, "sis@1", 2);
    sk_snapshot_track_record(&t, 0, D, "sis"); /* before any begin: older than the listing */
    sk_snapshot_track_begin(&t, &b, 0);
    sk_snapshot_track_record(&t, 0, A, "sis");
    sk_snapshot_track_record(&t, 1, C, "sis"); /* partition 1 has not begun */
    cr_assert_not(sk_snapshot_track_end(&t, &e, 0), "one partition without a begin");
    sk_snapshot_track_begin(&t, &b, 1);
    sk_snapshot_track_record(&t, 1, B, "sis");
    cr_assert_not(sk_snapshot_track_end(&t, &e, 0), "partition 1 has not ended");
    sk_snapshot_track_record(&t, 0, C, "sis"); /* after partition 0's end: still kept */
    cr_assert(sk_snapshot_track_end(&t, &e, 1));
    cr_assert_not(t.other_source);
    cr_assert(sk_idset_has(&t.keys, A));
    cr_assert(sk_idset_has(&t.keys, B));
    cr_assert(sk_idset_has(&t.keys, C));
    cr_assert_not(sk_idset_has(&t.keys, D), "a record from before the begin counted");
    sk_snapshot_track_reset(&t);
    cr_assert_not(t.active);
    cr_assert_not(sk_idset_has(&t.keys, A));
    sk_snapshot_track_free(&t);
}

Test(snapshot, an_end_of_another_listing_or_without_begin_completes_nothing)
{
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker e1 = marker(SK_SNAPSHOT_END, "sis@1", 1);
    cr_assert_not(sk_snapshot_track_end(&t, &e1, 0), "an end without a begin");
    struct sk_snapshot_marker b2 = marker(SK_SNAPSHOT_BEGIN, "sis@2", 1);
    sk_snapshot_track_begin(&t, &b2, 0);
    cr_assert_not(sk_snapshot_track_end(&t, &e1, 0), "the end of another listing");
    struct sk_snapshot_marker e2 = marker(SK_SNAPSHOT_END, "sis@2", 1);
    cr_assert(sk_snapshot_track_end(&t, &e2, 0));
    sk_snapshot_track_free(&t);
}

Test(snapshot, a_new_listing_forgets_the_one_under_way)
{
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker b1 = marker(SK_SNAPSHOT_BEGIN, "sis@1", 2);
    sk_snapshot_track_begin(&t, &b1, 0);
    sk_snapshot_track_begin(&t, &b1, 1);
    sk_snapshot_track_record(&t, 0, A, "sis");
    /* the source started over (a retried listing): a new id */
    struct sk_snapshot_marker b2 = marker(SK_SNAPSHOT_BEGIN, "sis@2", 2);
    sk_snapshot_track_begin(&t, &b2, 0);
    cr_assert_not(sk_idset_has(&t.keys, A), "keys of the forgotten listing kept");
    struct sk_snapshot_marker e2 = marker(SK_SNAPSHOT_END, "sis@2", 2);
    cr_assert_not(sk_snapshot_track_end(&t, &e2, 1), "partition 1 never began sis@2");
    sk_snapshot_track_begin(&t, &b2, 1);
    cr_assert_not(sk_snapshot_track_end(&t, &e2, 0));
    cr_assert(sk_snapshot_track_end(&t, &e2, 1));
    sk_snapshot_track_free(&t);
}

Test(snapshot, a_record_of_another_source_is_noticed)
{
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker b = marker(SK_SNAPSHOT_BEGIN, "sis@1", 1);
    sk_snapshot_track_begin(&t, &b, 0);
    sk_snapshot_track_record(&t, 0, A, "sis");
    cr_assert_not(t.other_source);
    sk_snapshot_track_record(&t, 0, B, "other");
    cr_assert(t.other_source);
    struct sk_snapshot_marker e = marker(SK_SNAPSHOT_END, "sis@1", 1);
    cr_assert(sk_snapshot_track_end(&t, &e, 0), "complete, but other_source tells the sweep no");
    sk_snapshot_track_free(&t);
}

Test(snapshot, partitions_outside_the_topic_are_ignored)
{
    struct sk_snapshot_track t = {0};
    struct sk_snapshot_marker b = marker(SK_SNAPSHOT_BEGIN, "sis@1", 1);
    sk_snapshot_track_begin(&t, &b, 5);
    cr_assert_not(t.active, "a begin on a partition the topic does not have");
    sk_snapshot_track_begin(&t, &b, 0);
    sk_snapshot_track_record(&t, -1, A, "sis");
    sk_snapshot_track_record(&t, SK_SNAPSHOT_MAX_PARTITIONS + 3, A, "sis");
    cr_assert_not(sk_idset_has(&t.keys, A));
    sk_snapshot_track_free(&t);
}
