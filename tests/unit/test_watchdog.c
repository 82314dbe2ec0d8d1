/*
 * test_watchdog.c: when the supervisor stops feeding systemd's watchdog
 * because a sink has work and does nothing (sk_runner_stalled): a fenced or
 * wedged consumer looked "healthily idle" and kept the pings going.
 */
#include <criterion/criterion.h>

#include "runner.h"

#define BOUND 6000

static struct sk_runner sink(enum sk_runner_state st)
{
    struct sk_runner r;
    sk_runner_init(&r, SK_RUNNER_SINK, "db", "sqlite-sink");
    sk_runner_set_state(&r, st);
    return r;
}

Test(watchdog, idle_sink_with_lag_and_no_progress_is_stalled_after_the_bound)
{
    struct sk_runner r = sink(SK_STATE_IDLE);
    cr_assert_not(sk_runner_stalled(&r, 40, 1000, BOUND));
    cr_assert_not(sk_runner_stalled(&r, 40, 1000 + BOUND, BOUND), "not past the bound yet");
    cr_assert(sk_runner_stalled(&r, 40, 1001 + BOUND, BOUND));
    cr_assert(sk_runner_stalled(&r, 40, 1000 + 5 * BOUND, BOUND), "stays stalled");
    sk_runner_destroy(&r);
}

Test(watchdog, applying_records_restarts_the_clock)
{
    struct sk_runner r = sink(SK_STATE_RUNNING);
    cr_assert_not(sk_runner_stalled(&r, 40, 1000, BOUND));
    atomic_fetch_add(&r.records, 10);
    cr_assert_not(sk_runner_stalled(&r, 30, 1000 + BOUND + 1, BOUND), "it applied: progress");
    cr_assert_not(sk_runner_stalled(&r, 30, 1000 + 2 * BOUND, BOUND));
    cr_assert(sk_runner_stalled(&r, 30, 1002 + 2 * BOUND, BOUND));
    /* rejected records (dead-lettered) are progress too */
    atomic_fetch_add(&r.failed, 1);
    cr_assert_not(sk_runner_stalled(&r, 30, 1003 + 2 * BOUND, BOUND));
    sk_runner_destroy(&r);
}

Test(watchdog, no_lag_unknown_lag_and_other_states_never_stall)
{
    struct sk_runner r = sink(SK_STATE_IDLE);
    for (int64_t t = 0; t <= 3 * BOUND; t += 1000)
        cr_assert_not(sk_runner_stalled(&r, 0, t, BOUND), "caught up is healthy");
    for (int64_t t = 0; t <= 3 * BOUND; t += 1000)
        cr_assert_not(sk_runner_stalled(&r, -1, t, BOUND), "unknown lag: no guess");
    enum sk_runner_state others[] = {SK_STATE_RETRYING, SK_STATE_PAUSED, SK_STATE_FAILED,
                                     SK_STATE_STARTING};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        sk_runner_set_state(&r, others[i]);
        for (int64_t t = 0; t <= 3 * BOUND; t += 1000)
            cr_assert_not(sk_runner_stalled(&r, 50, t, BOUND), "state %s",
                          sk_runner_state_name(others[i]));
    }
    /* back to idle with lag: the clock starts then, not at the first call */
    sk_runner_set_state(&r, SK_STATE_IDLE);
    cr_assert_not(sk_runner_stalled(&r, 50, 10 * BOUND, BOUND));
    cr_assert_not(sk_runner_stalled(&r, 50, 11 * BOUND, BOUND));
    cr_assert(sk_runner_stalled(&r, 50, 11 * BOUND + 1, BOUND));
    sk_runner_destroy(&r);
}
