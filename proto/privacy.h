/*
 * privacy.h: a sink's personal-data policy, applied by the sink driver to
 * every decoded entity before the sink sees it (so no sink can forget it).
 *
 *   drop_fields:          field paths removed from every entity that has them
 *                         ("civicNo", "addresses", "enrolments.educationCode")
 *   protected_identities: for persons whose securityMarking is "Skyddad
 *                         folkbokföring" or "Sekretessmarkering":
 *                           skip    - never stored (a delete is sent instead,
 *                                     so a person who becomes protected vanishes)
 *                           minimal - only what an account needs: id, meta,
 *                                     securityMarking, personStatus,
 *                                     eduPersonPrincipalNames, school e-mail
 *                                     addresses and enrolments
 *                           allow   - stored like anyone else
 *                         and with minimal or skip, a reference to a
 *                         protected person in any entity (a group's
 *                         memberships, responsibles, a placement's owners)
 *                         loses its displayName (the person's name)
 * Keys are matched without regard to case and in every copy (a record may
 * hold a key twice: privacy.c).
 * Each sink type declares its defaults (connector.h); the configuration may
 * override them per sink. The hub (connectors/ss12000api) applies a policy
 * per client to what it serves, which is why this lives in proto/.
 */
#ifndef SK_PRIVACY_H
#define SK_PRIVACY_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "model.h"

enum sk_protected_mode { SK_PROTECTED_ALLOW = 0, SK_PROTECTED_MINIMAL, SK_PROTECTED_SKIP };

struct sk_privacy {
    struct sk_strlist drop_fields;
    enum sk_protected_mode protected_mode;
};

/* "skip" | "minimal" | "allow"; 0 or -1. */
int sk_protected_mode_parse(const char *text, enum sk_protected_mode *out);
const char *sk_protected_mode_name(enum sk_protected_mode mode);

/*
 * The protected markings in NFC, by index from 0; NULL past the last. What
 * sk_privacy_apply leaves in a protected person's securityMarking (and in
 * its references'), so a target's own query (the hub's SQL) matches these.
 * None holds a quote.
 */
const char *sk_privacy_marking(size_t i);
/* True if marking (a securityMarking's value, NFC or NFD) is a protected one. */
bool sk_privacy_marking_is_protected(const char *marking);

/* True if doc is a person with a protected identity. */
bool sk_privacy_is_protected(const struct sk_entity *e, const cJSON *doc);

enum sk_privacy_verdict { SK_PRIVACY_KEEP, SK_PRIVACY_DELETE };

/* Applies the policy to doc in place. DELETE: store a tombstone instead. */
enum sk_privacy_verdict sk_privacy_apply(const struct sk_privacy *p, const struct sk_entity *e,
                                         cJSON *doc);

#endif
