/*
 * source_owner.c: the supervisor's side of one owner per source, and per
 * sink of a shared target that needs every partition (SK_TARGET_SHARED_WHOLE)
 * (docs/architecture.md §5.10; ownership.h chooses, this applies): a
 * connector this node no longer owns is stopped and waits in standby, one in
 * standby that this node now owns is opened and started.
 *
 * Main thread only (the supervisor's loop and the sources group's
 * rebalance callback, which runs inside sk_ownership_poll there).
 */
#include "daemon_internal.h"
#include "log.h"
#include "ownership.h"
#include "util.h"

bool sk_may_run(struct sk_daemon *d, struct sk_runner *r)
{
    if (!d->owner)
        return true;
    if (r->kind == SK_RUNNER_SINK &&
        ((const struct sk_sink_def *)r->def)->ops->target_kind != SK_TARGET_SHARED_WHOLE)
        return true;
    return sk_ownership_owns(d->owner, r->name);
}

/*
 * A source stopped here finishes the batch in hand (Rule 5); a failed one
 * (fenced by the new owner's producer) is not restarted. A source started
 * here resumes from its committed cursor.
 */
void sk_apply_ownership(void *ctx)
{
    struct sk_daemon *d = ctx;
    for (size_t i = 0; i < d->n_conns && !d->stopping; i++) {
        struct sk_runner *r = d->conns[i];
        bool owned = sk_may_run(d, r), standby = atomic_load(&r->state) == SK_STATE_STANDBY;
        if (!owned && !standby) {
            if (!sk_conn_halt(r, sk_mono_ms() + d->cfg->core.shutdown_timeout_ms)) {
                sk_error_log(r->name, "no longer owned by this node, but would not stop");
                continue;
            }
            r->restart_at_ms = 0;
            sk_runner_set_state(r, SK_STATE_STANDBY);
            sk_info(r->name, "no longer owned by this node: stopped, in standby");
        } else if (owned && standby) {
            sk_info(r->name, "owned by this node now: starting");
            if (sk_conn_open(r) == 0)
                sk_conn_start(r);
        }
    }
}
