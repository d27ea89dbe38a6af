package adminapi

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// metrics counts API requests per route: how many, how many failed, total seconds.
type metrics struct {
	mu     sync.Mutex // guards routes and apply
	routes map[string]*routeStats
	apply  routeStats // commits through Raft, as the API waits for them
}

func (m *metrics) observeApply(d time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apply.count++
	m.apply.seconds += d.Seconds()
	if err != nil {
		m.apply.errors++
	}
}

type routeStats struct {
	count, errors int64
	seconds       float64
}

func (m *metrics) observe(route string, d time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routes == nil {
		m.routes = map[string]*routeStats{}
	}
	st := m.routes[route]
	if st == nil {
		st = &routeStats{}
		m.routes[route] = st
	}
	st.count++
	st.seconds += d.Seconds()
	if err != nil {
		st.errors++
	}
}

// serveMetrics writes Prometheus text: Raft state and indexes, and per-route API counters.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	if st, err := s.Backend.Status(); err == nil {
		leader := 0
		if st.State == "Leader" {
			leader = 1
		}
		fmt.Fprintf(&b, "# TYPE meshwork_raft_leader gauge\nmeshwork_raft_leader %d\n", leader)
		fmt.Fprintf(&b, "# TYPE meshwork_raft_term gauge\nmeshwork_raft_term %d\n", st.Term)
		fmt.Fprintf(&b, "# TYPE meshwork_raft_commit_index gauge\nmeshwork_raft_commit_index %d\n", st.CommitIndex)
		fmt.Fprintf(&b, "# TYPE meshwork_raft_applied_index gauge\nmeshwork_raft_applied_index %d\n", st.AppliedIndex)
		fmt.Fprintf(&b, "# TYPE meshwork_raft_members gauge\nmeshwork_raft_members %d\n", len(st.Members))
	}
	s.metrics.mu.Lock()
	routes := make([]string, 0, len(s.metrics.routes))
	for k := range s.metrics.routes {
		routes = append(routes, k)
	}
	sort.Strings(routes)
	b.WriteString("# TYPE meshwork_api_requests_total counter\n# TYPE meshwork_api_errors_total counter\n# TYPE meshwork_api_seconds_total counter\n")
	for _, k := range routes {
		st := s.metrics.routes[k]
		fmt.Fprintf(&b, "meshwork_api_requests_total{route=%q} %d\n", k, st.count)
		fmt.Fprintf(&b, "meshwork_api_errors_total{route=%q} %d\n", k, st.errors)
		fmt.Fprintf(&b, "meshwork_api_seconds_total{route=%q} %g\n", k, st.seconds)
	}
	a := s.metrics.apply
	fmt.Fprintf(&b, "# TYPE meshwork_apply_total counter\nmeshwork_apply_total %d\n", a.count)
	fmt.Fprintf(&b, "# TYPE meshwork_apply_errors_total counter\nmeshwork_apply_errors_total %d\n", a.errors)
	fmt.Fprintf(&b, "# TYPE meshwork_apply_seconds_total counter\nmeshwork_apply_seconds_total %g\n", a.seconds)
	s.metrics.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	w.Write([]byte(b.String()))
}
