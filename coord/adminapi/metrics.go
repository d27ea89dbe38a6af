package adminapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the API's Prometheus metrics, in a registry of the server's own.
type metrics struct {
	once     sync.Once
	reg      *prometheus.Registry
	requests *prometheus.CounterVec   // by route
	errors   *prometheus.CounterVec   // by route
	seconds  *prometheus.HistogramVec // by route
	apply    prometheus.Histogram     // commits through Raft, as the API waits for them
	applyErr prometheus.Counter
}

// initMetrics makes the metrics once.
func (s *Server) initMetrics() *metrics {
	m := &s.metrics
	m.once.Do(func() {
		m.reg = prometheus.NewRegistry()
		m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshwork_api_requests_total", Help: "API requests, by route."}, []string{"route"})
		m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshwork_api_errors_total", Help: "API requests that failed, by route."}, []string{"route"})
		m.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meshwork_api_seconds", Help: "API request time, by route."}, []string{"route"})
		m.apply = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshwork_apply_seconds", Help: "Time to commit a write through Raft."})
		m.applyErr = prometheus.NewCounter(prometheus.CounterOpts{Name: "meshwork_apply_errors_total", Help: "Writes that failed to commit."})
		m.reg.MustRegister(m.requests, m.errors, m.seconds, m.apply, m.applyErr)
		m.reg.MustRegister(raftCollector{s})
	})
	return m
}

func (s *Server) observe(route string, d time.Duration, err error) {
	m := s.initMetrics()
	m.requests.WithLabelValues(route).Inc()
	m.seconds.WithLabelValues(route).Observe(d.Seconds())
	if err != nil {
		m.errors.WithLabelValues(route).Inc()
	}
}

func (s *Server) observeApply(d time.Duration, err error) {
	m := s.initMetrics()
	m.apply.Observe(d.Seconds())
	if err != nil {
		m.applyErr.Inc()
	}
}

// serveMetrics writes the metrics in Prometheus's text format.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.initMetrics().reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// raftCollector reports the replica's Raft state, read once per scrape.
type raftCollector struct{ s *Server }

var raftDescs = []*prometheus.Desc{
	prometheus.NewDesc("meshwork_raft_leader", "1 on the leader, else 0.", nil, nil),
	prometheus.NewDesc("meshwork_raft_term", "The replica's Raft term.", nil, nil),
	prometheus.NewDesc("meshwork_raft_commit_index", "The replica's commit index.", nil, nil),
	prometheus.NewDesc("meshwork_raft_applied_index", "The replica's applied index.", nil, nil),
	prometheus.NewDesc("meshwork_raft_members", "Members of the cluster.", nil, nil),
}

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range raftDescs {
		ch <- d
	}
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Backend.Status()
	if err != nil {
		return
	}
	leader := 0.0
	if st.State == "Leader" {
		leader = 1
	}
	for i, v := range []float64{leader, float64(st.Term), float64(st.CommitIndex), float64(st.AppliedIndex), float64(len(st.Members))} {
		ch <- prometheus.MustNewConstMetric(raftDescs[i], prometheus.GaugeValue, v)
	}
}
