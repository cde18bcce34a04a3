// Package bench measures httpguard's Retrier side by side with the peers
// users would otherwise pick, github.com/hashicorp/go-retryablehttp and
// github.com/failsafe-go/failsafe-go's failsafehttp, on in-memory and
// loopback transports only. It is a nested module so that the peers never
// become dependencies of httpguard.
//
// Every peer is configured alike: 3 retries, waits of 1ms, defaults
// otherwise (go-retryablehttp without a logger). Run
//
//	go test -run . -v ./...                 # amplification and fault tests, with their numbers
//	go test -run '^$' -bench . -benchmem    # per-request overhead
//
// The package has no API; everything is in its tests and benchmarks.
package bench
