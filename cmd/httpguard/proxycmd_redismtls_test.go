package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holysheep/httpguard/httpguardtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCA is a certificate authority of a test's own, which signs the
// certificates of a TLS Redis and of its clients.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA's certificate, PEM
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		Subject: pkix.Name{CommonName: "httpguard test CA " + t.Name()}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	dir := t.TempDir()
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, "ca.pem"), dir: dir}
	require.NoError(t, os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return ca
}

// issue writes a certificate signed by ca, for the server at 127.0.0.1 or
// for a client, and its key, and returns their files.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir() // a file of each issue's own
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

// startMutualTLSRedisServer runs a redis-server of the test's own on
// loopback that takes TLS connections only and, as redis-server does by
// default with TLS (tls-auth-clients yes), only from clients presenting a
// certificate ca signed; args add to its flags. It returns its address
// and the files of a client certificate and key ca signed.
func startMutualTLSRedisServer(t *testing.T, ca *testCA, args ...string) (addr, clientCert, clientKey string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "this test needs redis-server (apt-get install redis-server)")
	serverCert, serverKey := ca.issue(t, "server", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey = ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, append([]string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--dir", t.TempDir(), "--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--tls-ca-cert-file", ca.file,
		"--tls-auth-clients", "yes"}, args...)...)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	addr = "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, TLSConfig: clientTLS(t, ca, clientCert, clientKey)})
	defer c.Close()
	require.Eventually(t, func() bool {
		err := c.Ping(context.Background()).Err()
		return err == nil || refusedBy(err) // one with a password answers NOAUTH
	}, 10*time.Second, 5*time.Millisecond)
	return addr, clientCert, clientKey
}

// clientTLS is the TLS of a client trusting ca and presenting certFile.
func clientTLS(t *testing.T, ca *testCA, certFile, keyFile string) *tls.Config {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1"}
}

// Was a gap: --redis rediss://... could present no client certificate,
// which redis-server with TLS asks for by default (tls-auth-clients yes),
// and could trust a private CA only through the system's pool; the PING
// failed (a connection reset in TLS 1.3), the proxy started, warned of
// no answer yet, and refused every budgeted request (503
// store_unavailable) for as long as it ran. --redis-ca, --redis-cert and
// --redis-key (or their variables) now give them, and the budget lives in
// that Redis.
func TestProxyKeepsABudgetInARedisThatAsksForAClientCertificate(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	ca := newTestCA(t)
	addr, cert, key := startMutualTLSRedisServer(t, ca, "--requirepass", "pw-SECRET-1")
	srv, err := httpguardtest.NewServer(httpguardtest.Config{})
	require.NoError(t, err)
	defer srv.Close()
	env := map[string]string{"HTTPGUARD_REDIS_CERT": cert, "HTTPGUARD_REDIS_KEY": key} // the variables work as the flags
	var errOut lockedBuffer
	done := make(chan int, 1) // an exit at start is reported by listeningAddr
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--upstream", srv.BaseURL(), "--redis", "rediss://:pw-SECRET-1@" + addr,
			"--redis-ca", ca.file, "--prices", prices, "--budget", "5"}, func(k string) string { return env[k] }, &bytes.Buffer{}, &errOut)
	}()
	listen := listeningAddr(t, &errOut)
	client := &http.Client{Transport: &http.Transport{}}
	waitServing(t, client, listen)
	resp, err := client.Get("http://" + listen + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "ready: the budget's Redis answers")
	resp, err = client.Post("http://"+listen+"/v1/chat/completions", "application/json", strings.NewReader(string(requestBody)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	client.CloseIdleConnections()
	stopBySIGTERM(t, done, &errOut)

	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: "pw-SECRET-1", TLSConfig: clientTLS(t, ca, cert, key)})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	assert.NotEmpty(t, keys, "the budget lives in the Redis")
	logs := errOut.String()
	assert.NotContains(t, logs, "no answer from Redis")
	assert.NotContains(t, logs, "SECRET")
	assert.NotContains(t, logs, "PRIVATE KEY")
}

// A Redis that asks for a client certificate, given none, or given one
// its CA did not sign, ends the connection: in TLS 1.2 with a
// handshake_failure alert, in TLS 1.3 after the handshake the client took
// for done (the PING meets a connection reset). That was taken for a
// Redis not up yet; it is now an error at start, saying what to give.
func TestProxyRefusesToStartOnARedisThatAsksForAClientCertificateNotGiven(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	ca := newTestCA(t)
	strangerCert, strangerKey := newTestCA(t).issue(t, "stranger", x509.ExtKeyUsageClientAuth)
	for _, protocols := range []string{"TLSv1.2", "TLSv1.3"} {
		t.Run(protocols, func(t *testing.T) {
			addr, _, _ := startMutualTLSRedisServer(t, ca, "--tls-protocols", protocols)
			for _, tc := range []struct {
				name string
				args []string
				says string
			}{
				{"no certificate", nil, "httpguard proxy: --redis: the Redis at " + addr + " asks for a client certificate: give one with --redis-cert and --redis-key"},
				{"another CA's", []string{"--redis-cert", strangerCert, "--redis-key", strangerKey},
					"httpguard proxy: --redis: the Redis at " + addr + " does not take the client certificate of --redis-cert " + strangerCert},
			} {
				var errOut lockedBuffer
				done := make(chan int)
				start := time.Now()
				go func() {
					done <- proxyCommand(append([]string{"--listen", "127.0.0.1:0", "--redis", "rediss://:pw-SECRET-1@" + addr, "--redis-ca", ca.file,
						"--prices", prices, "--budget", "5"}, tc.args...), noEnv, &bytes.Buffer{}, &errOut)
				}()
				select {
				case code := <-done:
					t.Logf("%s: exited %d after %v", tc.name, code, time.Since(start).Round(time.Millisecond))
					assert.Equal(t, 2, code, errOut.String())
				case <-time.After(10 * time.Second):
					t.Errorf("%s: the proxy started on a Redis that asks for a client certificate", tc.name)
					stopBySIGTERM(t, done, &errOut)
				}
				assert.Contains(t, errOut.String(), tc.says, tc.name)
				assert.NotContains(t, errOut.String(), "SECRET")
			}
		})
	}
}

// --redis-ca is the only CA trusted: a Redis whose certificate another CA
// signed fails at start, as one whose certificate the system does not
// trust does.
func TestProxyTrustsOnlyTheCAOfRedisCA(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"deepseek-v3.2": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}`), 0o600))
	ca := newTestCA(t)
	addr, cert, key := startMutualTLSRedisServer(t, ca)
	other := newTestCA(t)
	var errOut lockedBuffer
	done := make(chan int)
	go func() {
		done <- proxyCommand([]string{"--listen", "127.0.0.1:0", "--redis", "rediss://" + addr, "--redis-ca", other.file,
			"--redis-cert", cert, "--redis-key", key, "--prices", prices, "--budget", "5"}, noEnv, &bytes.Buffer{}, &errOut)
	}()
	select {
	case code := <-done:
		assert.Equal(t, 2, code, errOut.String())
	case <-time.After(10 * time.Second):
		t.Errorf("the proxy started on a Redis whose certificate --redis-ca does not sign")
		stopBySIGTERM(t, done, &errOut)
	}
	assert.Contains(t, errOut.String(), "httpguard proxy: --redis: the TLS connection to Redis at "+addr+" failed")
	assert.Contains(t, errOut.String(), "certificate signed by unknown authority")
}

// The files of --redis-ca, --redis-cert and --redis-key are read at
// start: a bad one, a key that is not the certificate's, one without the
// other, or any of them without a rediss:// URL is an error naming the
// flag, which shows no key.
func TestProxyChecksTheRedisTLSFilesAtStart(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	_, otherKey := ca.issue(t, "other", x509.ExtKeyUsageClientAuth)
	missing := filepath.Join(ca.dir, "missing.pem")
	const redisURL = "rediss://:pw-SECRET-1@" + deadAddr
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--redis-ca", ca.file}, "--redis-ca, --redis-cert and --redis-key need --redis"},
		{[]string{"--redis", deadAddr, "--redis-ca", ca.file}, "--redis-ca, --redis-cert and --redis-key need a rediss:// URL in --redis"},
		{[]string{"--redis", "redis://" + deadAddr, "--redis-cert", cert, "--redis-key", key}, "need a rediss:// URL in --redis"},
		{[]string{"--redis", redisURL, "--redis-cert", cert}, "--redis-cert needs --redis-key"},
		{[]string{"--redis", redisURL, "--redis-key", key}, "--redis-key needs --redis-cert"},
		{[]string{"--redis", redisURL, "--redis-ca", missing}, "--redis-ca: open " + missing + ": no such file or directory"},
		{[]string{"--redis", redisURL + "?skip_verify=true", "--redis-ca", ca.file}, "--redis-ca with skip_verify=true in --redis: the URL's skip_verify checks no certificate"},
		{[]string{"--redis", redisURL, "--redis-ca", key}, "--redis-ca " + key + ": no PEM certificate in it"},
		{[]string{"--redis", redisURL, "--redis-cert", missing, "--redis-key", key}, "--redis-cert: open " + missing},
		{[]string{"--redis", redisURL, "--redis-cert", key, "--redis-key", key}, "--redis-cert " + key + ": no PEM certificate in it"},
		{[]string{"--redis", redisURL, "--redis-cert", cert, "--redis-key", missing}, "--redis-key: open " + missing},
		{[]string{"--redis", redisURL, "--redis-cert", cert, "--redis-key", cert}, "--redis-key " + cert + ", with --redis-cert " + cert + ": tls: found a certificate rather than a key"},
		{[]string{"--redis", redisURL, "--redis-cert", cert, "--redis-key", otherKey}, "--redis-key " + otherKey + ", with --redis-cert " + cert + ": tls: private key does not match public key"},
	} {
		var errOut bytes.Buffer
		code := proxyCommand(append([]string{"--listen", "127.0.0.1:0", "--rps", "5"}, tc.args...), noEnv, &bytes.Buffer{}, &errOut)
		assert.Equal(t, 2, code, "%v: %s", tc.args, errOut.String())
		assert.Contains(t, errOut.String(), "httpguard proxy: ", tc.args)
		assert.Contains(t, errOut.String(), tc.says, tc.args)
		assert.NotContains(t, errOut.String(), "SECRET")
		assert.NotContains(t, errOut.String(), "PRIVATE KEY")
	}
}

// A Redis that asks for a client certificate but takes the connection
// without one (tls-auth-clients optional) is not taken for one that
// requires it: its asking is not the sign, its ending the connection is.
func TestARedisThatTakesNoClientCertificateIsNotTakenForOneThatAsks(t *testing.T) {
	ca := newTestCA(t)
	addr, _, _ := startMutualTLSRedisServer(t, ca, "--tls-auth-clients", "optional")
	opts, err := redisOptions("rediss://" + addr)
	require.NoError(t, err)
	require.NoError(t, redisTLSFiles{ca: ca.file}.apply(opts))
	assert.False(t, endsWithoutClientCertificate(opts))

	required, _, _ := startMutualTLSRedisServer(t, ca)
	opts, err = redisOptions("rediss://" + required)
	require.NoError(t, err)
	require.NoError(t, redisTLSFiles{ca: ca.file}.apply(opts))
	assert.True(t, endsWithoutClientCertificate(opts))
}
