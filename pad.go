package httpguard

// cacheLine is how far apart this package keeps a field that every
// request writes from the fields that every request only reads: when both
// share a cache line, each write on one core makes the readers on the
// others miss (false sharing). 128 bytes: x86-64 fetches its 64-byte lines
// in pairs.
const cacheLine = 128

// padded is a value with cache lines of its own (see cacheLine).
type padded[T any] struct {
	_ [cacheLine]byte
	v T
	_ [cacheLine]byte
}
