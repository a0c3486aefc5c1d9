/* Token bucket (see bucket.h). */
#include "net/bucket.h"

#define BUCKET_MIN_BURST 4096u

void bucket_init(struct bucket *b, uint64_t rate, uint64_t now_ns)
{
	b->rate = rate;
	/* A fifth of a second's worth: smooth enough, and big reads stay possible. */
	b->burst = rate / 5 > BUCKET_MIN_BURST ? rate / 5 : BUCKET_MIN_BURST;
	b->tokens = b->burst;
	b->last_ns = now_ns;
}

uint64_t bucket_avail(struct bucket *b, uint64_t now_ns)
{
	uint64_t dt, add;

	if (!b->rate)
		return UINT64_MAX;
	if (now_ns > b->last_ns) {
		dt = now_ns - b->last_ns;
		/* rate < 2^40 (checked by the caller's parser) and dt capped: no overflow. */
		if (dt > 10000000000ull)
			dt = 10000000000ull;
		add = b->rate * (dt / 1000) / 1000000;
		if (add) {
			b->tokens = b->tokens + add > b->burst ? b->burst : b->tokens + add;
			b->last_ns = now_ns;
		}
	}
	return b->tokens;
}

void bucket_take(struct bucket *b, uint64_t n)
{
	if (!b->rate)
		return;
	b->tokens = n > b->tokens ? 0 : b->tokens - n;
}

int bucket_wait_ms(struct bucket *b, uint64_t now_ns)
{
	uint64_t ms;

	if (bucket_avail(b, now_ns))
		return 0;
	/* Wait for a useful amount rather than single bytes. */
	ms = (b->burst < 2048 ? b->burst : 2048) * 1000 / b->rate + 1;
	return ms > 1000 ? 1000 : (int)ms;
}
