//go:build !amd64 || purego

package httpguard

// maskFast says specialMask is slower here than reading from one plain run
// to the next (see escapedQuoteEnd).
const maskFast = false

// specialIndex returns the index of the first byte of p that is '"', '\\'
// or below 0x20, or len(p).
func specialIndex(p []byte) int { return specialIndexGo(p) }

// specialMask sets bit k when p[k] is '"', '\\' or below 0x20.
func specialMask(p *[64]byte) uint64 { return specialMaskGo(p) }
