#ifndef KILN_CLI_REMOTE_H
#define KILN_CLI_REMOTE_H

#include <stdbool.h>

/*
 * The client verbs that drive kilnd over its HTTP API (docs/daemon.md, "Client
 * verbs"): create, exec, ps, rm, cp, attach, timeout. kilnd is found through
 * KILN_HOST and KILN_TOKEN.
 */

/* Whether verb is one of them. */
bool cli_remote_verb(const char *verb);
/* `kiln VERB ...`: argv[0] is the verb. Returns the exit status. */
int cli_remote(int argc, char **argv);
/* The verbs' lines for `kiln help`. */
extern const char cli_remote_usage[];

#endif
