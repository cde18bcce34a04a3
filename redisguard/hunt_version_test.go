package redisguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redis4Script is Redis 4.0's answer to a script that writes after TIME
// without calling redis.replicate_commands() first.
const redis4Script = "ERR Error running script (call to f_0123): @user_script:4: @user_script: 4: " +
	"Write commands not allowed after non deterministic commands. Call redis.replicate_commands() " +
	"at the start of your script in order to switch to single commands replication mode."

// redis4 returns the address of a server that answers as Redis 4.0 does
// the commands the stores send: no HELLO, and scripts that write after
// reading the clock refused.
func redis4(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					cmd, err := readCommand(r)
					if err != nil {
						return
					}
					var reply string
					switch strings.ToUpper(cmd[0]) {
					case "PING":
						reply = "+PONG"
					case "EVALSHA":
						reply = "-NOSCRIPT No matching script. Please use EVAL."
					case "EVAL":
						reply = "-" + redis4Script
					default:
						reply = fmt.Sprintf("-ERR unknown command '%s'", cmd[0])
					}
					if _, err := c.Write([]byte(reply + "\r\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	cmd := make([]string, n)
	for i := range cmd {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("not a bulk string: %q", line)
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		cmd[i] = string(b[:size])
	}
	return cmd, nil
}

// Redis before 5.0 refuses a script's writes after it read the clock
// (TIME), as every script of the stores does, unless the script asks for
// effects replication, the default since 5.0. The stores said only that
// Redis was unavailable, with Redis's error about replicate_commands: now
// the error names the version they need.
func TestStoresOnRedisBefore5SayTheyNeedRedis5(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: redis4(t), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()

	b := newStore(t, client, BudgetStoreConfig{ProbeInterval: time.Hour})
	_, err := b.Reserve(ctx, lifetime(1, 1), 100)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "needs Redis 5.0 or later")

	events := make(failovers, 1)
	l := newLimitStore(t, client, LimitStoreConfig{FailClosed: true, ProbeInterval: time.Hour, OnFailover: events.record})
	_, _, err = l.Take(ctx, "k", noLimit, httpguard.BucketLimit{Rate: 1, Burst: 10}, 1)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "needs Redis 5.0 or later")
	e := events.next(t)
	assert.True(t, e.Down)
	var re redis.Error
	assert.True(t, errors.As(e.Err, &re), "Redis's own error is kept: %v", e.Err)
	assert.Contains(t, e.Err.Error(), "needs Redis 5.0 or later")
}
