package proxy

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"sync"
)

// Serve serves the proxy on ln until ctx ends, then shuts down gracefully:
// it stops accepting, answers 503 on /readyz, lets the requests and streams
// in flight finish within ShutdownGrace (cutting those still running then,
// or when Cut is called), and returns once every request has settled its
// spend. The server has ReadHeaderTimeout, IdleTimeout and MaxHeaderBytes;
// request bodies are bounded by MaxRequestBytes and BodyReadTimeout. Serve
// does not Close the proxy.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	// conns counts the connections not yet closed, and so every handler
	// still running: Close does not wait for handlers, and a request
	// read just before it may not have reached the handler yet. The
	// server reports every new connection before its Serve returns.
	var conns sync.WaitGroup
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		// net/http reads MaxHeaderBytes and 4096 bytes more: the sum must
		// not overflow, or every request is answered 431.
		MaxHeaderBytes: min(p.cfg.MaxHeaderBytes, math.MaxInt-4096),
		ErrorLog:       p.errorLog(),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateHijacked, http.StateClosed:
				conns.Done()
			}
		},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	case <-p.cut:
	}
	p.draining.Store(true)
	grace, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	go func() {
		select {
		case <-p.cut:
			cancel()
		case <-grace.Done():
		}
	}()
	err := srv.Shutdown(grace)
	if err != nil {
		// The grace period is over: cut what is still running. Closing
		// a connection cancels its request, and each settles.
		srv.Close()
		err = nil
	}
	serr := <-served // after it, no connection is added
	conns.Wait()
	if !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

// Cut ends Serve's grace at once, as its running out would: the requests
// and streams still in flight are cut, and Serve returns once each has
// settled its spend, which waits for no upstream (a cut attempt is
// charged what it may have cost) and for a Redis store only up to its
// Timeout per call. Called before Serve's context ends, Cut stops Serve
// with no grace. Cut may be called more than once, from any goroutine.
func (p *Proxy) Cut() { p.cutOnce.Do(func() { close(p.cut) }) }
