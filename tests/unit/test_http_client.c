/*
 * test_http_client.c: the connectors' HTTP client (connectors/common/
 * http_client.h) against a libmicrohttpd server on 127.0.0.1 started by
 * each test: bearer and API-key headers, the OAuth2 token cached, refreshed
 * on a 401 and before it expires, absurd expires_in values clamped, an
 * oversized token refused, the token endpoint's Retry-After honoured, both
 * forms of Retry-After, and max_response_size counted after decompression
 * (a gzip bomb is refused without the process growing).
 */
#include <criterion/criterion.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zlib.h>

#include "http_client.h"
#include "log.h"
#include "util.h"

/* ---- the server -------------------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    struct MHD_Daemon *d;
    int port;
    /* the token endpoint: POST /token */
    int token_requests;
    long token_status;
    char *token_body; /* answered as is */
    char token_retry_after[64];
    char last_form[1024];
    /* GET /api: 200 {"ok":true}, or api_status with api_retry_after */
    int api_requests;
    int api_401s_left; /* answer this many 401 first */
    long api_status;
    char api_retry_after[64];
    char last_auth[256];
    char last_apikey[256];
    /* GET /big and /chunked: big_size bytes; GET /gzip: gz as gzip */
    size_t big_size;
    unsigned char *gz;
    size_t gz_len;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

struct upload {
    char data[1000];
    size_t len;
};

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    free(*con_cls);
    *con_cls = NULL;
}

static ssize_t fill_x(void *cls, uint64_t pos, char *buf, size_t max)
{
    size_t total = srv.big_size;
    if (pos >= total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = total - pos < max ? total - pos : max;
    memset(buf, 'x', n);
    return (ssize_t)n;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *body,
                                 const char *retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after && *retry_after)
        MHD_add_response_header(r, "Retry-After", retry_after);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    struct upload *up = *con_cls;
    if (!up) {
        *con_cls = calloc(1, sizeof(*up));
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (n > sizeof(up->data) - 1 - up->len)
            n = sizeof(up->data) - 1 - up->len;
        memcpy(up->data + up->len, upload_data, n);
        up->len += n;
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&srv.mu);
    enum MHD_Result ret;
    if (strcmp(url, "/token") == 0) {
        srv.token_requests++;
        snprintf(srv.last_form, sizeof(srv.last_form), "%s", up->data);
        char *body = sk_strdup(srv.token_body ? srv.token_body : "{}");
        long st = srv.token_status ? srv.token_status : 200;
        char ra[64];
        snprintf(ra, sizeof(ra), "%s", srv.token_retry_after);
        pthread_mutex_unlock(&srv.mu);
        /* a big answer is sent from its own copy, outside the lock */
        struct MHD_Response *r =
            MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(r, "Content-Type", "application/json");
        if (*ra)
            MHD_add_response_header(r, "Retry-After", ra);
        ret = MHD_queue_response(c, (unsigned)st, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/api") == 0) {
        srv.api_requests++;
        const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        const char *k = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Api-Key");
        snprintf(srv.last_auth, sizeof(srv.last_auth), "%s", a ? a : "");
        snprintf(srv.last_apikey, sizeof(srv.last_apikey), "%s", k ? k : "");
        if (srv.api_401s_left > 0) {
            srv.api_401s_left--;
            ret = send_text(c, 401, "{}", NULL);
        } else if (srv.api_status) {
            ret = send_text(c, (unsigned)srv.api_status, "{}", srv.api_retry_after);
        } else {
            ret = send_text(c, 200, "{\"ok\":true}", NULL);
        }
        pthread_mutex_unlock(&srv.mu);
        return ret;
    }
    pthread_mutex_unlock(&srv.mu);
    struct MHD_Response *r;
    if (strcmp(url, "/big") == 0) /* with a Content-Length */
        r = MHD_create_response_from_callback(srv.big_size, 64 * 1024, fill_x, NULL, NULL);
    else if (strcmp(url, "/chunked") == 0) /* without: only the bytes tell */
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, fill_x, NULL, NULL);
    else if (strcmp(url, "/gzip") == 0) {
        r = MHD_create_response_from_buffer(srv.gz_len, srv.gz, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Content-Encoding", "gzip");
    } else
        return send_text(c, 404, "{}", NULL);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void server_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                             NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
    cr_assert_not_null(srv.d, "cannot start the test server");
    srv.port = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    cr_assert_gt(srv.port, 0);
}

static char *token_url; /* borrowed by the client of a test */

static void setup(void)
{
    sk_log_setup(SK_LOG_ERROR, false);
    server_start();
}

static void teardown(void)
{
    if (srv.d)
        MHD_stop_daemon(srv.d);
    free(srv.token_body);
    free(srv.gz);
    free(token_url);
}

static char *url_of(const char *path)
{
    return sk_asprintf("http://127.0.0.1:%d%s", srv.port, path);
}

static void set_token_answer(long status, const char *body, const char *retry_after)
{
    pthread_mutex_lock(&srv.mu);
    srv.token_status = status;
    free(srv.token_body);
    srv.token_body = sk_strdup(body);
    snprintf(srv.token_retry_after, sizeof(srv.token_retry_after), "%s",
             retry_after ? retry_after : "");
    pthread_mutex_unlock(&srv.mu);
}

static int token_requests(void)
{
    pthread_mutex_lock(&srv.mu);
    int n = srv.token_requests;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

/* ---- the client -------------------------------------------------------------- */

static struct sk_http_client_conf base_conf(void)
{
    return (struct sk_http_client_conf){.user_agent = "test_http_client",
                                        .accept = "application/json",
                                        .content_type = "application/json",
                                        .timeout_ms = 10000};
}

static struct sk_http_client *oauth_client(int64_t max_wait_ms)
{
    free(token_url);
    token_url = url_of("/token");
    struct sk_http_client_conf c = base_conf();
    c.auth = SK_HTTP_AUTH_OAUTH2;
    c.token_url = token_url;
    c.client_id = "cid";
    c.client_secret = "p@ss word";
    c.scope = "api.read";
    c.max_wait_ms = max_wait_ms;
    struct sk_error err = {0};
    struct sk_http_client *h = sk_http_client_new(&c, "test", &err);
    cr_assert_not_null(h, "%s", err.msg);
    return h;
}

/* GET path; the status (or -1) and err. */
static long get(struct sk_http_client *h, const char *path, struct sk_error *err)
{
    char *url = url_of(path);
    struct sk_http_resp r;
    int rc = sk_http_client_request(h, "GET", url, NULL, &r, err);
    free(url);
    if (rc)
        return -1;
    long st = r.status;
    sk_http_resp_free(&r);
    return st;
}

static void get_ok(struct sk_http_client *h)
{
    struct sk_error err = {0};
    long st = get(h, "/api", &err);
    cr_assert_eq(st, 200, "GET /api: %ld %s", st, err.msg);
}

TestSuite(http_client, .init = setup, .fini = teardown, .timeout = 60);

/* One GET with c; the server saw exactly the Authorization and X-Api-Key given. */
static void check_sent(const struct sk_http_client_conf *c, const char *want_auth,
                       const char *want_apikey)
{
    struct sk_error err = {0};
    struct sk_http_client *h = sk_http_client_new(c, "test", &err);
    cr_assert_not_null(h, "%s", err.msg);
    get_ok(h);
    cr_assert_str_eq(srv.last_auth, want_auth);
    cr_assert_str_eq(srv.last_apikey, want_apikey);
    sk_http_client_free(h);
}

Test(http_client, bearer_header_is_sent)
{
    struct sk_http_client_conf c = base_conf();
    c.auth = SK_HTTP_AUTH_BEARER;
    c.token = "s3cr3t-bearer";
    check_sent(&c, "Bearer s3cr3t-bearer", "");
}

Test(http_client, api_key_header_is_sent)
{
    struct sk_http_client_conf c = base_conf();
    c.auth = SK_HTTP_AUTH_APIKEY;
    c.header = "X-Api-Key";
    c.value = "k-123";
    check_sent(&c, "", "k-123");
}

Test(http_client, no_auth_sends_no_credentials)
{
    struct sk_http_client_conf c = base_conf();
    check_sent(&c, "", "");
}

Test(http_client, auth_without_its_settings_is_fatal)
{
    struct sk_http_client_conf c = base_conf();
    c.auth = SK_HTTP_AUTH_OAUTH2;
    c.client_id = "cid";
    struct sk_error err = {0};
    cr_assert_null(sk_http_client_new(&c, "test", &err));
    cr_assert_eq(err.cls, SK_ERR_FATAL);
    cr_assert(strstr(err.msg, "token_url"), "%s", err.msg);
}

Test(http_client, oauth2_token_is_cached_and_sent)
{
    set_token_answer(
        200, "{\"access_token\":\"tok-1\",\"token_type\":\"Bearer\",\"expires_in\":3600}", NULL);
    struct sk_http_client *h = oauth_client(0);
    for (int i = 0; i < 3; i++)
        get_ok(h);
    cr_assert_eq(token_requests(), 1, "the token is cached: %d token requests", token_requests());
    cr_assert_str_eq(srv.last_auth, "Bearer tok-1");
    cr_assert(strstr(srv.last_form, "grant_type=client_credentials") &&
                  strstr(srv.last_form, "client_id=cid") &&
                  strstr(srv.last_form, "client_secret=p%40ss%20word") &&
                  strstr(srv.last_form, "scope=api.read"),
              "form: %s", srv.last_form);
    /* used until the margin before its expiry */
    int64_t left = sk_http_client_token_valid_ms(h);
    cr_assert(left > 3540000 - 5000 && left <= 3540000, "valid %lld ms", (long long)left);
    sk_http_client_free(h);
}

Test(http_client, oauth2_token_is_refreshed_once_on_401)
{
    set_token_answer(200, "{\"access_token\":\"tok-2\",\"expires_in\":3600}", NULL);
    struct sk_http_client *h = oauth_client(0);
    get_ok(h);
    pthread_mutex_lock(&srv.mu);
    srv.api_401s_left = 1; /* the server revoked the token */
    pthread_mutex_unlock(&srv.mu);
    get_ok(h);
    cr_assert_eq(token_requests(), 2);
    /* a 401 that stays: one refresh, then the 401 goes back to the caller */
    pthread_mutex_lock(&srv.mu);
    srv.api_401s_left = 5;
    pthread_mutex_unlock(&srv.mu);
    struct sk_error err = {0};
    cr_assert_eq(get(h, "/api", &err), 401);
    cr_assert_eq(token_requests(), 3);
    sk_http_client_free(h);
}

/* expires_in 30 (the shortest trusted): used for 30 s less a quarter, then fetched again. */
Test(http_client, oauth2_token_is_refreshed_before_it_expires)
{
    set_token_answer(200, "{\"access_token\":\"tok-3\",\"expires_in\":30}", NULL);
    struct sk_http_client *h = oauth_client(0);
    get_ok(h);
    int64_t left = sk_http_client_token_valid_ms(h);
    cr_assert(left > 22500 - 2000 && left <= 22500, "valid %lld ms", (long long)left);
    sk_sleep_ms(left - 1000);
    get_ok(h);
    cr_assert_eq(token_requests(), 1, "fetched again before the margin");
    sk_sleep_ms(1500);
    get_ok(h);
    cr_assert_eq(token_requests(), 2, "not fetched again at the margin");
    sk_http_client_free(h);
}

/* An expires_in the client must not trust as is: the token's life in ms it gets. */
static void check_expires_in(const char *value, int64_t want_ms)
{
    char *body = sk_asprintf("{\"access_token\":\"tok-4\",\"expires_in\":%s}", value);
    set_token_answer(200, body, NULL);
    free(body);
    struct sk_http_client *h = oauth_client(0);
    get_ok(h);
    get_ok(h);
    cr_assert_eq(token_requests(), 1, "expires_in %s: a token fetch for every request", value);
    int64_t left = sk_http_client_token_valid_ms(h);
    cr_assert(left > want_ms - 5000 && left <= want_ms, "expires_in %s: valid %lld ms", value,
              (long long)left);
    sk_http_client_free(h);
}

Test(http_client, expires_in_1e999_is_clamped_to_a_day)
{
    check_expires_in("1e999", 86400000 - 60000);
}

Test(http_client, expires_in_huge_is_clamped_to_a_day)
{
    check_expires_in("9223372036854775807", 86400000 - 60000);
}

Test(http_client, expires_in_negative_is_clamped_to_30_s)
{
    check_expires_in("-5", 22500);
}

Test(http_client, expires_in_zero_is_clamped_to_30_s)
{
    check_expires_in("0", 22500);
}

Test(http_client, expires_in_string_is_read_and_clamped)
{
    check_expires_in("\"1e999\"", 86400000 - 60000);
}

Test(http_client, expires_in_missing_means_an_hour)
{
    check_expires_in("null", 3600000 - 60000);
}

/* A GET through an OAuth2 client whose token request fails with cls; err filled. */
static void token_fails(enum sk_err_class cls, struct sk_error *err)
{
    struct sk_http_client *h = oauth_client(0);
    cr_assert_eq(get(h, "/api", err), -1);
    cr_assert_eq(err->cls, cls, "%s", err->msg);
    sk_http_client_free(h);
}

Test(http_client, oversized_access_token_is_refused)
{
    size_t n = 20000;
    char *tok = sk_malloc(n + 1);
    memset(tok, 'a', n);
    tok[n] = '\0';
    char *body = sk_asprintf("{\"access_token\":\"%s\",\"expires_in\":3600}", tok);
    set_token_answer(200, body, NULL);
    free(body);
    struct sk_error err = {0};
    token_fails(SK_ERR_FATAL, &err);
    cr_assert(strstr(err.msg, "20000 bytes") && strstr(err.msg, "16384"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "aaaaaaaa"), "the token is in the message: %s", err.msg);
    pthread_mutex_lock(&srv.mu);
    cr_assert_eq(srv.api_requests, 0, "a request went out without a usable token");
    pthread_mutex_unlock(&srv.mu);
    free(tok);
}

/*
 * An access token with CR/LF (or a space, a control byte) went verbatim
 * into "Authorization: Bearer %s": the token endpoint could add headers to
 * every API request. Refused (FATAL), the token not quoted.
 */
static void bad_token_refused(const char *json_token)
{
    char *body = sk_asprintf("{\"access_token\":\"%s\",\"expires_in\":3600}", json_token);
    set_token_answer(200, body, NULL);
    free(body);
    struct sk_error err = {0};
    token_fails(SK_ERR_FATAL, &err);
    cr_assert(strstr(err.msg, "b64token"), "%s: %s", json_token, err.msg);
    cr_assert_null(strstr(err.msg, "secretpart"), "the token is in the message: %s", err.msg);
    pthread_mutex_lock(&srv.mu);
    cr_assert_eq(srv.api_requests, 0, "%s: a request went out with the token", json_token);
    pthread_mutex_unlock(&srv.mu);
}

Test(http_client, access_token_with_control_characters_is_refused)
{
    bad_token_refused("secretpart\\r\\nX-Injected: 1");
    bad_token_refused("secretpart\\n");
    bad_token_refused("secretpart with space");
    bad_token_refused("secretpart\\u0001");
    bad_token_refused("secretpart=x");
}

Test(http_client, access_token_of_the_b64token_set_is_sent)
{
    set_token_answer(200, "{\"access_token\":\"eyJ.a-b_c~d+e/f==\",\"expires_in\":3600}", NULL);
    struct sk_http_client *h = oauth_client(0);
    get_ok(h);
    cr_assert_str_eq(srv.last_auth, "Bearer eyJ.a-b_c~d+e/f==");
    sk_http_client_free(h);
}

/* A token answer of megabytes is not even read whole. */
Test(http_client, huge_token_answer_is_refused)
{
    size_t n = 4 * 1024 * 1024;
    char *body = sk_malloc(n + 64);
    int k = snprintf(body, 64, "{\"access_token\":\"");
    memset(body + k, 'b', n);
    strcpy(body + k + n, "\"}");
    set_token_answer(200, body, NULL);
    free(body);
    struct sk_error err = {0};
    token_fails(SK_ERR_FATAL, &err);
    cr_assert(strstr(err.msg, "token") && strstr(err.msg, "larger than"), "%s", err.msg);
}

Test(http_client, token_endpoint_refusing_credentials_is_fatal_without_the_secret)
{
    set_token_answer(401, "{\"error\":\"invalid_client\",\"hint\":\"p@ss word\"}", NULL);
    struct sk_error err = {0};
    token_fails(SK_ERR_FATAL, &err);
    cr_assert(strstr(err.msg, "401") && strstr(err.msg, "invalid_client"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "p@ss"), "%s", err.msg);
}

/* The token endpoint throttles: no token request before its Retry-After is over. */
Test(http_client, token_endpoint_retry_after_is_honoured)
{
    set_token_answer(429, "{}", "2");
    struct sk_http_client *h = oauth_client(0);
    struct sk_error err = {0};
    cr_assert_eq(get(h, "/api", &err), -1);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    set_token_answer(200, "{\"access_token\":\"tok-5\",\"expires_in\":3600}", NULL);
    cr_assert_eq(get(h, "/api", &err), -1);
    cr_assert_eq(err.cls, SK_ERR_RETRIABLE, "%s", err.msg);
    cr_assert(strstr(err.msg, "Retry-After"), "%s", err.msg);
    cr_assert_eq(token_requests(), 1, "asked the token endpoint again before its Retry-After");
    sk_sleep_ms(2100);
    get_ok(h);
    cr_assert_eq(token_requests(), 2);
    sk_http_client_free(h);
}

/* With room to wait inline (max_wait_ms), the next request waits instead of failing. */
Test(http_client, token_endpoint_retry_after_is_waited_inline)
{
    set_token_answer(503, "{}", "1");
    struct sk_http_client *h = oauth_client(5000);
    struct sk_error err = {0};
    cr_assert_eq(get(h, "/api", &err), -1);
    set_token_answer(200, "{\"access_token\":\"tok-6\",\"expires_in\":3600}", NULL);
    int64_t t0 = sk_mono_ms();
    get_ok(h);
    cr_assert_geq(sk_mono_ms() - t0, 900, "did not wait for the token endpoint's Retry-After");
    cr_assert_eq(token_requests(), 2);
    sk_http_client_free(h);
}

Test(http_client, retry_after_delta_seconds_and_http_date)
{
    int64_t now = 1700000000000; /* Tue, 14 Nov 2023 22:13:20 GMT */
    cr_assert_eq(sk_http_parse_retry_after("7", now), 7000);
    cr_assert_eq(sk_http_parse_retry_after("  120 \r\n", now), 120000);
    cr_assert_eq(sk_http_parse_retry_after("0", now), 0);
    cr_assert_eq(sk_http_parse_retry_after("99999999999999999999999999", now),
                 SK_HTTP_RETRY_AFTER_MAX_MS);
    cr_assert_eq(sk_http_parse_retry_after("86400", now), SK_HTTP_RETRY_AFTER_MAX_MS);
    cr_assert_eq(sk_http_parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now), 30000);
    cr_assert_eq(sk_http_parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now), 0);
    cr_assert_eq(sk_http_parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
                 SK_HTTP_RETRY_AFTER_MAX_MS);
    cr_assert_eq(sk_http_parse_retry_after("", now), -1);
    cr_assert_eq(sk_http_parse_retry_after("-5", now), -1);
    cr_assert_eq(sk_http_parse_retry_after("soon", now), -1);
    cr_assert_eq(sk_http_parse_retry_after("1.5", now), -1);
}

/* An entity tag goes back in If-Match: one of the server's choosing must not add headers. */
Test(http_client, an_etag_with_control_characters_is_not_sent_back)
{
    cr_assert(sk_http_etag_ok("W/\"3\""));
    cr_assert(sk_http_etag_ok("\"a b\""));
    cr_assert_not(sk_http_etag_ok(""));
    cr_assert_not(sk_http_etag_ok("W/\"3\"\r\nX-Admin: yes"));
    cr_assert_not(sk_http_etag_ok("\"\xc3\xa5\""));
    char big[SK_HTTP_ETAG_MAX + 1];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_not(sk_http_etag_ok(big));
    struct sk_http_client_conf c = base_conf();
    struct sk_error err = {0};
    struct sk_http_client *h = sk_http_client_new(&c, "test", &err);
    char *url = url_of("/api");
    struct sk_http_resp r;
    cr_assert_eq(sk_http_client_request_if(h, "PUT", url, "{}", "W/\"3\"\nX: y", &r, &err), -1);
    cr_assert_eq(err.cls, SK_ERR_PERMANENT, "%s", err.msg);
    free(url);
    sk_http_client_free(h);
}

static int64_t api_retry_after(long status, const char *value)
{
    pthread_mutex_lock(&srv.mu);
    srv.api_status = status;
    snprintf(srv.api_retry_after, sizeof(srv.api_retry_after), "%s", value);
    pthread_mutex_unlock(&srv.mu);
    struct sk_http_client_conf c = base_conf();
    struct sk_error err = {0};
    struct sk_http_client *h = sk_http_client_new(&c, "test", &err);
    char *url = url_of("/api");
    struct sk_http_resp r;
    cr_assert_eq(sk_http_client_request(h, "GET", url, NULL, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.status, status);
    int64_t ms = r.retry_after_ms;
    sk_http_resp_free(&r);
    free(url);
    sk_http_client_free(h);
    return ms;
}

Test(http_client, retry_after_of_an_answer_in_both_forms)
{
    cr_assert_eq(api_retry_after(429, "7"), 7000);
    char date[64];
    time_t t = time(NULL) + 30;
    struct tm tm;
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&t, &tm));
    int64_t ms = api_retry_after(503, date);
    cr_assert(ms > 27000 && ms <= 30000, "HTTP-date 30 s ahead: %lld ms", (long long)ms);
    cr_assert_eq(api_retry_after(503, ""), -1);
}

/* GET path with max_response_size limit; rc, err. */
static int get_limited(const char *path, int64_t limit, struct sk_http_resp *r,
                       struct sk_error *err)
{
    struct sk_http_client_conf c = base_conf();
    c.max_response_size = limit;
    struct sk_http_client *h = sk_http_client_new(&c, "test", err);
    char *url = url_of(path);
    int rc = sk_http_client_request(h, "GET", url, NULL, r, err);
    free(url);
    sk_http_client_free(h);
    return rc;
}

static void check_too_big(const char *path)
{
    srv.big_size = 100 * 1024;
    struct sk_http_resp r;
    struct sk_error err = {0};
    cr_assert_eq(get_limited(path, 64 * 1024, &r, &err), -1, "%s: a 100 KiB body was accepted",
                 path);
    cr_assert_eq(err.cls, SK_ERR_PERMANENT, "%s", err.msg);
    cr_assert(strstr(err.msg, "max_response_size") && strstr(err.msg, "65536"), "%s", err.msg);
    /* at the limit it is fine */
    srv.big_size = 64 * 1024;
    cr_assert_eq(get_limited(path, 64 * 1024, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.body.len, 64 * 1024);
    sk_http_resp_free(&r);
}

Test(http_client, body_over_max_response_size_is_refused)
{
    check_too_big("/big");
}

Test(http_client, chunked_body_over_max_response_size_is_refused)
{
    check_too_big("/chunked");
}

/* gzip of n zero bytes, deflated piece by piece (the input is never whole in memory). */
static void gzip_zeros(size_t n)
{
    z_stream z = {0};
    cr_assert_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
    static unsigned char zeros[64 * 1024];
    size_t cap = n / 500 + 4096;
    srv.gz = sk_malloc(cap);
    z.next_out = srv.gz;
    z.avail_out = (uInt)cap;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof(zeros) ? n - done : sizeof(zeros);
        z.next_in = zeros;
        z.avail_in = (uInt)k;
        cr_assert_eq(deflate(&z, Z_NO_FLUSH), Z_OK);
        cr_assert_eq(z.avail_in, 0);
        done += k;
    }
    cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    srv.gz_len = z.total_out;
    deflateEnd(&z);
}

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* ~130 KB on the wire, 128 MiB decoded: refused at 1 MiB, the process stays small. */
Test(http_client, gzip_bomb_is_refused_without_growing)
{
    gzip_zeros(128u * 1024 * 1024);
    cr_assert_lt(srv.gz_len, 1024 * 1024, "the bomb is not small: %zu", srv.gz_len);
    long before = max_rss_kib();
    struct sk_http_resp r;
    struct sk_error err = {0};
    cr_assert_eq(get_limited("/gzip", 1024 * 1024, &r, &err), -1,
                 "a body inflating to 128 MiB was accepted");
    cr_assert_eq(err.cls, SK_ERR_PERMANENT, "%s", err.msg);
    cr_assert(strstr(err.msg, "max_response_size") && strstr(err.msg, "decompressed"), "%s",
              err.msg);
    long grew = max_rss_kib() - before;
    cr_assert_lt(grew, 32 * 1024, "RSS grew by %ld KiB", grew);
}

/* A small compressed answer is decoded: the limit and the body are the decoded bytes. */
Test(http_client, gzip_body_is_decoded)
{
    gzip_zeros(200 * 1024);
    struct sk_http_resp r;
    struct sk_error err = {0};
    cr_assert_eq(get_limited("/gzip", 256 * 1024, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body.len, 200 * 1024);
    cr_assert_eq(r.body.p[0], '\0');
    sk_http_resp_free(&r);
}
