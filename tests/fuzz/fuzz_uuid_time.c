/*
 * fuzz_uuid_time.c: the small value parsers that read outside text:
 * sk_uuid_normalize (ids from an SIS, a file or Kafka keys), sk_time_parse_us
 * (meta.modified), and the configuration's sk_parse_duration_ms,
 * sk_parse_size, sk_parse_int, sk_parse_bool. The input is one C string
 * (cut at the first NUL, as the callers see it).
 *
 * Properties: a normalised UUID is lower case and normalises to itself;
 * a parsed time lies within years 0000-9999 (± a day of offset); sizes and
 * durations are never negative.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    char uuid[37], again[37];
    if (sk_uuid_normalize(text, uuid) == 0) {
        for (int i = 0; i < 36; i++)
            if (uuid[i] >= 'A' && uuid[i] <= 'Z')
                abort();
        if (sk_uuid_normalize(uuid, again) != 0 || strcmp(uuid, again) != 0)
            abort();
    }

    int64_t us;
    /* Years 0000-9999, offsets within a day: the result stays in that range. */
    if (sk_time_parse_us(text, &us) == 0 &&
        (us < (-62167219200LL - 86400) * 1000000 || us > (253402300800LL + 86400) * 1000000))
        abort();

    int64_t v;
    if (sk_parse_duration_ms(text, &v) == 0 && v < 0)
        abort();
    if (sk_parse_size(text, &v) == 0 && v < 0)
        abort();
    (void)sk_parse_int(text, &v);
    bool b;
    (void)sk_parse_bool(text, &b);

    free(text);
    return 0;
}
