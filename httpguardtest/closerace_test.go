package httpguardtest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCloseDoesNotWaitForStalledRequestsArrivingWhileItCloses closes
// servers while clients keep connecting and stalling their request bodies:
// a connection that became active between Close closing the connections it
// knew and the listener closing was left to a handler waiting for the rest
// of the body, forever (89 of 200 Closes hung on main under such a load).
func TestCloseDoesNotWaitForStalledRequestsArrivingWhileItCloses(t *testing.T) {
	for range 20 {
		s, err := NewServer(Config{})
		require.NoError(t, err)
		addr := strings.TrimPrefix(s.URL, "http://")

		var (
			mu    sync.Mutex
			conns []net.Conn
			wg    sync.WaitGroup
		)
		stop, started := make(chan struct{}), make(chan struct{}, 64)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return // the listener closed
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
					io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
					select {
					case started <- struct{}{}:
					default:
					}
				}
			}()
		}
		for range 16 {
			<-started
		}

		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		var hung bool
		select {
		case <-closed:
		case <-time.After(5 * time.Second): // a busy machine's Close takes milliseconds
			hung = true
		}
		close(stop)
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close() // unblocks a hung Close, so that the test ends
		}
		mu.Unlock()
		<-closed
		require.False(t, hung, "Close waited for a request whose body stalled")
	}
}
