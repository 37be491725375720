/* remote: credentials where docker keeps them (config.json, credential helpers). */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONFIG_MAX (1u << 20)
#define HELPER_OUT_MAX (1u << 16)

void rm_cred_clear(rm_cred *c)
{
    if (c->secret)
        rm_wipe(c->secret, strlen(c->secret));
    free(c->user);
    free(c->secret);
    c->user = c->secret = NULL;
}

static char *config_dir(const remote_opts *o)
{
    const char *d = o && o->docker_dir ? o->docker_dir : getenv("DOCKER_CONFIG");
    if (d && *d)
        return strdup(d);
    const char *home = getenv("HOME");
    char *p = NULL;
    if (!home || asprintf(&p, "%s/.docker", home) < 0)
        return NULL;
    return p;
}

/* the config as JSON; an empty object if there is none */
static int load_config(const char *dir, json_t **out)
{
    char *path = NULL;
    if (asprintf(&path, "%s/config.json", dir) < 0)
        return -ENOMEM;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat s;
    int rc = 0;
    if (fd < 0 && errno == ENOENT)
        *out = json_object();
    else if (fd < 0 || fstat(fd, &s))
        rc = rm_fail(errno, "%s: %s", path, strerror(errno));
    else if ((uint64_t)s.st_size > CONFIG_MAX)
        rc = rm_fail(EFBIG, "%s: larger than %u bytes", path, CONFIG_MAX);
    else {
        json_error_t e;
        *out = json_loadfd(fd, 0, &e);
        if (!*out || !json_is_object(*out)) {
            json_decref(*out);
            rc = rm_fail(EINVAL, "%s: not a JSON object (line %d: %s)", path, e.line, e.text);
        }
    }
    if (!rc && !*out)
        rc = -ENOMEM;
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static int helper_name_valid(const char *n)
{
    if (!n || !*n || strlen(n) > 64)
        return 0;
    for (; *n; n++)
        if (!isalnum((unsigned char)*n) && !strchr("._-", *n))
            return 0;
    return 1;
}

/* the helper for host: credHelpers[host], else credsStore, else NULL */
static const char *helper_for(json_t *cfg, const char *host)
{
    const char *h = json_string_value(json_object_get(json_object_get(cfg, "credHelpers"), host));
    if (!h)
        h = json_string_value(json_object_get(cfg, "credsStore"));
    return h && *h ? h : NULL;
}

/* Run docker-credential-<name> <verb> with input on stdin (never in argv);
 * its stdout (bounded) in out. Returns its exit status, or negative. */
static int run_helper(const char *name, const char *verb, const char *input, sbuf *out)
{
    if (!helper_name_valid(name))
        return rm_fail(EINVAL, "credential helper name '%s' is not valid", name);
    char prog[96];
    snprintf(prog, sizeof prog, "docker-credential-%s", name);
    int in[2], outp[2];
    int rc = os_pipe_cloexec(in);
    if (rc)
        return rm_fail(-rc, "pipe: %s", strerror(-rc));
    if ((rc = os_pipe_cloexec(outp))) {
        close(in[0]), close(in[1]);
        return rm_fail(-rc, "pipe: %s", strerror(-rc));
    }
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(in[0], 0);
        dup2(outp[1], 1);
        if (devnull >= 0)
            dup2(devnull, 2);
        execlp(prog, prog, verb, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    if (pid < 0) {
        close(in[1]), close(outp[0]);
        return rm_fail(errno, "fork: %s", strerror(errno));
    }
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    size_t len = strlen(input), done = 0;
    while (done < len) {
        ssize_t w = write(in[1], input + done, len - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    close(in[1]);
    char buf[4096];
    ssize_t got;
    while ((got = read(outp[0], buf, sizeof buf)) > 0)
        if (out->len + (size_t)got <= HELPER_OUT_MAX)
            sbuf_add(out, buf, (size_t)got);
    close(outp[0]);
    signal(SIGPIPE, old);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (out->oom)
        return -ENOMEM;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return rm_fail(ENOENT, "credential helper %s is not installed", prog);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int helper_get(const char *name, const char *host, rm_cred *out)
{
    sbuf o = {0};
    char *input = NULL;
    if (asprintf(&input, "%s\n", host) < 0)
        return -ENOMEM;
    int rc = run_helper(name, "get", input, &o);
    free(input);
    if (rc > 0) /* "credentials not found" */
        rc = -ENOENT;
    json_t *j = rc ? NULL : json_loadb(o.data ? o.data : "", o.len, 0, NULL);
    const char *u = json_string_value(json_object_get(j, "Username"));
    const char *s = json_string_value(json_object_get(j, "Secret"));
    if (!rc && (!u || !s))
        rc = rm_fail(EPROTO, "docker-credential-%s: its answer for %s is not understood", name, host);
    if (!rc && (!(out->user = strdup(u)) || !(out->secret = strdup(s))))
        rc = -ENOMEM;
    if (o.data)
        rm_wipe(o.data, o.len);
    free(o.data);
    json_decref(j);
    return rc;
}

/* the auths key that names host: "host", "https://host", "http://host/..." */
static int key_names_host(const char *key, const char *host)
{
    if (!strncmp(key, "https://", 8))
        key += 8;
    else if (!strncmp(key, "http://", 7))
        key += 7;
    size_t n = strlen(host);
    return !strncmp(key, host, n) && (key[n] == 0 || key[n] == '/');
}

static int auths_get(json_t *cfg, const char *host, rm_cred *out)
{
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(cfg, "auths"), key, v) {
        if (!key_names_host(key, host))
            continue;
        const char *auth = json_string_value(json_object_get(v, "auth"));
        if (!auth || !*auth)
            continue;
        size_t n;
        char *plain = rm_b64_decode(auth, &n);
        char *colon = plain ? strchr(plain, ':') : NULL;
        int rc = 0;
        if (!colon)
            rc = rm_fail(EINVAL, "docker config: the auth entry for %s is not base64 user:password", host);
        else {
            *colon = 0;
            if (!(out->user = strdup(plain)) || !(out->secret = strdup(colon + 1)))
                rc = -ENOMEM;
        }
        if (plain)
            rm_wipe(plain, n);
        free(plain);
        return rc;
    }
    return -ENOENT;
}

int rm_cred_lookup(const char *host, const remote_opts *o, rm_cred *out)
{
    char *dir = config_dir(o);
    json_t *cfg = NULL;
    int rc = dir ? load_config(dir, &cfg) : -ENOMEM;
    const char *helper = rc ? NULL : helper_for(cfg, host);
    if (helper)
        rc = helper_get(helper, host, out);
    if (!rc && !helper)
        rc = -ENOENT;
    if (rc == -ENOENT && cfg) /* docker, too, falls back to the file */
        rc = auths_get(cfg, host, out);
    if (rc)
        rm_cred_clear(out);
    json_decref(cfg);
    free(dir);
    return rc;
}

/* ---- login, logout ---- */

static int write_config(const char *dir, json_t *cfg)
{
    if (mkdir(dir, 0700) && errno != EEXIST)
        return rm_fail(errno, "%s: %s", dir, strerror(errno));
    char *path = NULL, *text = json_dumps(cfg, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    size_t len = text ? strlen(text) : 0;
    if (!text || asprintf(&path, "%s/config.json", dir) < 0) {
        free(text);
        return rm_oom();
    }
    /* 0600: it holds passwords */
    atomic_file f;
    int rc = atomic_file_open(&f, path, 0600, 0);
    if (!rc && ((rc = atomic_file_write(&f, text, len)) || (rc = atomic_file_write(&f, "\n", 1))))
        atomic_file_abort(&f);
    else if (!rc)
        rc = atomic_file_commit(&f);
    rm_wipe(text, len);
    free(text);
    free(path);
    return rc;
}

static int verify_login(const char *host, const char *user, const char *password,
                        const remote_opts *o)
{
    remote *r;
    remote_ref ref = {.host = (char *)host, .repo = "strata-login-check"};
    int rc = remote_open(&ref, o, 0, &r);
    if (rc)
        return rc;
    r->creds_tried = 1;
    r->cred.user = strdup(user);
    r->cred.secret = strdup(password);
    rm_req q = {.method = "GET", .url = "/v2/", .max_body = 1 << 16};
    rm_resp resp = {0};
    if (!r->cred.user || !r->cred.secret)
        rc = -ENOMEM;
    if (!rc)
        rc = rm_request(r, &q, &resp);
    if (rc == -EACCES)
        rc = rm_fail(EACCES, "login to %s: the registry refused user %s and that password", host, user);
    else if (!rc && resp.status != 200)
        rc = rm_http_fail(&resp, "login");
    rm_resp_free(&resp);
    remote_close(r);
    return rc;
}

int remote_login(const char *host, const char *user, const char *password, const remote_opts *o)
{
    if (!*user || strchr(user, ':'))
        return rm_fail(EINVAL, "login: the user name must be non-empty and have no ':'");
    int rc = verify_login(host, user, password, o);
    char *dir = rc ? NULL : config_dir(o);
    json_t *cfg = NULL;
    if (!rc && !dir)
        rc = -ENOMEM;
    if (!rc)
        rc = load_config(dir, &cfg);
    const char *helper = rc ? NULL : helper_for(cfg, host);
    if (helper) {
        json_t *in = json_pack("{s:s,s:s,s:s}", "ServerURL", host, "Username", user, "Secret", password);
        char *text = in ? json_dumps(in, JSON_COMPACT) : NULL;
        sbuf out = {0};
        rc = text ? run_helper(helper, "store", text, &out) : -ENOMEM;
        if (rc > 0)
            rc = rm_fail(EIO, "docker-credential-%s could not store the credentials for %s", helper, host);
        if (text)
            rm_wipe(text, strlen(text));
        free(text);
        free(out.data);
        json_decref(in);
    } else if (!rc) {
        char *plain = NULL, *b64 = NULL;
        if (asprintf(&plain, "%s:%s", user, password) < 0 || !(b64 = rm_b64_encode(plain, strlen(plain))))
            rc = -ENOMEM;
        json_t *auths = json_object_get(cfg, "auths");
        if (!rc && !json_is_object(auths)) {
            auths = json_object();
            json_object_set_new(cfg, "auths", auths);
        }
        if (!rc && json_object_set_new(auths, host, json_pack("{s:s}", "auth", b64)))
            rc = -ENOMEM;
        if (!rc)
            rc = write_config(dir, cfg);
        if (plain)
            rm_wipe(plain, strlen(plain));
        if (b64)
            rm_wipe(b64, strlen(b64));
        free(plain);
        free(b64);
    }
    json_decref(cfg);
    free(dir);
    return rc;
}

int remote_logout(const char *host, const remote_opts *o)
{
    char *dir = config_dir(o);
    json_t *cfg = NULL;
    int rc = dir ? load_config(dir, &cfg) : -ENOMEM;
    const char *helper = rc ? NULL : helper_for(cfg, host);
    int found = 0;
    if (helper) {
        sbuf out = {0};
        char *input = NULL;
        rc = asprintf(&input, "%s\n", host) < 0 ? -ENOMEM : run_helper(helper, "erase", input, &out);
        found = rc == 0;
        rc = rc > 0 ? 0 : rc;
        free(input);
        free(out.data);
    }
    json_t *auths = rc ? NULL : json_object_get(cfg, "auths");
    const char *key;
    json_t *v;
    void *tmp;
    int dropped = 0;
    json_object_foreach_safe(auths, tmp, key, v) if (key_names_host(key, host))
    {
        json_object_del(auths, key);
        dropped = 1;
    }
    if (!rc && dropped)
        rc = write_config(dir, cfg);
    if (!rc && !found && !dropped)
        rc = rm_fail(ENOENT, "logout: no credentials for %s", host);
    json_decref(cfg);
    free(dir);
    return rc;
}
