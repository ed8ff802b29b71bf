package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/subrole/subrole/store"
)

// socketClient returns an HTTP client that reaches the service through its
// admin socket (timeout 0: none). Requests name any host ("http://subrole").
func socketClient(socket string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}
}

// jsonRequest makes an admin API request with body as JSON (nil: none).
func jsonRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	return http.NewRequestWithContext(ctx, method, "http://subrole"+path, rd)
}

// socketAPI is a JSON client of the running service's admin API, the one
// the ban and link commands share.
type socketAPI struct {
	socket  string
	timeout time.Duration // per request; 0: none, ctx bounds it
	hc      *http.Client
}

func (c *socketAPI) client() *http.Client {
	if c.hc == nil {
		c.hc = socketClient(c.socket, c.timeout)
	}
	return c.hc
}

func (c *socketAPI) close() {
	if c.hc != nil {
		c.hc.CloseIdleConnections()
	}
}

// refusedError is an answer other than 200, with the service's message.
type refusedError struct {
	status int
	msg    string
}

func (e *refusedError) Error() string { return "the service refused: " + e.msg }

// call sends body as JSON (nil: none) and decodes a 200 JSON answer into
// out (nil: not read). Any other status is a *refusedError.
func (c *socketAPI) call(ctx context.Context, method, path string, body, out any) error {
	req, err := jsonRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &refusedError{status: resp.StatusCode, msg: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxAdminBody)).Decode(out)
}

// ping checks that a service answers on the socket (its ban list is the
// cheapest thing to ask for).
func (c *socketAPI) ping(ctx context.Context) error {
	if _, err := os.Stat(c.socket); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var bans []json.RawMessage
	err := c.call(ctx, http.MethodGet, "/bans", nil, &bans)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("nobody listens on it (a stale socket)")
	}
	return err
}

// openWithoutService opens the database file for a command (what) that
// found no service on the admin socket (socket, with sockErr the reason;
// "" when the socket is off). A service that holds the file anyway is
// named as the likely reason, with what to do about it.
func openWithoutService(what, data, socket string, sockErr error) (*store.Store, error) {
	db, err := store.Open(data, store.Options{Timeout: 500 * time.Millisecond})
	if err == nil {
		return db, nil
	}
	if socket == "" {
		return nil, fmt.Errorf("%s: %w; a running service holds the file, and SUBROLE_ADMIN_SOCKET is off: stop the service, or enable the socket", what, err)
	}
	return nil, fmt.Errorf("%s: %w; a running service holds the file, but its admin socket %s does not answer (%v): is SUBROLE_ADMIN_SOCKET the same as the service's?", what, err, socket, sockErr)
}
