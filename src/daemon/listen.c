/* Listening sockets for daemons (see listen.h). */
#include "daemon/listen.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int listen_open(const char *prog, const char *spec)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[256];
	const char *colon;
	struct stat st;
	int fd = -1, one = 1, r;

	if (!strncmp(spec, "unix:", 5)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		const char *path = spec + 5;

		if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
			fprintf(stderr, "%s: --listen %s: the path must be 1 to %zu bytes\n", prog, spec,
				sizeof(sa.sun_path) - 1);
			return -1;
		}
		memcpy(sa.sun_path, path, strlen(path));
		/* A socket left by an earlier kilnd goes; anything else stays. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    chmod(path, 0660) < 0 || listen(fd, 256) < 0)
			goto fail;
		return fd;
	}
	if (strncmp(spec, "tcp:", 4) || !(colon = strrchr(spec + 4, ':')) ||
	    (size_t)(colon - spec - 4) >= sizeof(host)) {
		fprintf(stderr, "%s: --listen %s: want unix:PATH or tcp:HOST:PORT\n", prog, spec);
		return -1;
	}
	memcpy(host, spec + 4, (size_t)(colon - spec - 4));
	host[colon - spec - 4] = 0;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host) - 2);
		host[strlen(host) - 2] = 0;
	}
	r = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (r) {
		fprintf(stderr, "%s: --listen %s: %s\n", prog, spec, gai_strerror(r));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 256) < 0) {
		freeaddrinfo(res);
		goto fail;
	}
	freeaddrinfo(res);
	return fd;
fail:
	fprintf(stderr, "%s: --listen %s: %s\n", prog, spec, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}
