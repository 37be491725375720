/* remote's own shared parts; nothing outside remote/ includes this. */
#ifndef STRATA_REMOTE_INTERNAL_H
#define STRATA_REMOTE_INTERNAL_H

#include "../base/error.h"
#include "../base/file.h"
#include "../base/hex.h"
#include "../base/sbuf.h"
#include "remote.h"

/* curl's type-checking macros would stand in the way of the names below */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>

/* libcurl is loaded the first time remote/ needs it (rm_curl_load), not
 * when strata starts: it and the ~35 libraries it brings cost every run
 * of strata, `suspend` and `run --resume` too, 40-60 ms of start-up on a
 * machine whose memory has gone cold (bench/RESULTS.md). The functions
 * remote/ calls are pointers, named as curl names them. */
#define RM_CURL_FUNCS(X)                                                                          \
    X(curl_global_init) X(curl_easy_init) X(curl_easy_setopt) X(curl_easy_perform)                \
    X(curl_easy_getinfo) X(curl_easy_cleanup) X(curl_easy_reset) X(curl_easy_strerror)            \
    X(curl_easy_escape) X(curl_free) X(curl_slist_append) X(curl_slist_free_all)
#define RM_CURL_POINTER(f) extern __typeof__(f) *rm_lazy_##f;
RM_CURL_FUNCS(RM_CURL_POINTER)
#undef RM_CURL_POINTER
#define curl_global_init (*rm_lazy_curl_global_init)
#define curl_easy_init (*rm_lazy_curl_easy_init)
#undef curl_easy_setopt  /* curl.h's three-argument checks */
#undef curl_easy_getinfo
#define curl_easy_setopt (*rm_lazy_curl_easy_setopt)
#define curl_easy_perform (*rm_lazy_curl_easy_perform)
#define curl_easy_getinfo (*rm_lazy_curl_easy_getinfo)
#define curl_easy_cleanup (*rm_lazy_curl_easy_cleanup)
#define curl_easy_reset (*rm_lazy_curl_easy_reset)
#define curl_easy_strerror (*rm_lazy_curl_easy_strerror)
#define curl_easy_escape (*rm_lazy_curl_easy_escape)
#define curl_free (*rm_lazy_curl_free)
#define curl_slist_append (*rm_lazy_curl_slist_append)
#define curl_slist_free_all (*rm_lazy_curl_slist_free_all)
/* Load libcurl and curl_global_init it, once: 0, or an error naming it. */
int rm_curl_load(void);

/* errors (base/error.h), raised by remote/: set the thread's error and
 * return -err */
#define rm_fail(err, ...) err_set(ERR_REMOTE, (err), __VA_ARGS__)
#define rm_oom() err_oom(ERR_REMOTE)


/* zero memory that held a secret (explicit_bzero is not everywhere) */
void rm_wipe(void *p, size_t n);
int rm_digest_valid(const char *d);                         /* sha256:<64 lowercase hex> */
int rm_host_loopback(const char *host);

/* ---- Docker Hub's names (ref.c) ---- */
#define RM_HUB_API "registry-1.docker.io"             /* where its API answers */
#define RM_HUB_CRED_KEY "https://index.docker.io/v1/" /* where docker keeps its credentials */
/* 1 for docker.io, index.docker.io and registry-1.docker.io */
int rm_host_is_hub(const char *host);
/* The registries whose quirks strata knows by their host (docs/remote.md,
 * "The registries teams use"); every other host is RM_REGISTRY_OTHER and
 * is judged by its answers alone. */
typedef enum {
    RM_REGISTRY_OTHER,
    RM_REGISTRY_HUB,        /* Docker Hub */
    RM_REGISTRY_ECR,        /* ACCOUNT.dkr.ecr.REGION.amazonaws.com */
    RM_REGISTRY_ECR_PUBLIC, /* public.ecr.aws */
    RM_REGISTRY_GAR,        /* Artifact Registry: LOCATION-docker.pkg.dev */
    RM_REGISTRY_GCR,        /* Container Registry: gcr.io, *.gcr.io */
} rm_registry;
rm_registry rm_registry_of(const char *host);
/* the host to send requests to for host as typed (RM_HUB_API for the hub) */
const char *rm_api_host(const char *host);
/* the server name docker keys host's credentials under (config.json's
 * auths, credHelpers, what a helper is asked): RM_HUB_CRED_KEY for the hub */
const char *rm_cred_server(const char *host);


/* ---- credentials (creds.c) ---- */
/* what a credential's secret is (docker's config.json holds all three) */
enum {
    RM_CRED_PASSWORD,       /* user and password: Basic, or the token server's GET */
    RM_CRED_IDENTITY_TOKEN, /* an OAuth2 refresh token ("identitytoken", a helper's
                               Username "<token>"): exchanged at the realm by POST */
    RM_CRED_REGISTRY_TOKEN, /* "registrytoken": sent to the registry as Bearer, as is */
};
typedef struct {
    char *user; /* "<token>" for an identity token, "" for a registry token */
    char *secret;
    int kind; /* RM_CRED_* */
} rm_cred;
/* host's credentials (a host as typed: Docker Hub's are looked up under
 * RM_HUB_CRED_KEY). 0 and filled, -ENOENT if none is configured, other
 * negative on error */
int rm_cred_lookup(const char *host, const remote_opts *o, rm_cred *out);
void rm_cred_clear(rm_cred *c); /* wipes and frees */
/* docker's configuration directory (o->docker_dir, $DOCKER_CONFIG, ~/.docker),
 * malloc'd; its config.json parsed (an empty object if there is none) */
char *rm_config_dir(const remote_opts *o);
int rm_config_load(const char *dir, json_t **out);
/* the credential helper config.json names for host (credHelpers, then
 * credsStore), or NULL; running it: 0, > 0 if it failed, or -errno */
const char *rm_helper_for(json_t *cfg, const char *host);
int rm_helper_run(const char *name, const char *verb, const char *input, sbuf *out);
/* 1 if an "auths" key (a host, or a URL as docker writes it) names host */
int rm_key_names_host(const char *key, const char *host);

/* ---- HTTP (http.c) ---- */
struct remote {
    char *host, *repo, *base; /* base: "https://host/v2/<repo>" */
    char *scheme_host;        /* "https://host" */
    int push;
    remote_opts opts;
    char *docker_dir;
    char *authz;     /* "Authorization: ..." header line, or NULL */
    int creds_tried; /* looked up once */
    rm_cred cred;
    CURL *curl;
    /* auth.c's own state. rm_dup copies none of it (a worker's copy reads
     * the credentials itself on its first 401, with their kind) */
    int cred_read;        /* cred was read by auth.c for this connection */
    int cred_given;       /* cred was handed in (login checks it): never read again */
    double token_expires; /* monotonic seconds when the token in authz goes stale; 0: unknown */
    char challenge[2048]; /* the Bearer challenge that token answered, to renew it; "" if none */
};

typedef struct {
    const char *method; /* GET HEAD PUT POST PATCH DELETE */
    const char *url;    /* absolute, or a path below the host ("/v2/...") */
    const char *accept;
    const char *content_type;
    const void *body; /* sent as is (may be NULL with body_len 0) */
    size_t body_len;
    const remote_source *src; /* or a streamed body of src_len bytes */
    uint64_t src_len;
    const char *range;   /* "bytes=a-b", or NULL */
    const char *content_range; /* an upload chunk's "start-end" (inclusive), or NULL */
    int no_resend;       /* libcurl must not send the body again on its own (a chunk the
                          * registry may have kept part of: resume from its count) */
    size_t max_body;     /* response bodies longer than this fail */
    remote_sink sink;    /* or the response body goes here instead of resp.body */
    void *sink_ctx;
    int no_auth;         /* a request to a token server: the caller sets authz */
    const char *authz;   /* with no_auth: an Authorization header line to send */
} rm_req;

typedef struct {
    long status;
    sbuf body;
    char *location, *digest, *www_auth, *content_range, *content_type, *link;
    char *range;         /* an upload session's "0-<last byte received>" */
    uint64_t chunk_min;  /* OCI-Chunk-Min-Length, 0 if absent */
    long retry_after;
    int64_t content_length; /* -1 if absent */
    char *host;    /* who gave this answer (HOST[:PORT]), for messages */
    int redirects; /* redirects followed to get it (GET and HEAD follow them) */
} rm_resp;
void rm_resp_free(rm_resp *r);

/* One request with auth (auth.c: a stale token renewed first; a 401
 * answered once, with the credentials read again, by Basic or a new bearer
 * token, a streamed body rewound) and retries (connection errors, 5xx, 429)
 * unless the body is streamed. On success (any HTTP status) fills resp. */
int rm_request(remote *r, const rm_req *q, rm_resp *resp);
/* One request with retries (connection errors, 5xx, 429) but no auth: what
 * rm_request does before it answers a 401. GET and HEAD follow redirects
 * (http.c says how). */
int rm_perform(remote *r, const rm_req *q, rm_resp *resp);
/* a one-line error for an unexpected answer: "HOST: what: what happened" */
int rm_http_fail(const rm_resp *resp, const char *what);
/* What the registry said, on one line: "HTTP 404: NAME_UNKNOWN repository
 * name not known; {"name":"x"}" (its error JSON's first code, message and
 * detail, when the body is one), in out */
void rm_registry_says(const rm_resp *resp, char *out, size_t n);
/* backoff before try n (0-based), honouring Retry-After */
void rm_backoff(int n, long retry_after);
#define RM_TRIES 5

/* GET blob digest (len 0: whole; else bytes [offset, offset+len) by Range)
 * and hand every body byte to fn with the answer's status: 206 for the
 * range, 200 for the whole blob (a registry that ignores Range). Nothing is
 * checked or retried here; *status is the final status (0 if none). A
 * status other than 200 or 206 is an error naming the blob. */
typedef int (*rm_body_fn)(void *ctx, long status, const void *data, size_t n);
int rm_blob_stream(remote *r, const char *digest, uint64_t offset, uint64_t len, rm_body_fn fn,
                   void *ctx, long *status);

/* r's repository URL ("https://host/v2/<repo>") followed by fmt with arg
 * ("/blobs/%s"), malloc'd */
char *rm_url(const remote *r, const char *fmt, const char *arg);

/* POST /blobs/uploads/QUERY (upload.c): the registry's answer in resp, for
 * the caller to judge (202 a session at its Location, 201 a mount) */
int rm_upload_post(remote *r, const char *query, rm_resp *resp);

/* a copy of r with its own connection, sharing nothing (for a worker) */
int rm_dup(const remote *r, remote **out);

/* ---- boot profiles with their layer (profile_registry.c) ---- */
/* push: the store's profile of top uploaded and named in ann; a profile
 * the store has but can't be read is left out with a note */
int rm_profile_push(remote *r, store *st, const store_id *top, json_t *ann, remote_push_result *res,
                    void (*note)(void *, const char *), void *note_ctx);
/* pull: the profile the manifest names kept beside layer; never fails,
 * what goes wrong is a note (po->note) */
void rm_profile_pull(remote *r, store *st, const char *manifest, size_t len, const store_id *layer,
                     const remote_pull_opts *po, remote_pull_result *res);

#endif
