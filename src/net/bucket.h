/* Token bucket for kiln-net's --rate (bytes per second). Pure: callers pass
 * the monotonic time in nanoseconds. */
#ifndef KILN_NET_BUCKET_H
#define KILN_NET_BUCKET_H

#include <stdint.h>

struct bucket {
	uint64_t rate;	 /* bytes per second; 0 = unlimited */
	uint64_t burst;	 /* most tokens held */
	uint64_t tokens;
	uint64_t last_ns;
};

void bucket_init(struct bucket *b, uint64_t rate, uint64_t now_ns);
/* Tokens available now (UINT64_MAX when unlimited). */
uint64_t bucket_avail(struct bucket *b, uint64_t now_ns);
/* Spend n tokens (at most what is available). */
void bucket_take(struct bucket *b, uint64_t n);
/* 0 when tokens are there; else milliseconds until a useful amount is. */
int bucket_wait_ms(struct bucket *b, uint64_t now_ns);
/* 0 when n tokens are there; else milliseconds until they are (at most
 * 1000; n above the burst waits for a full bucket). */
int bucket_wait_for_ms(struct bucket *b, uint64_t n, uint64_t now_ns);

#endif
