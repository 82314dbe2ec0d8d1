/* bench/hub_load.c: a small load generator for SS 12000 list endpoints
 * (make bench, scenario "hub"; bench/hub.sh).
 *
 *   hub_load BASE_URL TOKEN CLIENTS LIMIT EXPECTED [PATH]
 *
 * CLIENTS threads start at once (a barrier); each walks the full listing of
 * BASE_URL/PATH (default persons) through paging: the first request with
 * ?limit=LIMIT, then ?pageToken=<token>&limit=LIMIT until an answer has no
 * pageToken. One libcurl easy handle per thread (a kept-alive connection),
 * `Authorization: Bearer TOKEN`. Every answer must be 200; the records of a
 * page are counted exactly (the elements of the top-level "data" array, by a
 * small JSON scanner that honours strings), and each walk must end with
 * EXPECTED records. Prints one line:
 *
 *   clients seconds records pages bytes p50_ms p99_ms max_ms failed_walks
 *
 * seconds = from the barrier until the last walk ended; the latencies are
 * those of every page request of every client (curl_easy_perform). Exit 1
 * when a walk failed (an error, a wrong count), with the reason on stderr.
 * With HUB_LOAD_LATENCIES=FILE set, every page request is also written to
 * FILE as "client page start_s ms" (start_s from the barrier), to look into
 * stalls.
 * Build: cc -O2 -o hub_load hub_load.c -lcurl -lpthread */
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct buf {
    char *p;
    size_t n, cap;
};

struct client {
    pthread_t th;
    int no;
    double *lat_ms; /* one per page */
    double *start_s; /* when each page request began, from the barrier */
    size_t npages, cap;
    long long records, bytes;
    char err[256];
};

static const char *g_base, *g_path;
static long g_limit;
static long long g_expected;
static char g_auth[4096];
static pthread_barrier_t g_barrier;
static double g_t0;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 20;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* The elements of the top-level "data" array and the top-level "pageToken"
 * string (copied into token, "" when absent). -1 when the body is not one
 * complete JSON object of that shape. */
static long scan_page(const char *s, size_t n, char *token, size_t tcap)
{
    int depth = 0;
    bool in_data = false, key_data = false, key_token = false;
    long records = 0;
    token[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != '"')
                j += s[j] == '\\' ? 2 : 1;
            if (j >= n)
                return -1;
            if (depth == 1) {
                size_t k = j + 1;
                while (k < n && (s[k] == ' ' || s[k] == '\n' || s[k] == '\r' || s[k] == '\t'))
                    k++;
                if (k < n && s[k] == ':') { /* a key of the top-level object */
                    key_data = j - i - 1 == 4 && memcmp(s + i + 1, "data", 4) == 0;
                    key_token = j - i - 1 == 9 && memcmp(s + i + 1, "pageToken", 9) == 0;
                } else if (key_token) {
                    if (j - i - 1 >= tcap)
                        return -1;
                    memcpy(token, s + i + 1, j - i - 1);
                    token[j - i - 1] = '\0';
                }
            }
            i = j;
        } else if (c == '{' || c == '[') {
            if (depth == 1 && c == '[' && key_data)
                in_data = true;
            else if (depth == 2 && in_data)
                records++;
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
            if (depth == 1)
                in_data = false;
            if (depth < 0)
                return -1;
        }
    }
    return depth == 0 ? records : -1;
}

static bool add_latency(struct client *cl, double start, double ms)
{
    if (cl->npages == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 256;
        double *q = realloc(cl->lat_ms, cap * sizeof *q);
        if (!q)
            return false;
        cl->lat_ms = q;
        q = realloc(cl->start_s, cap * sizeof *q);
        if (!q)
            return false;
        cl->start_s = q;
        cl->cap = cap;
    }
    cl->start_s[cl->npages] = start - g_t0;
    cl->lat_ms[cl->npages++] = ms;
    return true;
}

static void *walk(void *arg)
{
    struct client *cl = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, g_auth);
    struct buf b = {0};
    char url[8192], token[4096];
    if (!h || !hdr) {
        snprintf(cl->err, sizeof cl->err, "curl init failed");
        pthread_barrier_wait(&g_barrier);
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    snprintf(url, sizeof url, "%s/%s?limit=%ld", g_base, g_path, g_limit);
    pthread_barrier_wait(&g_barrier);
    for (;;) {
        b.n = 0;
        curl_easy_setopt(h, CURLOPT_URL, url);
        double t0 = now_s();
        CURLcode rc = curl_easy_perform(h);
        double ms = (now_s() - t0) * 1000.0;
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200) {
            snprintf(cl->err, sizeof cl->err, "client %d page %zu: %s, HTTP %ld: %.120s", cl->no,
                     cl->npages + 1, curl_easy_strerror(rc), status, b.p ? b.p : "");
            break;
        }
        if (!add_latency(cl, t0, ms)) {
            snprintf(cl->err, sizeof cl->err, "out of memory");
            break;
        }
        cl->bytes += (long long)b.n;
        long recs = scan_page(b.p ? b.p : "", b.n, token, sizeof token);
        if (recs < 0) {
            snprintf(cl->err, sizeof cl->err, "client %d page %zu: not a list page", cl->no,
                     cl->npages);
            break;
        }
        cl->records += recs;
        if (!token[0])
            break;
        char *esc = curl_easy_escape(h, token, 0);
        snprintf(url, sizeof url, "%s/%s?pageToken=%s&limit=%ld", g_base, g_path, esc ? esc : "",
                 g_limit);
        curl_free(esc);
    }
    if (!cl->err[0] && cl->records != g_expected)
        snprintf(cl->err, sizeof cl->err, "client %d: %lld records, expected %lld", cl->no,
                 cl->records, g_expected);
out:
    free(b.p);
    curl_slist_free_all(hdr);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: hub_load BASE_URL TOKEN CLIENTS LIMIT EXPECTED [PATH]\n");
        return 2;
    }
    g_base = argv[1];
    snprintf(g_auth, sizeof g_auth, "Authorization: Bearer %s", argv[2]);
    int nc = atoi(argv[3]);
    g_limit = atol(argv[4]);
    g_expected = atoll(argv[5]);
    g_path = argc > 6 ? argv[6] : "persons";
    if (nc < 1 || nc > 1024 || g_limit < 1) {
        fprintf(stderr, "hub_load: bad CLIENTS or LIMIT\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct client *cl = calloc((size_t)nc, sizeof *cl);
    if (!cl)
        return 1;
    pthread_barrier_init(&g_barrier, NULL, (unsigned)nc + 1);
    for (int i = 0; i < nc; i++) {
        cl[i].no = i + 1;
        if (pthread_create(&cl[i].th, NULL, walk, &cl[i]) != 0) {
            fprintf(stderr, "hub_load: pthread_create failed\n");
            return 1;
        }
    }
    g_t0 = now_s(); /* before the barrier opens: no walk has begun */
    pthread_barrier_wait(&g_barrier);
    double t0 = g_t0;
    for (int i = 0; i < nc; i++)
        pthread_join(cl[i].th, NULL);
    double secs = now_s() - t0;

    long long records = 0, bytes = 0;
    size_t pages = 0;
    int failed = 0;
    for (int i = 0; i < nc; i++) {
        records += cl[i].records;
        bytes += cl[i].bytes;
        pages += cl[i].npages;
        if (cl[i].err[0]) {
            failed++;
            fprintf(stderr, "hub_load: %s\n", cl[i].err);
        }
    }
    const char *latf = getenv("HUB_LOAD_LATENCIES");
    FILE *lf = latf && *latf ? fopen(latf, "w") : NULL;
    for (int i = 0; lf && i < nc; i++)
        for (size_t j = 0; j < cl[i].npages; j++)
            fprintf(lf, "%d %zu %.3f %.2f\n", cl[i].no, j + 1, cl[i].start_s[j], cl[i].lat_ms[j]);
    if (lf)
        fclose(lf);
    double *all = malloc((pages ? pages : 1) * sizeof *all);
    if (!all)
        return 1;
    size_t k = 0;
    for (int i = 0; i < nc; i++) {
        memcpy(all + k, cl[i].lat_ms, cl[i].npages * sizeof *all);
        k += cl[i].npages;
        free(cl[i].lat_ms);
        free(cl[i].start_s);
    }
    qsort(all, pages, sizeof *all, cmp_double);
    printf("%d %.3f %lld %zu %lld %.2f %.2f %.2f %d\n", nc, secs, records, pages, bytes,
           pct(all, pages, 0.50), pct(all, pages, 0.99), pages ? all[pages - 1] : 0.0, failed);
    free(all);
    free(cl);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
