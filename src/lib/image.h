/*
 * Images by name, shared by `kiln run`, `kiln image` and kilnd: where names
 * live, and an imported image's defaults (NAME.json beside NAME.img, written
 * by scripts/lib/image-import.py). docs/images.md, "Imported images".
 */
#ifndef KILN_LIB_IMAGE_H
#define KILN_LIB_IMAGE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define KILN_IMAGE_NAME_MAX 63

/* 1 to KILN_IMAGE_NAME_MAX of [a-z0-9_-]. */
bool kiln_image_name_ok(const char *s);

/* The image dir: $KILN_IMAGE_DIR, else images/ beside argv0's binary. */
void kiln_image_dir(const char *argv0, char *buf, size_t len);

/* kiln's cache for sub (e.g. "oci", "templates"): $KILN_CACHE/SUB, else
 * $XDG_CACHE_HOME/kiln/SUB, else $HOME/.cache/kiln/SUB. 0, or -1 when none
 * is set or the path does not fit. */
int kiln_cache_dir(const char *sub, char *buf, size_t len);

/* An imported image's defaults. Strings are owned by the struct; arrays
 * are NULL-terminated; anything absent is NULL. */
struct kiln_image_config {
	char **env; /* K=V */
	char **entrypoint;
	char **cmd;
	char *workdir; /* absolute */
	char *user;    /* as the image says (USER[:GROUP]); not checked here */
};

/* The config of the image file img_path (X.img → X.json): 0 and *c filled
 * (all NULL when there is no config file), or -1 with a one-line message
 * in why (not JSON, over 1 MiB, a bad field). */
int kiln_image_config_load(const char *img_path, struct kiln_image_config *c, char *why,
			   size_t whylen);
void kiln_image_config_free(struct kiln_image_config *c);

/* A JSON object file of at most 1 MiB, or NULL. */
json_t *kiln_image_json_load(const char *path);

#endif
