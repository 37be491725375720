/*
 * remote: a plain download of one large file (a macOS restore image) into a
 * cache, resumable: see remote_download in remote.h.
 *
 * The bytes go to a dot-named ".NAME.part" beside the target. Each attempt
 * asks for the rest with "Range: bytes=N-"; a 206 must start at N, a 200
 * (a server that ignores Range) starts the file over, a 416 means the part
 * may already be whole. The size the server announces (Content-Length of
 * a 200, the total of a 206's Content-Range) is what the file must come
 * to; only then is it fsynced and renamed into place.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define ATTEMPTS 4          /* one call resumes an interrupted transfer this often */
#define STALL_SECONDS 60L   /* a transfer slower than 1 byte/s this long is interrupted */

/* one attempt's response, as its headers and body arrive */
typedef struct {
    int fd;
    uint64_t offset;  /* bytes in the part file before this attempt */
    uint64_t got;     /* body bytes written by this attempt */
    long status;      /* of the last response (redirects reset it) */
    int64_t length;   /* Content-Length, -1 if none */
    int64_t range_start, range_total; /* Content-Range, -1 if none or "*" */
    int refused;      /* the body was not what was asked for */
    char why[256];
    const char *what;
    remote_download_progress_fn progress;
    void *ctx;
} attempt;

static void parse_content_range(attempt *a, const char *v)
{
    /* "bytes 100-199/1000" or "bytes *\/1000" */
    unsigned long long start, end, total;
    if (sscanf(v, "bytes %llu-%llu/%llu", &start, &end, &total) == 3) {
        a->range_start = (int64_t)start;
        a->range_total = (int64_t)total;
    } else if (sscanf(v, "bytes */%llu", &total) == 1) {
        a->range_total = (int64_t)total;
    }
}

static size_t on_header(char *line, size_t size, size_t n, void *p)
{
    attempt *a = p;
    size_t len = size * n;
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
    buf[strcspn(buf, "\r\n")] = 0;
    if (!strncmp(buf, "HTTP/", 5)) { /* a new response: after a redirect, the next one */
        const char *sp = strchr(buf, ' ');
        a->status = sp ? atol(sp + 1) : 0;
        a->length = a->range_start = a->range_total = -1;
    } else if (!strncasecmp(buf, "Content-Length:", 15)) {
        a->length = strtoll(buf + 15, NULL, 10);
    } else if (!strncasecmp(buf, "Content-Range:", 14)) {
        parse_content_range(a, buf + 14 + strspn(buf + 14, " "));
    }
    return len;
}

/* the first bytes of a body: is it the part asked for? */
static int body_fits(attempt *a)
{
    if (a->status == 200 && a->offset > 0) {
        /* the whole file again: start the part over */
        if (ftruncate(a->fd, 0) < 0 || lseek(a->fd, 0, SEEK_SET) < 0)
            return 0;
        a->offset = 0;
        return 1;
    }
    if (a->status == 206)
        return a->range_start == (int64_t)a->offset;
    return a->status == 200;
}

static size_t on_body(char *data, size_t size, size_t n, void *p)
{
    attempt *a = p;
    size_t len = size * n;
    if (a->got == 0 && !body_fits(a)) {
        a->refused = 1;
        if (a->status == 206)
            snprintf(a->why, sizeof a->why, "the server sent bytes from %" PRId64 ", not %" PRIu64,
                     a->range_start, a->offset);
        return 0; /* stops the transfer; the status says why */
    }
    for (size_t done = 0; done < len;) {
        ssize_t w = write(a->fd, data + done, len - done);
        if (w < 0) {
            snprintf(a->why, sizeof a->why, "writing: %s", strerror(errno));
            a->refused = 1;
            return 0;
        }
        done += (size_t)w;
    }
    a->got += len;
    if (a->progress) {
        int64_t total = a->status == 206 ? a->range_total : a->length;
        a->progress(a->ctx, a->what, a->offset + a->got, total > 0 ? (uint64_t)total : 0);
    }
    return len;
}

/* https anywhere; plain http only to this machine */
static int url_allowed(const char *url)
{
    if (!strncmp(url, "https://", 8))
        return 1;
    if (strncmp(url, "http://", 7))
        return 0;
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)strcspn(url + 7, "/?#"), url + 7);
    return rm_host_loopback(host);
}

static CURLcode perform(const char *url, attempt *a, char *curl_msg)
{
    CURL *c = curl_easy_init();
    if (!c)
        return CURLE_OUT_OF_MEMORY;
    char range[64];
    snprintf(range, sizeof range, "%" PRIu64 "-", a->offset);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    if (a->offset)
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_SECONDS);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "strata");
    curl_msg[0] = 0;
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (!curl_msg[0])
        snprintf(curl_msg, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
    return rc;
}

/* what the file should come to, from this attempt's response; -1 unknown */
static int64_t announced_total(const attempt *a)
{
    if (a->status == 206)
        return a->range_total;
    if (a->status == 200)
        return a->length;
    if (a->status == 416)
        return a->range_total;
    return -1;
}

/* ".NAME.part" beside path */
static int part_name(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) + 1 : 0;
    if ((size_t)snprintf(out, len, "%.*s.%s.part", dirlen, path, path + dirlen) >= len)
        return rm_fail(ENAMETOOLONG, "%s: path too long", path);
    return 0;
}

/* One attempt: 1 if the file is whole and in place, 0 to try again (the
 * transfer broke off), negative to give up. */
static int try_once(const char *url, const char *path, const char *part, attempt *a, char *last)
{
    struct stat st;
    if (fstat(a->fd, &st) < 0)
        return rm_fail(errno, "%s: %s", part, strerror(errno));
    a->offset = (uint64_t)st.st_size;
    a->got = 0;
    a->status = 0;
    a->refused = 0;
    a->why[0] = 0;
    CURLcode cc = perform(url, a, last);
    int64_t total = announced_total(a);
    uint64_t have = a->offset + a->got;
    int rc = 0;
    if (a->status == 416 && total >= 0 && (uint64_t)total == a->offset)
        rc = 1; /* the part already held it all */
    else if (a->status >= 400 || (a->status && a->status < 200) || a->status == 204)
        rc = rm_fail(EIO, "%s: HTTP %ld", url, a->status);
    else if (a->refused && a->why[0])
        rc = rm_fail(EIO, "%s: %s", url, a->why);
    else if (cc != CURLE_OK)
        rc = 0; /* broke off: resume */
    else if (total < 0)
        rc = rm_fail(EIO, "%s: the server did not say how big it is, so the download can't be "
                          "checked", url);
    else if (have != (uint64_t)total)
        rc = rm_fail(EIO, "%s: %" PRIu64 " bytes arrived, but the server announced %" PRId64
                          "; the partial file is dropped", url, have, total);
    else
        rc = 1;
    if (rc == 1) {
        int published = file_publish(a->fd, part, path);
        rc = published ? published : 1;
    }
    if (rc < 0 && (a->status == 206 || a->status == 200) && cc == CURLE_OK)
        unlink(part); /* inconsistent with what the server says: no resuming from it */
    return rc;
}

int remote_download(const char *url, const char *path, remote_download_progress_fn progress, void *ctx)
{
    char part[PATH_MAX], last[CURL_ERROR_SIZE] = "";
    if (!url || !path)
        return rm_fail(EINVAL, "download: no URL or no file");
    if (!url_allowed(url))
        return rm_fail(EINVAL, "%s: only https (or http to this machine) is downloaded", url);
    if (access(path, F_OK) == 0)
        return 0; /* downloaded before: published only once whole */
    int rc = part_name(path, part, sizeof part);
    if (rc)
        return rc;
    if ((rc = rm_curl_load()))
        return rc;
    const char *base = strrchr(path, '/');
    char what[300];
    snprintf(what, sizeof what, "downloading %s", base ? base + 1 : path);
    attempt a = {.what = what, .progress = progress, .ctx = ctx};
    /* one download of a file at a time: the part is appended to */
    a.fd = open(part, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (a.fd < 0)
        return rm_fail(errno, "%s: %s", part, strerror(errno));
    if (flock(a.fd, LOCK_EX | LOCK_NB) < 0) {
        close(a.fd);
        return rm_fail(EBUSY, "%s: another strata is downloading it; wait for it", path);
    }
    if (access(path, F_OK) == 0) { /* that other one has just finished it */
        struct stat st;
        if (fstat(a.fd, &st) == 0 && st.st_size == 0)
            unlink(part); /* made by our open, after its rename */
        close(a.fd);
        return 0;
    }
    for (int i = 0; i < ATTEMPTS; i++) {
        if (i)
            usleep((useconds_t)(200000 * i)); /* a moment before resuming */
        rc = try_once(url, path, part, &a, last);
        if (rc) {
            close(a.fd);
            return rc < 0 ? rc : 0;
        }
    }
    close(a.fd);
    struct stat st;
    uint64_t have = stat(part, &st) == 0 ? (uint64_t)st.st_size : 0;
    return rm_fail(EIO, "%s: the download broke off at %" PRIu64 " bytes (%s); run the command "
                        "again to resume it", url, have, last);
}
