package adminapi

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"meshwork.dev/coord/fsm"
)

// TestJoinNeedsTLS: the answer to a join carries the cluster's CA key, so a join over plain
// HTTP from another machine is refused before the token is even looked at; over TLS, from
// this machine, or with InsecureJoin (labs) it goes on to the token check.
func TestJoinNeedsTLS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		remote   string
		tls      bool
		insecure bool
		refused  bool
	}{
		{"plain HTTP from another machine", "10.0.0.2:40000", false, false, true},
		{"plain HTTP from another machine, IPv6", "[fd00::2]:40000", false, false, true},
		{"TLS from another machine", "10.0.0.2:40000", true, false, false},
		{"plain HTTP from loopback", "127.0.0.1:40000", false, false, false},
		{"plain HTTP with --insecure-join", "10.0.0.2:40000", false, true, false},
	} {
		s := &Server{Backend: &localBackend{f: fsm.New(t.Logf)}, InsecureJoin: tc.insecure}
		req := httptest.NewRequest("POST", "/v1/cluster/join", strings.NewReader(`{"token":"mj_x","id":"c2","cluster_addr":"10.0.0.2:7000"}`))
		req.RemoteAddr = tc.remote
		if tc.tls {
			req.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		refused := w.Code == http.StatusForbidden && strings.Contains(w.Body.String(), "CA key")
		if refused != tc.refused {
			t.Errorf("%s: %d %s; want refused for plain HTTP: %v", tc.name, w.Code, w.Body, tc.refused)
		}
	}
}
