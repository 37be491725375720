/* remote: docker login and logout: credentials checked against the registry,
 * then kept where docker keeps them (a credential helper, or config.json). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    remote_ref ref = {.host = (char *)rm_api_host(host), .repo = "strata-login-check"};
    int rc = remote_open(&ref, o, 0, &r);
    if (rc)
        return rc;
    r->creds_tried = r->cred_given = 1;
    r->cred.kind = RM_CRED_PASSWORD;
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

/* the host part of the server name docker keeps host's credentials under
 * ("https://index.docker.io/v1/" for Docker Hub), as auths keys are matched */
static const char *auths_host(const char *host)
{
    return rm_host_is_hub(host) ? "index.docker.io" : host;
}

/* Credentials are kept under docker's name for the registry (Docker Hub's
 * "https://index.docker.io/v1/", whatever name it was given by), so that
 * docker and strata find each other's. */
int remote_login(const char *host, const char *user, const char *password, const remote_opts *o)
{
    const char *server = rm_cred_server(host);
    if (!*user || strchr(user, ':'))
        return rm_fail(EINVAL, "login: the user name must be non-empty and have no ':'");
    int rc = verify_login(host, user, password, o);
    char *dir = rc ? NULL : rm_config_dir(o);
    json_t *cfg = NULL;
    if (!rc && !dir)
        rc = -ENOMEM;
    if (!rc)
        rc = rm_config_load(dir, &cfg);
    const char *helper = rc ? NULL : rm_helper_for(cfg, host);
    if (helper) {
        json_t *in = json_pack("{s:s,s:s,s:s}", "ServerURL", server, "Username", user, "Secret", password);
        char *text = in ? json_dumps(in, JSON_COMPACT) : NULL;
        sbuf out = {0};
        rc = text ? rm_helper_run(helper, "store", text, &out) : -ENOMEM;
        if (rc > 0)
            rc = rm_fail(EIO, "docker-credential-%s could not store the credentials for %s", helper, server);
        if (text)
            rm_wipe(text, strlen(text));
        free(text);
        free(out.data);
        json_decref(in);
    } else if (!rc) {
        char *plain = NULL, *b64 = NULL;
        if (asprintf(&plain, "%s:%s", user, password) < 0 || !(b64 = base64_encode(plain, strlen(plain))))
            rc = -ENOMEM;
        json_t *auths = json_object_get(cfg, "auths");
        if (!rc && !json_is_object(auths)) {
            auths = json_object();
            json_object_set_new(cfg, "auths", auths);
        }
        if (!rc && json_object_set_new(auths, server, json_pack("{s:s}", "auth", b64)))
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
    char *dir = rm_config_dir(o);
    json_t *cfg = NULL;
    int rc = dir ? rm_config_load(dir, &cfg) : -ENOMEM;
    const char *helper = rc ? NULL : rm_helper_for(cfg, host);
    int found = 0;
    if (helper) {
        sbuf out = {0};
        char *input = NULL;
        rc = asprintf(&input, "%s\n", rm_cred_server(host)) < 0 ? -ENOMEM
                                                                 : rm_helper_run(helper, "erase", input, &out);
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
    json_object_foreach_safe(auths, tmp, key, v) if (rm_key_names_host(key, auths_host(host)))
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
