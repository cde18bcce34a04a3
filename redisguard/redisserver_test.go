package redisguard

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server process of a test's own, on a free loopback
// port, stopped when the test ends. The Redis tests never skip: without
// the binary they fail, since CI installs it and a skipped Redis test would
// hide that it did not.
type redisServer struct {
	t       testing.TB
	bin     string
	args    []string
	Addr    string
	cluster bool

	out syncBuffer // the server's log, shown when the test fails

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives when cmd has exited
}

var (
	installOnce sync.Once
	installOut  []byte
	installErr  error
)

// redisServerBinary finds redis-server. On a fresh machine where it is
// missing and the tests run as root with apt-get at hand (as on CI and on
// this project's machines), it installs it from the system's packages once,
// so that `go test -race work` runs the Redis tests on a fresh machine.
// Anywhere else a missing server is an error: the tests never skip.
func redisServerBinary(t testing.TB) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin, nil
	}
	apt, aptErr := exec.LookPath("apt-get")
	if aptErr != nil || os.Geteuid() != 0 {
		return "", err
	}
	installOnce.Do(func() {
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		install := exec.Command(apt, "install", "-y", "-qq", "--no-install-recommends", "redis-server")
		install.Env = env
		if installOut, installErr = install.CombinedOutput(); installErr != nil {
			update := exec.Command(apt, "update", "-qq")
			update.Env = env
			update.Run()
			install = exec.Command(apt, "install", "-y", "-qq", "--no-install-recommends", "redis-server")
			install.Env = env
			installOut, installErr = install.CombinedOutput()
		}
	})
	t.Logf("redis-server was missing: installed it with apt-get (%v)", installErr)
	if installErr != nil {
		return "", fmt.Errorf("%w; apt-get install redis-server failed: %v\n%s", err, installErr, installOut)
	}
	return exec.LookPath("redis-server")
}

// redisOptions are how a test's server differs from a plain cache.
type redisOptions struct {
	// persist makes every write durable before it is acknowledged
	// (appendfsync always), so that the server survives SIGKILL whole.
	persist bool
	// cluster runs a one-node Redis Cluster that serves every slot.
	cluster bool
	// noSlots, with cluster, leaves the node serving no slot yet.
	noSlots bool
}

func startRedis(t testing.TB, o redisOptions) *redisServer {
	t.Helper()
	bin, err := redisServerBinary(t)
	if err != nil {
		t.Fatalf("redis-server is not on PATH (%v): the Redis tests need a real server; install it, e.g. `apt-get install redis-server` (CI does)", err)
	}
	dir := t.TempDir()
	s := &redisServer{t: t, bin: bin, cluster: o.cluster}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""}
		if o.persist {
			s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
		}
		if o.cluster {
			s.args = append(s.args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+strconv.Itoa(port)+".conf",
				"--cluster-announce-ip", "127.0.0.1")
		}
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("redis-server did not start: %v\n%s", err, s.out.String())
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("redis-server's log:\n%s", s.out.String())
		}
	})
	t.Cleanup(s.stop)
	if o.cluster && !o.noSlots {
		s.serveAllSlots()
	}
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs the server and waits until it answers PING.
func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		err := ping(s.Addr)
		if err == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("no answer to PING after 10s: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// ping sends PING on a connection of its own: a client's pool would back
// off after failed dials.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", buf)
	}
	return nil
}

// kill ends the server with SIGKILL, as a crash would.
func (s *redisServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// restart starts the server again on its address, with its data.
func (s *redisServer) restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("redis-server did not restart: %v\n%s", err, s.out.String())
	}
}

func (s *redisServer) stop() { s.kill() }

// serveAllSlots makes the one node serve every slot and waits until the
// cluster says it is ok.
func (s *redisServer) serveAllSlots() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the cluster is not ok after 10s: %v %s", err, info)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client returns a client of the server, closed when the test ends.
func (s *redisServer) client(t testing.TB) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	if s.cluster {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{s.Addr}, ContextTimeoutEnabled: true,
			DialTimeout: testDialTimeout})
	} else {
		c = redis.NewClient(testClientOptions(s.Addr))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testClientOptions are a client's options in tests: calls that follow
// their context, quick to give up on a server that is down (a killed
// server refuses connections at once; a second to dial is for a loaded
// machine, where 100ms failed live servers over).
func testClientOptions(addr string) *redis.Options {
	return &redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: testDialTimeout, DialerRetries: 1, MaxRetries: -1}
}

const testDialTimeout = time.Second
