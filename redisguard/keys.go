package redisguard

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
)

// keyspace names the Redis keys of one budget. Every key begins with the
// hash tag {prefix:name}, so that a Cluster keeps them in one slot and a
// script may touch them together.
//
//	{prefix:name}:newest          hash: the newest window seen (key, start, end), lost (the window, when Redis lost its money), its cause, noticed, born (names the newest window's opening)
//	{prefix:name}:win:<window>    hash: s (settled), h (held), i:<id> (one hold), seen, off, gap (the lease clock)
//	{prefix:name}:lease:<window>  sorted set: reservation IDs by lease end (ms, the window's lease clock)
//	{prefix:name}:done:<window>   sorted set: the IDs of recent settlements by when (ms, server clock)
//	{prefix:name}:settled         pub/sub channel: a window's name, when money is released there
//
// Money is stored as decimal strings of nano-dollars; windows, IDs and times
// are all there is besides. Nothing of a request (keys, prompts) is stored.
type keyspace struct {
	tag string // "{prefix:name}"
}

func newKeyspace(prefix, name string) keyspace {
	return keyspace{tag: "{" + prefix + ":" + name + "}"}
}

func (k keyspace) newest() string              { return k.tag + ":newest" }
func (k keyspace) window(window string) string { return k.tag + ":win:" + window }
func (k keyspace) leases(window string) string { return k.tag + ":lease:" + window }
func (k keyspace) done(window string) string   { return k.tag + ":done:" + window }
func (k keyspace) settledChannel() string      { return k.tag + ":settled" }

// limitKeys are the Redis keys of one limiter key of a LimitStore. They
// share the hash tag {prefix:name:hash}, hash being the first 96 bits of
// the SHA-256 of the limiter key, in hex: the key itself (the host and
// model by default, whatever a LimitConfig.Key makes of a request
// otherwise) is never stored.
//
//	rate:{prefix:name:hash}:requests   string: the requests bucket, as redis_rate keeps it
//	rate:{prefix:name:hash}:tokens     string: the tokens bucket, likewise
//	{prefix:name:hash}:pause           string: when the pause ends
//	{prefix:name:hash}:credits         sorted set: the tokens of the last minute's credits by when (ms, server clock)
//	{prefix:name:hash}:adapt           hash: the adaptive rate the fleet shares (see fleetLib)
//
// A bucket is GCRA's theoretical arrival time, in seconds since
// 2017-01-01 on the server's clock (redis_rate's format, "rate:" being its
// prefix); a pause's end is in the same seconds. Each key expires once it
// holds nothing a missing key would not mean: a full bucket, no pause.
type limitKeys struct {
	requests, tokens         string // as redis_rate's AllowN takes them: without "rate:"
	rateRequests, rateTokens string // as stored, with it
	pause, credits, adapt    string
	// heard is when Redis last answered a Take of the key's (see
	// caller.alone): the key's, so that on a Cluster the answers of the
	// other nodes do not hide a node that stalls.
	heard atomic.Int64
}

// rateKeyPrefix is what redis_rate puts before the key it is given.
const rateKeyPrefix = "rate:"

func newLimitKeys(prefix, name, key string) *limitKeys {
	sum := sha256.Sum256([]byte(key))
	tag := "{" + prefix + ":" + name + ":" + hex.EncodeToString(sum[:12]) + "}"
	k := &limitKeys{requests: tag + ":requests", tokens: tag + ":tokens", pause: tag + ":pause", credits: tag + ":credits", adapt: tag + ":adapt"}
	k.rateRequests, k.rateTokens = rateKeyPrefix+k.requests, rateKeyPrefix+k.tokens
	return k
}

// presenceKey is the sorted set in which the LimitStores of one name count
// themselves: store IDs by the time of their last call (ms, server clock).
func presenceKey(prefix, name string) string { return "{" + prefix + ":" + name + "}:replicas" }
