/*
 * hub_token.c: the page tokens of the hub's lists, and the sealing of its
 * access tokens.
 *
 * A page token is base64url(nonce || AES-256-GCM(payload) || tag) under a
 * key derived from the hub's secret, the payload
 * "v4|what|client|expiry_ms|stamp|id|ma|mb|ca|cb|mask|key|params": the query
 * it continues (the list or deletedEntities, the client it was given to, the
 * filters of the first request, and its other parameters: per-type filters,
 * sortkey, expand as hub_filter_text) and the position after the last row
 * read (stamp and id, and the sort value with a sortkey; percent-encoded, so
 * no field holds a '|'). The filters travel in the token because the spec
 * lets a follow-up request carry only pageToken and limit. The payload is
 * encrypted, not only signed: the position is the last row read, which may
 * be one the client is not shown (protected_identities: skip) or a value
 * its scope removes (a civic number under sortkey=CivicNoAsc); before v4 a
 * client could read them in its own tokens.
 *
 * Owns: making and checking tokens. Must never: accept a token that does
 * not authenticate (GCM's tag), a token for another query or client (both
 * 400), or an expired one (410, told apart from a forged one only after the
 * tag matched); let a client read a token's payload.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "hub.h"
#include "util.h"

#define MAC_LEN 32
#define NONCE_LEN 12 /* GCM's */
#define TAG_LEN 16

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_encode(struct sk_buf *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1; /* no padding */
        for (size_t k = 0; k < chars; k++)
            sk_buf_putc(out, b64url[(v >> (18 - 6 * k)) & 63]);
    }
}

/* Decodes n characters of base64url (no padding) into out (room for n bytes). -1 if not base64url.
 */
static ssize_t b64_decode(const char *in, size_t n, uint8_t *out)
{
    if (n % 4 == 1)
        return -1;
    size_t len = 0;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = memchr(b64url, in[i], 64);
        if (!at || in[i] == '\0')
            return -1;
        v = v << 6 | (uint32_t)(at - b64url);
        if (i % 4 == 3) {
            out[len++] = (uint8_t)(v >> 16);
            out[len++] = (uint8_t)(v >> 8);
            out[len++] = (uint8_t)v;
            v = 0;
        }
    }
    size_t rest = n % 4; /* 2 or 3 characters: 1 or 2 bytes */
    if (rest == 2) {
        out[len++] = (uint8_t)(v >> 4);
    } else if (rest == 3) {
        out[len++] = (uint8_t)(v >> 10);
        out[len++] = (uint8_t)(v >> 2);
    }
    return (ssize_t)len;
}

static void mac_of(const struct hub *h, const void *payload, size_t len, uint8_t mac[MAC_LEN])
{
    unsigned mac_len = MAC_LEN;
    HMAC(EVP_sha256(), h->secret, HUB_SECRET_LEN, payload, len, mac, &mac_len);
}

/* The page tokens' key: apart from the MAC key of the access tokens. */
static void page_key(const struct hub *h, uint8_t key[32])
{
    static const char label[] = "skolsync hub page token key v4";
    unsigned len = 32;
    HMAC(EVP_sha256(), h->secret, HUB_SECRET_LEN, (const uint8_t *)label, sizeof(label) - 1, key,
         &len);
}

/* nonce || ciphertext || tag of n bytes of plain into out (n + NONCE_LEN + TAG_LEN). */
static bool seal_page(const struct hub *h, const uint8_t *plain, size_t n, uint8_t *out)
{
    uint8_t key[32];
    page_key(h, key);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    bool ok = ctx && RAND_bytes(out, NONCE_LEN) == 1 &&
              EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) == 1 &&
              EVP_EncryptUpdate(ctx, out + NONCE_LEN, &len, plain, (int)n) == 1 &&
              EVP_EncryptFinal_ex(ctx, out + NONCE_LEN + len, &fin) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + NONCE_LEN + n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

/* The payload of n sealed bytes (nonce || ciphertext || tag) into plain; false if it
 * does not authenticate. */
static bool open_page(const struct hub *h, const uint8_t *in, size_t n, uint8_t *plain)
{
    if (n < NONCE_LEN + TAG_LEN)
        return false;
    size_t clen = n - NONCE_LEN - TAG_LEN;
    uint8_t key[32];
    page_key(h, key);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) == 1 &&
              EVP_DecryptUpdate(ctx, plain, &len, in + NONCE_LEN, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                  (void *)(in + NONCE_LEN + clen)) == 1 &&
              EVP_DecryptFinal_ex(ctx, plain + len, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

char *hub_token_make(const struct hub *h, const char *what, const char *client,
                     const struct hub_query *q, int64_t now_ms)
{
    struct sk_buf key = {0};
    hub_filter_encode(&key, q->after_key);
    char *params = q->filter ? hub_filter_text(q->filter) : sk_strdup("");
    char *payload =
        sk_asprintf("v4|%s|%s|%" PRId64 "|%" PRId64 "|%s|%" PRId64 "|%" PRId64 "|%" PRId64
                    "|%" PRId64 "|%" PRIu32 "|%s|%s",
                    what, client, now_ms + h->conf->page_token_ttl_ms, q->after_stamp, q->after_id,
                    q->modified_after, q->modified_before, q->created_after, q->created_before,
                    q->entity_mask, key.p ? key.p : "", params);
    sk_buf_free(&key);
    free(params);
    size_t n = strlen(payload);
    uint8_t *sealed = sk_malloc(n + NONCE_LEN + TAG_LEN);
    struct sk_buf out = {0};
    if (seal_page(h, (const uint8_t *)payload, n, sealed))
        b64_encode(&out, sealed, n + NONCE_LEN + TAG_LEN);
    else /* libcrypto failed: a token that is refused (400) rather than one in clear */
        sk_buf_puts(&out, "-");
    free(sealed);
    OPENSSL_cleanse(payload, n);
    free(payload);
    return sk_buf_take(&out);
}

/* Splits the payload's fields at '|' in place; returns their number (at most max). */
static size_t split(char *s, char **f, size_t max)
{
    size_t n = 0;
    while (n < max) {
        f[n++] = s;
        s = strchr(s, '|');
        if (!s)
            break;
        *s++ = '\0';
    }
    return s ? max + 1 : n;
}

static bool int_field(const char *text, int64_t *out)
{
    return sk_parse_int(text, out) == 0;
}

/*
 * base64url(payload) "." base64url(MAC) of at most max characters: the
 * payload decoded (NUL-terminated after its *n bytes; caller frees) and the
 * MAC into mac; NULL if it is not of that shape.
 */
static uint8_t *token_parts(const char *token, size_t max, ssize_t *n, uint8_t mac[MAC_LEN + 3])
{
    const char *dot = strchr(token, '.');
    size_t len = strlen(token);
    if (!dot || len > max)
        return NULL;
    size_t plen = (size_t)(dot - token), mlen = len - plen - 1;
    uint8_t *payload = sk_malloc(plen + 1);
    *n = b64_decode(token, plen, payload);
    ssize_t m = mlen <= 44 ? b64_decode(dot + 1, mlen, mac) : -1;
    if (*n < 0 || m != MAC_LEN) {
        free(payload);
        return NULL;
    }
    payload[*n] = '\0';
    return payload;
}

enum hub_token_check hub_token_read(const struct hub *h, const char *token, const char *what,
                                    const char *client, struct hub_query *q, struct hub_filter *f,
                                    int64_t now_ms)
{
    size_t len = strlen(token);
    if (len > HUB_TOKEN_MAX)
        return HUB_TOKEN_BAD;
    uint8_t *sealed = sk_malloc(len + 3);
    ssize_t sn = b64_decode(token, len, sealed);
    uint8_t *payload = sk_malloc(sn > 0 ? (size_t)sn + 1 : 1);
    enum hub_token_check res = HUB_TOKEN_BAD;
    bool opened = sn > 0 && open_page(h, sealed, (size_t)sn, payload);
    free(sealed);
    if (!opened)
        goto out;
    ssize_t n = sn - NONCE_LEN - TAG_LEN;
    payload[n] = '\0';
    char *fld[13];
    int64_t exp, ma, mb, ca, cb, stamp, mask;
    if (memchr(payload, '\0', (size_t)n) || split((char *)payload, fld, 13) != 13 ||
        strcmp(fld[0], "v4") || strcmp(fld[1], what) || strcmp(fld[2], client) ||
        !int_field(fld[3], &exp) || !int_field(fld[4], &stamp) || strlen(fld[5]) > 36 ||
        !int_field(fld[6], &ma) || !int_field(fld[7], &mb) || !int_field(fld[8], &ca) ||
        !int_field(fld[9], &cb) || !int_field(fld[10], &mask) || hub_filter_decode(fld[11]) < 0 ||
        strlen(fld[11]) >= HUB_KEY_MAX)
        goto out;
    /* The parameters of the first request; a token without an f to fill must carry none. */
    if (f ? hub_filter_read_text(f, fld[12]) < 0 : fld[12][0] != '\0')
        goto out;
    if (now_ms > exp) {
        res = HUB_TOKEN_EXPIRED;
        goto out;
    }
    q->after_stamp = stamp;
    snprintf(q->after_id, sizeof(q->after_id), "%s", fld[5]);
    snprintf(q->after_key, sizeof(q->after_key), "%s", fld[11]);
    q->modified_after = ma;
    q->modified_before = mb;
    q->created_after = ca;
    q->created_before = cb;
    q->entity_mask = (uint32_t)mask;
    res = HUB_TOKEN_OK;
out:
    free(payload);
    return res;
}

/* ---- access tokens (hub_auth.c) --------------------------------------------------- */

/* The MAC of payload, NUL, bound: bound (a client's secret) is covered but never sent. */
static void bound_mac(const struct hub *h, const char *payload, size_t len, const char *bound,
                      uint8_t mac[MAC_LEN])
{
    struct sk_buf in = {0};
    sk_buf_putn(&in, payload, len);
    sk_buf_putc(&in, '\0');
    sk_buf_puts(&in, bound);
    mac_of(h, in.p, in.len, mac);
    OPENSSL_cleanse(in.p, in.len);
    sk_buf_free(&in);
}

char *hub_token_seal(const struct hub *h, const char *payload, const char *bound)
{
    uint8_t mac[MAC_LEN];
    bound_mac(h, payload, strlen(payload), bound, mac);
    struct sk_buf out = {0};
    b64_encode(&out, (const uint8_t *)payload, strlen(payload));
    sk_buf_putc(&out, '.');
    b64_encode(&out, mac, MAC_LEN);
    return sk_buf_take(&out);
}

char *hub_token_unseal(const struct hub *h, const char *token,
                       const char *(*bound_of)(void *ctx, const char *payload), void *ctx)
{
    ssize_t n;
    uint8_t mac[MAC_LEN + 3], want[MAC_LEN];
    uint8_t *payload = token_parts(token, 1024, &n, mac);
    if (!payload)
        return NULL;
    const char *bound = NULL;
    if (!memchr(payload, '\0', (size_t)n))
        bound = bound_of(ctx, (const char *)payload);
    if (bound) {
        bound_mac(h, (const char *)payload, (size_t)n, bound, want);
        if (CRYPTO_memcmp(mac, want, MAC_LEN) == 0)
            return (char *)payload;
    }
    free(payload);
    return NULL;
}
