/* names.c: the Kafka-side names of a deployment. See names.h. */
#include "names.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

char *sk_name_sink_group(const struct sk_names *n, const char *sink, enum sk_sink_target kind)
{
    if (kind == SK_TARGET_NODE_LOCAL)
        return sk_asprintf("%s-%s-%s", n->deployment, n->node, sink);
    return sk_asprintf("%s-%s", n->deployment, sink);
}

char *sk_name_sink_group_legacy(const char *sink)
{
    return sk_asprintf("skolsync-%s", sink);
}

char *sk_name_sink_member(const struct sk_names *n, const char *group, enum sk_sink_target kind,
                          uint32_t subscription)
{
    if (kind == SK_TARGET_NODE_LOCAL) /* the group already names the node */
        return sk_asprintf("%s-%08x", group, subscription);
    return sk_asprintf("%s-%s-%08x", group, n->node, subscription);
}

char *sk_name_node_txn_id(const struct sk_names *n)
{
    return sk_asprintf("%s.producer-%s", n->deployment, n->node);
}

char *sk_name_sources_group(const struct sk_names *n)
{
    return sk_asprintf("%s.sources", n->deployment);
}

char *sk_name_local_sinks_group(const struct sk_names *n)
{
    return sk_asprintf("%s.sinks-%s", n->deployment, n->node);
}

char *sk_name_sources_member(const struct sk_names *n)
{
    return sk_asprintf("%s.sources-%s", n->deployment, n->node);
}

char *sk_name_client(const struct sk_names *n, const char *role, const char *connector)
{
    return sk_asprintf("%s-%s-%s-%s", n->deployment, n->node, role, connector);
}

char *sk_name_node_of_client(const char *client, const char *deployment, const char *role,
                             const char *connector)
{
    size_t dl = strlen(deployment);
    char *suffix = sk_asprintf("-%s-%s.", role, connector);
    size_t cl = strlen(client), sl = strlen(suffix) - 1; /* without the '.' */
    char *node = NULL;
    if (strncmp(client, deployment, dl) != 0 || client[dl] != '-')
        goto out;
    if (cl > dl + 1 + sl && strncmp(client + cl - sl, suffix, sl) == 0) {
        node = sk_strndup(client + dl + 1, cl - sl - dl - 1);
        goto out;
    }
    /* One with the process after it ("....<host>.<pid>", the sources
     * group's, sk_name_owner_client): the first "-<role>-<connector>."
     * after a node of at least one character. */
    const char *at = cl > dl + 1 ? strstr(client + dl + 2, suffix) : NULL;
    if (at)
        node = sk_strndup(client + dl + 1, (size_t)(at - client) - dl - 1);
out:
    free(suffix);
    return node;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

char *sk_name_owner_client(const struct sk_names *n, const char *host, long pid)
{
    return sk_asprintf("%s-%s-owner-sources.%s.%ld", n->deployment, n->node, host, pid);
}

bool sk_name_owner_client_parse(const struct sk_names *n, const char *client, char **host,
                                long *pid)
{
    char *base = sk_name_client(n, "owner", "sources");
    size_t bl = strlen(base);
    bool ok = strncmp(client, base, bl) == 0 && client[bl] == '.';
    free(base);
    if (!ok)
        return false;
    const char *h = client + bl + 1, *dot = strrchr(h, '.');
    if (!dot || dot == h || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1) ||
        strlen(dot + 1) > 9)
        return false;
    *pid = strtol(dot + 1, NULL, 10);
    *host = sk_strndup(h, (size_t)(dot - h));
    return true;
}

bool sk_name_valid(const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > max)
        return false;
    for (; *s; s++)
        if (!name_char(*s))
            return false;
    return true;
}

char *sk_name_default_deployment(const char *topic_prefix)
{
    size_t len = topic_prefix ? strlen(topic_prefix) : 0;
    while (len && strchr("._-", topic_prefix[len - 1]))
        len--;
    return len ? sk_asprintf("%.*s", (int)len, topic_prefix) : sk_strdup("skolsync");
}

/* The host name cut to max characters, those Kafka names do not allow turned into '-'. */
static char *host_name(size_t max, const char *none)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        return sk_strdup(none);
    host[max] = '\0';
    for (char *c = host; *c; c++)
        if (!name_char(*c))
            *c = '-';
    return sk_strdup(host);
}

char *sk_name_default_node(void)
{
    return host_name(64, "node");
}

char *sk_name_host(void)
{
    return host_name(255, "unknown-host");
}
