/*
 * kiln-router: one address in front of a kilnd fleet (docs/daemon.md,
 * "kiln-router"). Stateless: discovery (a hosts file, DNS SRV or A records),
 * capacity reports and in-flight creates live in memory only, and a
 * sandbox's host is in its id.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "daemon/tokens.h"
#include "daemon/listen.h"
#include "router/fleet.h"
#include "router/proxy.h"
#include "util.h"

#define DEFAULT_LISTEN "tcp:127.0.0.1:8470"

struct opts {
	const char *listen, *hosts_file, *dns_srv, *dns_a, *tokens, *upstream_token;
	uint64_t refresh_s, sample, max_connections, max_upload;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kiln-router --listen tcp:HOST:PORT|unix:/PATH\n"
		"                   (--hosts-file FILE | --dns-srv _kiln._tcp.NAME | --dns-a NAME:PORT)\n"
		"                   [--tokens FILE] [--refresh-s N] [--sample K]\n"
		"                   [--upstream-token TOKEN] [--max-connections N] [--max-upload BYTES]\n"
		"  --listen          where kilnd's API is served for the fleet (env KILN_ROUTER_LISTEN;\n"
		"                    default " DEFAULT_LISTEN ")\n"
		"  --hosts-file      one host per line: HOSTID URL (http://IP:PORT or unix:/PATH), '#'\n"
		"                    comments; re-read when it changes (env KILN_ROUTER_HOSTS_FILE)\n"
		"  --dns-srv         SRV records of the kilnd hosts (env KILN_ROUTER_DNS_SRV)\n"
		"  --dns-a           A/AAAA records of the hosts, and kilnd's port (env KILN_ROUTER_DNS_A);\n"
		"                    with DNS a host's id is what its kilnd says (X-Kiln-Host)\n"
		"  --tokens          check bearer tokens here too, kilnd's tokens file format\n"
		"                    (env KILN_ROUTER_TOKENS); the header goes on to kilnd unchanged.\n"
		"                    Tenants' quotas are enforced per host, by each kilnd: a tenant\n"
		"                    with max_sandboxes 4 may run 4 on every host of the fleet\n"
		"  --refresh-s       discovery and capacity reports every N s (default 5)\n"
		"  --sample          hosts sampled per create; the one with most free slots wins (default 2)\n"
		"  --upstream-token  token for the hosts' GET /v1/capacity (env KILN_ROUTER_UPSTREAM_TOKEN);\n"
		"                    without it the reports are asked with the creating client's token\n"
		"  --max-connections open client connections (default 1024)\n"
		"  --max-upload      largest request body forwarded (default 1 GiB)\n"
		"A create goes to the best of K sampled hosts, and to another one (3 tries) on 429,\n"
		"503 or no answer; none with room: 503 no_capacity with Retry-After. Requests for a\n"
		"sandbox go to the host in its id (sb-HOST-...); a host not in discovery or not\n"
		"answering: 410 host_gone.\n");
}

static int __attribute__((format(printf, 1, 2))) bad(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kiln-router: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (kiln-router --help)\n");
	return 2;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum { O_HOSTS = 256, O_SRV, O_A, O_TOKENS, O_REFRESH, O_SAMPLE, O_UPTOKEN, O_CONNS,
	       O_UPLOAD };
	static const struct option lo[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "hosts-file", required_argument, NULL, O_HOSTS },
		{ "dns-srv", required_argument, NULL, O_SRV },
		{ "dns-a", required_argument, NULL, O_A },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ "refresh-s", required_argument, NULL, O_REFRESH },
		{ "sample", required_argument, NULL, O_SAMPLE },
		{ "upstream-token", required_argument, NULL, O_UPTOKEN },
		{ "max-connections", required_argument, NULL, O_CONNS },
		{ "max-upload", required_argument, NULL, O_UPLOAD },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, nsrc;

	o->listen = getenv("KILN_ROUTER_LISTEN");
	o->hosts_file = getenv("KILN_ROUTER_HOSTS_FILE");
	o->dns_srv = getenv("KILN_ROUTER_DNS_SRV");
	o->dns_a = getenv("KILN_ROUTER_DNS_A");
	o->tokens = getenv("KILN_ROUTER_TOKENS");
	o->upstream_token = getenv("KILN_ROUTER_UPSTREAM_TOKEN");
	o->refresh_s = 5;
	o->sample = 2;
	o->max_connections = 1024;
	o->max_upload = 1ULL << 30;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			o->listen = optarg;
			break;
		case O_HOSTS:
			o->hosts_file = optarg;
			break;
		case O_SRV:
			o->dns_srv = optarg;
			break;
		case O_A:
			o->dns_a = optarg;
			break;
		case O_TOKENS:
			o->tokens = optarg;
			break;
		case O_UPTOKEN:
			o->upstream_token = optarg;
			break;
		case O_REFRESH:
			if (parse_u64(optarg, 1, 3600, &o->refresh_s))
				return bad("--refresh-s must be from 1 to 3600, not '%s'", optarg);
			break;
		case O_SAMPLE:
			if (parse_u64(optarg, 1, 16, &o->sample))
				return bad("--sample must be from 1 to 16, not '%s'", optarg);
			break;
		case O_CONNS:
			if (parse_u64(optarg, 16, 65536, &o->max_connections))
				return bad("--max-connections must be from 16 to 65536, not '%s'",
					   optarg);
			break;
		case O_UPLOAD:
			if (parse_u64(optarg, 1, 1ULL << 40, &o->max_upload))
				return bad("--max-upload must be from 1 to 2^40 bytes, not '%s'", optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return 2;
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s'", argv[optind]);
	nsrc = !!(o->hosts_file && *o->hosts_file) + !!(o->dns_srv && *o->dns_srv) +
	       !!(o->dns_a && *o->dns_a);
	if (nsrc != 1)
		return bad("exactly one of --hosts-file, --dns-srv, --dns-a is needed%s", "");
	if (o->hosts_file && !*o->hosts_file)
		o->hosts_file = NULL;
	if (o->dns_srv && !*o->dns_srv)
		o->dns_srv = NULL;
	if (o->dns_a && !*o->dns_a)
		o->dns_a = NULL;
	if (o->upstream_token && (!*o->upstream_token || strlen(o->upstream_token) > 4000 ||
				  strpbrk(o->upstream_token, "\r\n")))
		return bad("--upstream-token must be 1 to 4000 bytes on one line%s", "");
	if (!o->listen || !*o->listen)
		o->listen = DEFAULT_LISTEN;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct tokens *tokens = NULL;
	struct fleet *fleet = NULL;
	struct proxy *proxy = NULL;
	struct fleet_config fc;
	struct proxy_config pc;
	char err[512], auth[4100];
	int stop[2] = { -1, -1 }, ret = 1, sig = 0, fd, r;
	sigset_t set;

	r = parse_opts(argc, argv, &o);
	if (r)
		return r;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pipe2(stop, O_CLOEXEC) < 0) {
		fprintf(stderr, "kiln-router: pipe: %s\n", strerror(errno));
		goto out;
	}
	if (o.tokens && tokens_load(o.tokens, &tokens, err, sizeof(err))) {
		fprintf(stderr, "kiln-router: %s\n", err);
		goto out;
	}
	if (o.upstream_token)
		snprintf(auth, sizeof(auth), "Bearer %s", o.upstream_token);
	fc = (struct fleet_config){ .hosts_file = o.hosts_file, .dns_srv = o.dns_srv,
				    .dns_a = o.dns_a, .refresh_s = (unsigned)o.refresh_s,
				    .sample = (unsigned)o.sample,
				    .upstream_token = o.upstream_token ? auth : NULL,
				    .stop_fd = stop[0] };
	if (fleet_start(&fc, &fleet, err, sizeof(err))) {
		fprintf(stderr, "kiln-router: %s\n", err);
		goto out;
	}
	fd = listen_open("kiln-router", o.listen);
	if (fd < 0)
		goto out;
	pc = (struct proxy_config){ .fleet = fleet, .tokens = tokens,
				    .max_connections = (unsigned)o.max_connections,
				    .max_upload = o.max_upload, .stop_fd = stop[0] };
	if (proxy_start(&pc, fd, &proxy, err, sizeof(err))) {
		fprintf(stderr, "kiln-router: --listen %s: %s\n", o.listen, err);
		goto out;
	}
	fprintf(stderr, "kiln-router: ready: listening on %s, %s %s, refresh %llu s, sample %llu%s\n",
		o.listen, o.hosts_file ? "hosts file" : o.dns_srv ? "DNS SRV" : "DNS A",
		o.hosts_file ? o.hosts_file : o.dns_srv ? o.dns_srv : o.dns_a,
		(unsigned long long)o.refresh_s, (unsigned long long)o.sample,
		tokens ? ", tokens checked here" : "");
	while (sigwait(&set, &sig) != 0)
		;
	fprintf(stderr, "kiln-router: %s: stopping\n", strsignal(sig));
	ret = 0;
out:
	if (stop[1] >= 0 && write(stop[1], "x", 1) < 0)
		ret = 1;
	proxy_stop(proxy);
	fleet_stop(fleet);
	tokens_free(tokens);
	if (o.listen && !strncmp(o.listen, "unix:", 5) && proxy)
		unlink(o.listen + 5);
	if (stop[0] >= 0) {
		close(stop[0]);
		close(stop[1]);
	}
	if (!ret)
		fprintf(stderr, "kiln-router: stopped\n");
	return ret;
}
