#ifndef KILN_CLI_IMAGE_H
#define KILN_CLI_IMAGE_H

/* `kiln image import|ls|rm`: argv[0] is "image"; self is kiln's argv[0].
 * Names and defaults are src/lib/image.h's, shared with kilnd. */
int cli_image(int argc, char **argv, const char *self);

#endif
