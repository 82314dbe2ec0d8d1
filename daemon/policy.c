/* policy.c: see policy.h. */
#include "policy.h"

#include <string.h>

#include "util.h"

enum sk_on_error sk_policy_on_error(const struct sk_failure_policy *p)
{
    if (p->on_error && strcmp(p->on_error, "stop") == 0)
        return SK_ON_ERROR_STOP;
    if (p->on_error && strcmp(p->on_error, "retry") == 0)
        return SK_ON_ERROR_RETRY;
    return SK_ON_ERROR_DLQ;
}

int64_t sk_retry_next(struct sk_retry *r, const struct sk_failure_policy *p)
{
    int64_t now = sk_mono_ms();
    if (r->first_ms == 0)
        r->first_ms = now;
    if (p->retry_max_attempts > 0 && r->attempt >= p->retry_max_attempts)
        return -1;
    if (p->retry_max_elapsed_ms > 0 && now - r->first_ms >= p->retry_max_elapsed_ms)
        return -1;
    int64_t base = p->retry_base_ms > 0 ? p->retry_base_ms : 500;
    int64_t cap = p->retry_cap_ms >= base ? p->retry_cap_ms : base;
    return sk_backoff_ms(r->attempt++, base, cap);
}

void sk_retry_reset(struct sk_retry *r)
{
    r->attempt = 0;
    r->first_ms = 0;
}
