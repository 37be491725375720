/* remote: what a push asks the registry before its first blob (docs/remote.md,
 * "Before the first blob"), and the small local cache files a push keeps. */
#ifndef STRATA_REMOTE_PREFLIGHT_H
#define STRATA_REMOTE_PREFLIGHT_H

#include "internal.h"

/* the most descriptors ECR takes in a manifest (measured by others:
 * spin#1787, nuon#2348); the smallest limit of a major registry */
#define RM_ECR_DESCRIPTORS_MAX 500

/* What the manifest of a push will list: for each layer of the chain, root
 * first, its manifest, info and index, then npacks[i] packs. */
typedef struct {
    size_t nlayers;
    const size_t *npacks;
    const char *top; /* the top layer's id, to name in advice */
} rm_listing;

/* The number of descriptors the OCI manifest will hold (config not counted). */
size_t rm_listing_descriptors(const rm_listing *l);

/* Before any blob is sent: (1) an upload session is opened and cancelled, so
 * a repository that does not exist or may not be pushed to is one line
 * saying so and what to do; (2) unless this host and repository accepted as
 * many descriptors before (remembered in the cache's "accepted" file), a
 * probe manifest with the same media types in the same order and as many
 * descriptors, every one naming the 2-byte empty blob `{}`, is PUT by
 * digest and deleted, so a registry that refuses strata's media types
 * (GitLab) or that many descriptors (ECR, 500) says so now, in one line
 * with what to do. Other refusals of the probe are left to the real
 * manifest PUT (nothing is remembered). 0, or the error. */
int rm_preflight(remote *r, const rm_listing *l);

/* $XDG_CACHE_HOME/strata/WHAT, else ~/.cache/strata/WHAT; malloc'd or NULL */
char *rm_cache_path(const char *what);
/* The first RM_CACHE_READ_MAX bytes of cache file WHAT, NUL-terminated,
 * malloc'd; NULL if it is missing or empty (a cache: nothing is an error) */
#define RM_CACHE_READ_MAX 65536
char *rm_cache_read(const char *what);
/* Best effort: cache file WHAT's lines ("KEY ..."), oldest first, get line
 * at the end in place of any line for key (key alone, or key and a space),
 * and keep at most keep lines in all. */
void rm_cache_record(const char *what, const char *key, const char *line, size_t keep);
/* Best effort (a cache): path's directories (0700), then data as its
 * contents, atomically; a failure leaves no error behind. */
void rm_cache_write(const char *path, const void *data, size_t len);

#endif
