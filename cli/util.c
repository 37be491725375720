/* Shared by cli/'s files: output, argument parsing, opening the store. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------- output helpers ---------- */

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("strata: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_failed(int rc)
{
    return cli_fail("%s", err_message_for(rc));
}

/* ---------- JSON ---------- */

/* jansson's integers are signed: a number above INT64_MAX (an ECID) is held
 * as a string of this mark and its digits, and printed bare. cli_json_text
 * never makes a string that starts with the mark. */
#define BIG_MARK "\x01strata-u64:"
#define BIG_MARK_DUMPED "\"\\u0001strata-u64:" /* as json_dumps writes it */

/* the length of the valid UTF-8 sequence at p, or 0 */
static size_t utf8_len(const unsigned char *p)
{
    size_t n = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
             : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

json_t *cli_json_text(const char *s)
{
    s = s ? s : "";
    int marked = !strncmp(s, BIG_MARK, sizeof BIG_MARK - 1);
    json_t *v = marked ? NULL : json_string(s);
    if (v)
        return v;
    /* not UTF-8 (or the mark): each byte that starts no sequence becomes U+FFFD */
    size_t len = strlen(s), k = 0;
    char *fixed = malloc(len * 3 + 1);
    for (size_t i = 0; fixed && i < len;) {
        size_t n = marked && !i ? 0 : utf8_len((const unsigned char *)s + i);
        if (n && (v = json_stringn(s + i, n))) {
            json_decref(v);
            memcpy(fixed + k, s + i, n), k += n, i += n;
        } else {
            memcpy(fixed + k, "\xef\xbf\xbd", 3), k += 3, i++;
        }
    }
    v = fixed ? json_stringn(fixed, k) : NULL;
    free(fixed);
    return v;
}

json_t *cli_json_u64(uint64_t v)
{
    if (v <= INT64_MAX)
        return json_integer((json_int_t)v);
    char text[48];
    snprintf(text, sizeof text, BIG_MARK "%" PRIu64, v);
    return json_string(text);
}

json_t *cli_json_seconds(double secs)
{
    return json_real((double)(int64_t)(secs * 1000 + 0.5) / 1000);
}

int cli_json_print(json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))
                   : NULL;
    json_decref(v);
    if (!text)
        return cli_failed(-ENOMEM);
    for (char *at = text; (at = strstr(at, BIG_MARK_DUMPED));) {
        char *digits = at + sizeof BIG_MARK_DUMPED - 1;
        size_t n = strspn(digits, "0123456789");
        memmove(at, digits, n);
        memmove(at + n, digits + n + 1, strlen(digits + n + 1) + 1); /* and the closing quote */
        at += n;
    }
    puts(text);
    free(text);
    return 0;
}

json_t *cli_json_layer_head(const store_layer *l)
{
    char d[32];
    return json_pack("{s:s, s:s?, s:s, s:o, s:o}", "id", l->id.hex, "parent",
                     l->has_parent ? l->parent.hex : NULL, "created",
                     cli_date_of(l->created, d, sizeof d), "message", cli_json_text(l->message),
                     "bytes_added", cli_json_u64(l->bytes_added));
}

const char *cli_human(uint64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4)
        v /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

const char *cli_date_of(int64_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}


void cli_progress(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    cli_progress_state *p = ctx;
    if (!p->tty || !total)
        return;
    time_t now = time(NULL);
    if (now == p->last && done < total && !strcmp(p->what, what))
        return;
    p->last = now;
    snprintf(p->what, sizeof p->what, "%s", what);
    char a[32], b[32];
    fprintf(stderr, "\r\033[K%s: %s of %s (%d%%)", what, cli_human(done, a, sizeof a),
            cli_human(total, b, sizeof b), (int)(done * 100 / total));
    if (done >= total)
        fputc('\n', stderr);
}

void cli_note(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "strata: %s\n", line);
}

/* ---------- argument parsing ---------- */


/* Split argv into options (any position) and positionals. */
int cli_parse(int argc, char **argv, const cli_opt *opts, size_t nopts, char **pos, int maxpos,
                 int *npos, const char *verb_name)
{
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1]) {
            if (!strcmp(a, "--")) {
                for (i++; i < argc; i++) {
                    if (*npos == maxpos)
                        return cli_fail("%s: unexpected argument '%s' (see 'strata help %s')",
                                    verb_name, argv[i], verb_name);
                    pos[(*npos)++] = argv[i];
                }
                break;
            }
            size_t k;
            const char *eq = strchr(a, '='); /* "--prune=now" as well as "--prune now" */
            for (k = 0; k < nopts; k++)
                if (!strcmp(a, opts[k].name) ||
                    (eq && opts[k].takes_value && strlen(opts[k].name) == (size_t)(eq - a) &&
                     !strncmp(a, opts[k].name, (size_t)(eq - a))))
                    break;
            if (k == nopts)
                return cli_fail("%s: unknown option '%s' (see 'strata help %s')", verb_name, a,
                            verb_name);
            if (opts[k].takes_value && eq && strcmp(a, opts[k].name)) {
                *opts[k].value = eq + 1;
            } else if (opts[k].takes_value) {
                if (i + 1 >= argc)
                    return cli_fail("%s: %s needs a value", verb_name, a);
                *opts[k].value = argv[++i];
            } else {
                *opts[k].flag = 1;
            }
        } else {
            if (*npos == maxpos)
                return cli_fail("%s: unexpected argument '%s' (see 'strata help %s')", verb_name, a,
                            verb_name);
            pos[(*npos)++] = argv[i];
        }
    }
    return 0;
}

/* the common case: a verb whose only option is --json */
int cli_parse_json_only(int argc, char **argv, char **pos, int maxpos, int *npos, int *json,
                           const char *verb_name)
{
    cli_opt opts[] = {{"--json", 0, NULL, json}};
    return cli_parse(argc, argv, opts, 1, pos, maxpos, npos, verb_name);
}

/* the verb main() is running, for cli_need's usage line */
static const cli_verb *running;

void cli_running(const cli_verb *v)
{
    running = v;
}

int cli_need(int npos, int min, const char *verb_name)
{
    if (npos >= min)
        return 0;
    int known = running && !strcmp(running->name, verb_name);
    return cli_fail("usage: strata %s", known ? running->usage : verb_name);
}

int cli_open_store(store **st)
{
    int rc = store_open(NULL, st);
    return rc ? cli_failed(rc) : 0;
}

int cli_resolve(store *st, const char *ref, store_id *id)
{
    boot_ref r;
    int rc = boot_resolve(st, ref, &r);
    if (rc)
        return cli_failed(rc);
    *id = r.id;
    return 0;
}

int cli_parse_uint(const char *flag, const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || v == 0 || v > max)
        return cli_fail("%s %s: a whole number from 1 to %lu", flag, s, max);
    *out = v;
    return 0;
}

/* "4096" (MiB), "512M", "4G" */
int cli_parse_memory(const char *s, uint64_t *mib)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'G' || *end == 'g')
        v *= 1024, end++;
    else if (*end == 'M' || *end == 'm')
        end++;
    if (errno || *end || !*s || v < 64 || v > (1ull << 20))
        return cli_fail("--memory %s: give MiB from 64 to 1048576, or GiB with a G suffix (4G)", s);
    *mib = v;
    return 0;
}
