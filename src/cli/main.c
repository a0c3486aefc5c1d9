/*
 * kiln: command-line front end. `kiln run` is the one-shot main job; the
 * client verbs (create, exec, ps, rm, cp, attach, timeout) drive kilnd;
 * `kiln image` imports, lists and removes images; `kiln template` saves
 * booted microVMs.
 */
#include <stdio.h>
#include <string.h>

#include "cli/image.h"
#include "cli/remote.h"
#include "cli/run.h"
#include "cli/template.h"

static void usage(FILE *f)
{
	fputs("usage: kiln run [OPTIONS] -- CMD [ARGS...]   run CMD in a fresh microVM\n", f);
	fputs("       kiln image import|ls|rm ...          OCI/Docker images as kiln images\n", f);
	fputs("       kiln template create|ls|rm ...       booted microVMs saved for restore\n", f);
	fputs(cli_remote_usage, f);
	fputs("       kiln help | kiln VERB --help\n", f);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "run"))
		return cli_run(argc - 1, argv + 1, argv[0]);
	if (argc >= 2 && !strcmp(argv[1], "image"))
		return cli_image(argc - 1, argv + 1, argv[0]);
	if (argc >= 2 && !strcmp(argv[1], "template"))
		return cli_template(argc - 1, argv + 1, argv[0]);
	if (argc >= 2 && cli_remote_verb(argv[1]))
		return cli_remote(argc - 1, argv + 1);
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
