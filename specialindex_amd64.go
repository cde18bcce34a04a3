//go:build !purego

package httpguard

// maskFast says specialMask is in assembly, faster than reading from one
// plain run to the next (see escapedQuoteEnd).
const maskFast = true

// specialIndex returns the index of the first byte of p that is '"', '\\'
// or below 0x20, or len(p): specialIndexGo's answer, 32 bytes a step with
// SSE2 (specialindex_amd64.s).
//
//go:noescape
func specialIndex(p []byte) int

// specialMask sets bit k when p[k] is '"', '\\' or below 0x20: the
// bits of specialMaskGo (specialindex_amd64.s).
//
//go:noescape
func specialMask(p *[64]byte) uint64
