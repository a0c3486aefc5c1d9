/* kiln: command-line front end. `kiln run` is the one-shot main job. */
#include <stdio.h>
#include <string.h>

#include "cli/run.h"

static void usage(FILE *f)
{
	fputs("usage: kiln run [OPTIONS] -- CMD [ARGS...]   run CMD in a fresh microVM\n"
	      "       kiln help | kiln run --help\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "run"))
		return cli_run(argc - 1, argv + 1, argv[0]);
	if (argc >= 2 && (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
			  !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc >= 2)
		fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
