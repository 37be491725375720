/* remote: credentials where docker keeps them (config.json, credential helpers). */
#define _GNU_SOURCE
#include "internal.h"
#include "../base/platform.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONFIG_MAX (1u << 20)
#define HELPER_OUT_MAX (1u << 16)

static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;

void rm_cred_clear(rm_cred *c)
{
    if (c->secret)
        rm_wipe(c->secret, strlen(c->secret));
    free(c->user);
    free(c->secret);
    c->user = c->secret = NULL;
}

char *rm_config_dir(const remote_opts *o)
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
int rm_config_load(const char *dir, json_t **out)
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

/* the helper for host: credHelpers under docker's server name for it
 * (Docker Hub's URL), or the host as typed, else credsStore, else NULL */
const char *rm_helper_for(json_t *cfg, const char *host)
{
    json_t *helpers = json_object_get(cfg, "credHelpers");
    const char *h = json_string_value(json_object_get(helpers, rm_cred_server(host)));
    if (!h)
        h = json_string_value(json_object_get(helpers, host));
    if (!h)
        h = json_string_value(json_object_get(cfg, "credsStore"));
    return h && *h ? h : NULL;
}

/* Run docker-credential-<name> <verb> with input on stdin (never in argv);
 * its stdout (bounded) in out. Returns its exit status, or negative. */
int rm_helper_run(const char *name, const char *verb, const char *input, sbuf *out)
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
    /* workers may ask at the same time (each after its own 401), and the
     * SIGPIPE disposition is the process's: one helper at a time */
    pthread_mutex_lock(&helper_lock);
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
    pthread_mutex_unlock(&helper_lock);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (out->oom)
        return -ENOMEM;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return rm_fail(ENOENT, "credential helper %s is not installed", prog);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A helper's answer {"Username","Secret"}: a Username of "<token>" means the
 * Secret is an identity token (docker's convention; ACR's and GAR's helpers
 * answer so). */
static int helper_get(const char *name, const char *server, rm_cred *out)
{
    sbuf o = {0};
    char *input = NULL;
    if (asprintf(&input, "%s\n", server) < 0)
        return -ENOMEM;
    int rc = rm_helper_run(name, "get", input, &o);
    free(input);
    if (rc > 0) /* "credentials not found" */
        rc = -ENOENT;
    json_t *j = rc ? NULL : json_loadb(o.data ? o.data : "", o.len, 0, NULL);
    const char *u = json_string_value(json_object_get(j, "Username"));
    const char *s = json_string_value(json_object_get(j, "Secret"));
    if (!rc && (!u || !s))
        rc = rm_fail(EPROTO, "docker-credential-%s: its answer for %s is not understood", name, server);
    if (!rc && (!(out->user = strdup(u)) || !(out->secret = strdup(s))))
        rc = -ENOMEM;
    if (!rc)
        out->kind = !strcmp(u, "<token>") ? RM_CRED_IDENTITY_TOKEN : RM_CRED_PASSWORD;
    if (o.data)
        rm_wipe(o.data, o.len);
    free(o.data);
    json_decref(j);
    return rc;
}

/* the auths key that names host: "host", "https://host", "http://host/..." */
int rm_key_names_host(const char *key, const char *host)
{
    if (!strncmp(key, "https://", 8))
        key += 8;
    else if (!strncmp(key, "http://", 7))
        key += 7;
    size_t n = strlen(host);
    return !strncmp(key, host, n) && (key[n] == 0 || key[n] == '/');
}

/* user:password from an entry's "auth" (base64), or -ENOENT */
static int auth_field(json_t *entry, const char *server, rm_cred *out)
{
    const char *auth = json_string_value(json_object_get(entry, "auth"));
    if (!auth || !*auth)
        return -ENOENT;
    size_t n;
    char *plain = (char *)base64_decode(auth, &n);
    char *colon = plain ? strchr(plain, ':') : NULL;
    int rc = 0;
    if (!colon)
        rc = rm_fail(EINVAL, "docker config: the auth entry for %s is not base64 user:password", server);
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

/* One auths entry, in docker's order: a registrytoken is sent as is, an
 * identitytoken is a refresh token (its "auth" then holds only a user
 * name), else "auth" is user:password. */
static int auths_entry(json_t *entry, const char *server, rm_cred *out)
{
    const char *rt = json_string_value(json_object_get(entry, "registrytoken"));
    const char *it = json_string_value(json_object_get(entry, "identitytoken"));
    const char *token = rt && *rt ? rt : it && *it ? it : NULL;
    if (!token)
        return auth_field(entry, server, out);
    out->kind = token == rt ? RM_CRED_REGISTRY_TOKEN : RM_CRED_IDENTITY_TOKEN;
    if (!(out->user = strdup(token == rt ? "" : "<token>")) || !(out->secret = strdup(token)))
        return -ENOMEM;
    return 0;
}

static int auths_get(json_t *cfg, const char *server, rm_cred *out)
{
    /* "https://index.docker.io/v1/" names the host index.docker.io */
    const char *host = server;
    if (!strncmp(host, "https://", 8))
        host += 8;
    size_t hl = strcspn(host, "/");
    char *bare = strndup(host, hl);
    if (!bare)
        return -ENOMEM;
    const char *key;
    json_t *v;
    int rc = -ENOENT;
    json_object_foreach(json_object_get(cfg, "auths"), key, v) {
        if (!rm_key_names_host(key, bare) || !json_is_object(v))
            continue;
        if ((rc = auths_entry(v, server, out)) != -ENOENT)
            break;
    }
    free(bare);
    return rc;
}

int rm_cred_lookup(const char *host, const remote_opts *o, rm_cred *out)
{
    const char *server = rm_cred_server(host);
    char *dir = rm_config_dir(o);
    json_t *cfg = NULL;
    memset(out, 0, sizeof *out);
    int rc = dir ? rm_config_load(dir, &cfg) : -ENOMEM;
    const char *helper = rc ? NULL : rm_helper_for(cfg, host);
    if (helper)
        rc = helper_get(helper, server, out);
    if (!rc && !helper)
        rc = -ENOENT;
    if (rc == -ENOENT && cfg) /* docker, too, falls back to the file */
        rc = auths_get(cfg, server, out);
    if (rc)
        rm_cred_clear(out);
    json_decref(cfg);
    free(dir);
    return rc;
}
