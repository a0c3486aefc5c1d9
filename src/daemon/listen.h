/* A listening socket for "unix:PATH" or "tcp:HOST:PORT" (kilnd, kiln-router). */
#ifndef KILN_LISTEN_H
#define KILN_LISTEN_H

/* The socket (close-on-exec, listening), or -1 after a one-line message on
 * stderr starting with prog. A socket file left at PATH goes first. */
int listen_open(const char *prog, const char *spec);

#endif
