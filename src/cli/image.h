#ifndef KILN_CLI_IMAGE_H
#define KILN_CLI_IMAGE_H

#include <stddef.h>

/* `kiln image import|ls|rm`: argv[0] is "image"; self is kiln's argv[0]. */
int cli_image(int argc, char **argv, const char *self);

/* Where images live by name: $KILN_IMAGE_DIR, else images/ beside kiln. */
void image_dir(const char *self, char *buf, size_t len);

/* An imported image's defaults (NAME.json beside NAME.img). Strings are
 * owned by the struct; arrays are NULL-terminated. */
struct image_config {
	char **env;
	char **entrypoint;
	char **cmd;
	char *workdir;
	char *user;
};

/* 0 and *c filled (empty when there is no config file), or -1 with a
 * message in why. */
int image_config_load(const char *img_path, struct image_config *c, char *why, size_t whylen);

#endif
