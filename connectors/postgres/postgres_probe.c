/*
 * postgres_probe.c: the postgres-sink's `skolsync check --connect`: a login
 * with the configured conninfo and connect_timeout, the server's version,
 * and the rights the sink's open needs on its schema (pg_migrate: USAGE and
 * CREATE on an existing schema, CREATE on the database to make a missing one).
 *
 * Must never: change the database (no schema, table or transaction: only
 * reads of the catalogs), or print the connection string (it may hold a
 * password).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "postgres_internal.h"
#include "util.h"

/* How to fix a failed login, from libpq's message (which never quotes the password). */
static const char *login_fix(const char *msg)
{
    if (strstr(msg, "password authentication failed") || strstr(msg, "no password supplied"))
        return "check user and password in conninfo";
    if (strstr(msg, "does not exist"))
        return "check user and dbname in conninfo (the role and the database must exist)";
    if (strstr(msg, "pg_hba.conf"))
        return "allow this host and role in the server's pg_hba.conf";
    return "check host and port in conninfo, and that the server accepts connections from "
           "here (listen_addresses, firewall)";
}

/* Rights of the logged-in role; the schema's are NULL when it does not exist. */
static const char rights_sql[] =
    "SELECT current_user, current_database(), "
    "has_database_privilege(current_database(), 'CREATE'), "
    "(SELECT has_schema_privilege(oid, 'USAGE') FROM pg_catalog.pg_namespace WHERE nspname = $1), "
    "(SELECT has_schema_privilege(oid, 'CREATE') FROM pg_catalog.pg_namespace WHERE nspname = $1)";

/*
 * The schema's migration (0: none yet), as pg_migrate reads it, or -1 with
 * the check reported as failed: a schema a newer skolsync migrated is left
 * alone, so open would fail.
 */
static long probe_migration(struct pg_sink *s, struct sk_probe *p, const char *what)
{
    char *table = sk_asprintf("%s.skolsync_migrations", s->qschema);
    char *sql = sk_asprintf("SELECT coalesce(max(version), 0) FROM %s", table);
    const char *params[] = {table};
    PGresult *res = NULL;
    bool record_level;
    struct sk_error err = {0};
    long version = -1;
    if (pg_exec_params(s, "looking for skolsync_migrations", "SELECT to_regclass($1) IS NULL", 1,
                       params, &res, &record_level, &err) == 0) {
        bool missing = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        res = NULL;
        if (missing)
            version = 0;
        else if (pg_exec_params(s, "reading skolsync_migrations", sql, 0, NULL, &res, &record_level,
                                &err) == 0)
            version = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    if (version < 0)
        sk_probe_fail(p, what,
                      "the role skolsync logs in as must own the schema's tables, or be granted "
                      "their privileges",
                      "%s", err.msg);
    else if (version > MIGRATION_LATEST)
        sk_probe_fail(p, what, "upgrade skolsync, or set schema to another one",
                      "schema %s is at migration %ld, newer than this skolsync knows (%d)",
                      s->schema, version, MIGRATION_LATEST);
    free(sql);
    free(table);
    return version > MIGRATION_LATEST ? -1 : version;
}

static void probe_schema(struct pg_sink *s, struct sk_probe *p)
{
    char *what = sk_asprintf("schema %s", s->schema);
    const char *params[] = {s->schema};
    PGresult *res = NULL;
    bool record_level;
    struct sk_error err = {0};
    if (pg_exec_params(s, "reading the role's rights", rights_sql, 1, params, &res, &record_level,
                       &err) < 0) {
        sk_probe_fail(p, what, "see the server's log", "%s", err.msg);
        free(what);
        return;
    }
    char *role = pg_quote_ident(PQgetvalue(res, 0, 0));
    char *db = pg_quote_ident(PQgetvalue(res, 0, 1));
    bool db_create = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    bool exists = !PQgetisnull(res, 0, 3);
    bool usage = exists && strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    bool create = exists && strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    PQclear(res);
    long migration;
    if (exists && usage && create) {
        if ((migration = probe_migration(s, p, what)) >= 0)
            sk_probe_ok(p, what, "exists (at migration %ld); role %s has USAGE and CREATE on it",
                        migration, role);
    } else if (exists) {
        const char *missing = !usage && !create ? "USAGE, CREATE" : !usage ? "USAGE" : "CREATE";
        char *fix =
            sk_asprintf("as its owner: GRANT %s ON SCHEMA %s TO %s;", missing, s->qschema, role);
        sk_probe_fail(p, what, fix, "role %s lacks the %s privilege on schema %s", role, missing,
                      s->schema);
        free(fix);
    } else if (db_create) {
        sk_probe_ok(p, what, "does not exist yet; role %s may create it (CREATE on database %s)",
                    role, db);
    } else {
        char *fix = sk_asprintf("as an administrator: CREATE SCHEMA %s AUTHORIZATION %s; (or "
                                "GRANT CREATE ON DATABASE %s TO %s;)",
                                s->qschema, role, db, role);
        sk_probe_fail(p, what, fix,
                      "does not exist, and role %s lacks the CREATE privilege on database %s to "
                      "create it",
                      role, db);
        free(fix);
    }
    free(role);
    free(db);
    free(what);
}

void pg_probe(const void *conf_ptr, struct sk_probe *p)
{
    const struct pg_conf *conf = conf_ptr;
    PQconninfoOption *parsed = PQconninfoParse(conf->conninfo, NULL);
    if (!parsed) {
        /* libpq's message could quote the string: say only that it is malformed. */
        sk_probe_fail(p, "login", "write conninfo as \"host=... dbname=...\" or postgresql://...",
                      "conninfo is not a valid libpq connection string");
        return;
    }
    PQconninfoFree(parsed);
    struct pg_sink s = {
        .component = p->name,
        .conninfo = conf->conninfo,
        .schema = conf->schema,
        .qschema = pg_quote_ident(conf->schema),
        .target = pg_describe_target(conf->conninfo, conf->schema),
        .connect_timeout_ms = conf->connect_timeout_ms,
    };
    struct sk_error err = {0};
    if (pg_ensure_connected(&s, &err) < 0) {
        sk_probe_fail(p, "login", login_fix(err.msg), "%s", err.msg);
    } else {
        const char *version = PQparameterStatus(s.conn, "server_version");
        sk_probe_ok(p, "login", "%s as %s: PostgreSQL %s", s.target, PQuser(s.conn),
                    version ? version : "(version unknown)");
        probe_schema(&s, p);
    }
    pg_disconnect(&s);
    free(s.qschema);
    free(s.target);
}
