/*
 * watchdog.c: systemd's watchdog (docs/architecture.md §7.3, §8.16). The
 * main loop feeds it only while every connector makes progress or is
 * healthily idle, and no sink is stalled: a wedged connector (no state
 * change, no records, for longer than the watchdog allows) or a sink with
 * lag that applies nothing (even one that says idle) stops the pings, and
 * systemd restarts the service.
 *
 * Owns: when WATCHDOG=1 is sent. Must never: send it from another thread
 * than the main loop (a timer thread would hide a hung loop).
 */
#include <systemd/sd-daemon.h>

#include "daemon_internal.h"
#include "log.h"
#include "util.h"

void sk_watchdog_init(struct sk_watchdog *w, int64_t lag_interval_ms)
{
    uint64_t usec = 0;
    *w = (struct sk_watchdog){.next_ms = sk_mono_ms(), .moved_ms = sk_mono_ms()};
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        w->interval_ms = (int64_t)(usec / 2000); /* half of WatchdogSec */
    /* 3 x WatchdogSec, and at least 3 lag samples: the lag monitor's last
     * sample may be up to lag_interval old */
    w->stall_ms = 6 * w->interval_ms;
    if (w->stall_ms < 3 * lag_interval_ms)
        w->stall_ms = 3 * lag_interval_ms;
}

/*
 * A sink with lag on its partitions that applies nothing for stall_ms is
 * wedged even when it says idle (a fenced consumer once did: "healthily
 * idle" for ever).
 */
static bool sink_stalled(struct sk_daemon *d, struct sk_runner *r, int64_t now, int64_t stall_ms)
{
    int64_t lag = sk_lag_monitor_sink_lag(d->lag, r->name);
    bool stalled = sk_runner_stalled(r, lag, now, stall_ms);
    if (stalled && !r->stall_logged)
        sk_error_log(r->name,
                     "%lld record(s) behind and nothing applied for %lld s: no more watchdog "
                     "pings",
                     (long long)lag, (long long)(now - r->stall_since_ms) / 1000);
    r->stall_logged = stalled;
    return stalled;
}

static bool making_progress(struct sk_daemon *d, struct sk_watchdog *w, int64_t now)
{
    bool stalled = false;
    uint64_t total = 0;
    bool idle = true;
    for (size_t i = 0; i < d->n_conns; i++) {
        struct sk_runner *r = d->conns[i];
        int st = atomic_load(&r->state);
        total += atomic_load(&r->records) + atomic_load(&r->retries) + atomic_load(&r->cycles) +
                 atomic_load(&r->restarts);
        if (st != SK_STATE_IDLE && st != SK_STATE_PAUSED && st != SK_STATE_STANDBY)
            idle = false;
        if (r->kind == SK_RUNNER_SINK && sink_stalled(d, r, now, w->stall_ms))
            stalled = true;
    }
    if (stalled)
        return false;
    if (total != w->total || idle) {
        w->total = total;
        w->moved_ms = now;
    }
    return now - w->moved_ms < 2 * w->interval_ms;
}

void sk_watchdog_feed(struct sk_daemon *d, struct sk_watchdog *w, int64_t now)
{
    if (!w->interval_ms || now < w->next_ms || !making_progress(d, w, now))
        return;
    sd_notify(0, "WATCHDOG=1");
    w->next_ms = now + w->interval_ms;
}
