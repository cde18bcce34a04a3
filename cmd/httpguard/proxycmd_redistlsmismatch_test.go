package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Was a stumble: rediss:// at a Redis without TLS was taken for a Redis
// not up yet, as a refused password had been: Redis reads the TLS
// handshake as an inline command and waits for its line's end, so that
// the handshake hung until the proxy's 2 s check gave up; the proxy
// started, logged "no answer from Redis yet", and refused every budgeted
// request (503 store_unavailable) for as long as it ran. A server that
// answers the handshake with bytes that are no TLS (Redis's error line,
// when the handshake holds a newline) was taken likewise. Likewise
// redis:// at a Redis that takes TLS only, which closes the connection.
// Each is now an error at start, saying which to use.
func TestProxyRefusesToStartOnARedisThatDoesNotSpeakTheTLSItsURLSays(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	plain := startRedisServer(t, "--requirepass", "pw-SECRET-1")
	tlsOnly := startTLSOnlyRedisServer(t)
	for _, tc := range []struct{ redis, says string }{
		{"rediss://:pw-SECRET-1@" + plain, "does not speak TLS (it answers a PING sent plain, and not the TLS handshake): use a redis:// URL, or enable TLS on the server"},
		{"rediss://:pw-SECRET-1@" + answering(t, "-ERR unknown command '\x16\x03\x01', with args beginning with: \r\n"),
			"does not speak TLS (it answered the TLS handshake with bytes that are no TLS): use a redis:// URL"},
		{"redis://:pw-SECRET-1@" + tlsOnly, "takes TLS only (it closed a plain connection, and takes a TLS handshake): use a rediss:// URL"},
		{tlsOnly, "takes TLS only"},
	} {
		var errOut lockedBuffer
		done := make(chan int)
		start := time.Now()
		go func() {
			done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", tc.redis, "--prices", prices, "--budget", "5"}, noEnv, &bytes.Buffer{}, &errOut)
		}()
		select {
		case code := <-done:
			t.Logf("%s: exited %d after %v", tc.says, code, time.Since(start).Round(time.Millisecond))
			assert.Equal(t, 2, code, errOut.String())
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the proxy started on a Redis that does not speak its URL's TLS", tc.says)
			stopBySIGTERM(t, done, &errOut)
		}
		assert.Contains(t, errOut.String(), "httpguard proxy: --redis: ", tc.says)
		assert.Contains(t, errOut.String(), tc.says)
		assert.NotContains(t, errOut.String(), "SECRET")
	}
}

// answering starts a TCP server on loopback, until the test ends, that
// reads what a client sends and answers it with answer, then closes the
// connection; it returns its address.
func answering(t *testing.T, answer string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 4096))
				c.Write([]byte(answer))
			}()
		}
	}()
	return ln.Addr().String()
}

// startTLSOnlyRedisServer runs a redis-server of the test's own on
// loopback that takes TLS connections only, with a self-signed
// certificate, until the test ends, and returns its address.
func startTLSOnlyRedisServer(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "this test needs redis-server (apt-get install redis-server)")
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-auth-clients", "no")
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	require.Eventually(t, func() bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
	return addr
}

// A server that answers neither the TLS handshake nor a PING sent plain
// (a Redis not up yet, or behind a stalled network), or that closes a
// plain connection and takes no TLS either, is no Redis of the other
// kind: the proxy starts, and warns of no answer yet, as before.
func TestARedisThatDoesNotAnswerIsNotTakenForTheOtherTLS(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { // reads, answers nothing, until the client closes
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	opts, err := redisOptions("rediss://" + silent.Addr().String())
	require.NoError(t, err)
	assert.Empty(t, tlsMismatch(context.DeadlineExceeded, opts))

	opts, err = redisOptions("redis://" + answering(t, ""))
	require.NoError(t, err)
	assert.Empty(t, tlsMismatch(io.EOF, opts))
}
