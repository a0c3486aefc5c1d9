#ifndef KILN_CLI_RUN_H
#define KILN_CLI_RUN_H

/* `kiln run`: argv[0] is "run"; self is the kiln binary's argv[0]. Returns the exit status. */
int cli_run(int argc, char **argv, const char *self);
/* `kiln template create NAME`: the same options and run, then the VM is saved
 * as template NAME (lib/template.h) if CMD exited 0. */
int cli_run_template(int argc, char **argv, const char *self, const char *name);

#endif
