package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// A Client calls the admin API of one coord replica.
type Client struct {
	// Base is the replica's address, as "http://host:port"; required.
	Base string
	// Token is the API key sent as a bearer token.
	Token string
	// HTTP is the client used; nil means one with a 30 s timeout.
	HTTP *http.Client
}

// Do sends in (if not nil) as JSON and decodes the answer into out (if not nil). A failed
// request returns *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	return nil
}

// Stream sends body as is (for backups) and decodes a JSON answer into out.
func (c *Client) Stream(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	if c.Base == "" {
		return nil, errors.New("no coord address: pass --coord URL or set MESHCTL_COORD")
	}
	u, err := url.JoinPath(strings.TrimSuffix(c.Base, "/"), "/")
	if err != nil {
		return nil, fmt.Errorf("coord address %q: %w", c.Base, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(u, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("coord at %s: %w", c.Base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var body struct {
		Error *Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) != nil || body.Error == nil {
		return &Error{Status: resp.StatusCode, Code: CodeInternal,
			Message: fmt.Sprintf("coord answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	body.Error.Status = resp.StatusCode
	return body.Error
}
