#ifndef KILN_CLI_TEMPLATE_H
#define KILN_CLI_TEMPLATE_H

/* `kiln template create|ls|rm`: argv[0] is "template"; self is kiln's argv[0]. */
int cli_template(int argc, char **argv, const char *self);

#endif
