package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeView is what the node collector reports about one node, read at
// scrape time.
type NodeView struct {
	ID       string
	State    string // up, down, full, draining, disabled
	Active   int64  // confirmed calls this instance counts on the node
	Inflight int64  // INVITEs sent, no final answer yet
	Weight   int
	// Load figures from the Event Socket; HasLoad false when unknown or
	// stale.
	HasLoad     bool
	Sessions    int64
	MaxSessions int64
	IdleCPU     float64 // percent
	LoadAge     time.Duration
	// ProbeRTT of the last answered probe; HasProbe false before one.
	HasProbe bool
	ProbeRTT time.Duration
	// ESL: the node has an Event Socket; ESLConnected whether it is up.
	ESL          bool
	ESLConnected bool
	// Media probe (health.media). MediaProbes counts probes by result
	// (MediaResults); nil with the probe off. HasMedia: a probe has
	// measured media; the figures are the last such probe's. Jitter needs
	// RTP to have come back (MediaReceived), RTT echoed packets (zero:
	// unknown, no series).
	MediaProbes   map[string]uint64
	HasMedia      bool
	MediaLoss     float64 // ratio
	MediaReceived int64   // RTP packets that came back
	MediaJitter   time.Duration
	MediaRTT      time.Duration
}

// MediaResults are the results media_probes_total counts: good, loss
// above max_loss, no RTP back at all, and probe calls that could not be
// placed or were not answered.
var MediaResults = []string{"ok", "loss", "no_rtp", "error"}

// NodeStates lists the states node_state reports (one series each).
var NodeStates = []string{"up", "down", "full", "draining", "disabled"}

type nodeCollector struct {
	read                                 func() []NodeView
	state, active, inflight, weight      *prometheus.Desc
	sessions, maxSessions, idle, loadAge *prometheus.Desc
	probeRTT, eslConnected               *prometheus.Desc
	mediaLoss, mediaJitter, mediaRTT     *prometheus.Desc
	mediaProbes                          *prometheus.Desc
}

// RegisterNodes registers the per-node gauges, computed by read at scrape
// time.
func RegisterNodes(reg prometheus.Registerer, read func() []NodeView) {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "node", name), help, append([]string{"node"}, labels...), nil)
	}
	reg.MustRegister(&nodeCollector{
		read:         read,
		state:        d("state", "1 for the node's current state, 0 for the others.", "state"),
		active:       d("active_calls", "Confirmed calls this instance counts on the node."),
		inflight:     d("inflight_calls", "INVITEs sent to the node and not answered finally yet."),
		weight:       d("weight", "Configured weight."),
		sessions:     d("sessions", "FreeSWITCH Session-Count from the Event Socket (fresh figures only)."),
		maxSessions:  d("max_sessions", "FreeSWITCH Max-Sessions from the Event Socket (fresh figures only)."),
		idle:         d("idle_cpu_ratio", "FreeSWITCH host Idle-CPU, 0 to 1 (fresh figures only)."),
		loadAge:      d("load_age_seconds", "Age of the load figures in use."),
		probeRTT:     d("probe_rtt_seconds", "Round-trip time of the last answered OPTIONS probe."),
		eslConnected: d("esl_connected", "1 while the node's Event Socket connection is up (nodes with esl only)."),
		mediaLoss:    d("media_loss_ratio", "Packet loss of the last media probe that measured media, 0 to 1 (1: no RTP came back)."),
		mediaJitter:  d("media_jitter_seconds", "RFC 3550 interarrival jitter of the RTP that came back in the last media probe."),
		mediaRTT:     d("media_rtt_seconds", "Mean round-trip time of the echoed RTP packets of the last media probe."),
		mediaProbes:  d("media_probes_total", "Media probe calls by result: ok, loss (above max_loss), no_rtp, error (not answered, says nothing about media).", "result"),
	})
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.active, c.inflight, c.weight, c.sessions, c.maxSessions, c.idle, c.loadAge, c.probeRTT, c.eslConnected,
		c.mediaLoss, c.mediaJitter, c.mediaRTT, c.mediaProbes} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, n := range c.read() {
		for _, s := range NodeStates {
			v := 0.0
			if s == n.State {
				v = 1
			}
			g(c.state, v, n.ID, s)
		}
		g(c.active, float64(n.Active), n.ID)
		g(c.inflight, float64(n.Inflight), n.ID)
		g(c.weight, float64(n.Weight), n.ID)
		if n.HasLoad {
			g(c.sessions, float64(n.Sessions), n.ID)
			g(c.maxSessions, float64(n.MaxSessions), n.ID)
			g(c.idle, n.IdleCPU/100, n.ID)
			g(c.loadAge, n.LoadAge.Seconds(), n.ID)
		}
		if n.HasProbe {
			g(c.probeRTT, n.ProbeRTT.Seconds(), n.ID)
		}
		if n.ESL {
			v := 0.0
			if n.ESLConnected {
				v = 1
			}
			g(c.eslConnected, v, n.ID)
		}
		if n.MediaProbes != nil {
			for _, r := range MediaResults {
				ch <- prometheus.MustNewConstMetric(c.mediaProbes, prometheus.CounterValue, float64(n.MediaProbes[r]), n.ID, r)
			}
		}
		if n.HasMedia {
			g(c.mediaLoss, n.MediaLoss, n.ID)
			if n.MediaReceived > 0 {
				g(c.mediaJitter, n.MediaJitter.Seconds(), n.ID)
			}
			if n.MediaRTT > 0 {
				g(c.mediaRTT, n.MediaRTT.Seconds(), n.ID)
			}
		}
	}
}

// StoreView is what the store collector reports, read at scrape time.
type StoreView struct {
	Kind    string // memory or redis
	Healthy bool
	Dialogs int // memory store: bindings held

	QueueDepth, Backlog               int
	Written, Dropped, Evicted, Errors uint64
	Lookups, LookupErrors             uint64
	LookupBounds                      []time.Duration
	LookupCounts                      []uint64 // cumulative, per bound
	LookupCount                       uint64
	LookupSum                         time.Duration
}

type storeCollector struct {
	read                                                 func() StoreView
	healthy, dialogs, queue, backlog                     *prometheus.Desc
	written, dropped, evicted, errors, lookups, lookErrs *prometheus.Desc
	lookupSeconds                                        *prometheus.Desc
}

// RegisterStore registers the affinity store's series.
func RegisterStore(reg prometheus.Registerer, read func() StoreView) {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "store", name), help, []string{"store"}, nil)
	}
	reg.MustRegister(&storeCollector{
		read:          read,
		healthy:       d("healthy", "1 while the affinity store works (Redis reachable, queue not filling)."),
		dialogs:       d("dialogs", "Bindings held by the memory store."),
		queue:         d("queue_depth", "Writes waiting for Redis in the queue."),
		backlog:       d("backlog", "Writes taken by the writer and not written yet (in flight or waiting for Redis)."),
		written:       d("writes_total", "Writes Redis applied."),
		dropped:       d("dropped_total", "Writes refused because the queue was full (the call went on)."),
		evicted:       d("evicted_total", "Writes given up because the backlog overflowed during an outage."),
		errors:        d("errors_total", "Failed round trips to Redis."),
		lookups:       d("lookups_total", "Reads of the store (only for requests without a usable Record-Route token, CANCEL, re-homing)."),
		lookErrs:      d("lookup_errors_total", "Reads that failed."),
		lookupSeconds: d("lookup_seconds", "Time of reads from Redis."),
	})
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.healthy, c.dialogs, c.queue, c.backlog, c.written, c.dropped, c.evicted, c.errors, c.lookups, c.lookErrs, c.lookupSeconds} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.read()
	g := func(d *prometheus.Desc, t prometheus.ValueType, x float64) {
		ch <- prometheus.MustNewConstMetric(d, t, x, v.Kind)
	}
	h := 0.0
	if v.Healthy {
		h = 1
	}
	g(c.healthy, prometheus.GaugeValue, h)
	g(c.lookups, prometheus.CounterValue, float64(v.Lookups))
	g(c.lookErrs, prometheus.CounterValue, float64(v.LookupErrors))
	if v.Kind == "memory" {
		g(c.dialogs, prometheus.GaugeValue, float64(v.Dialogs))
		return
	}
	g(c.queue, prometheus.GaugeValue, float64(v.QueueDepth))
	g(c.backlog, prometheus.GaugeValue, float64(v.Backlog))
	g(c.written, prometheus.CounterValue, float64(v.Written))
	g(c.dropped, prometheus.CounterValue, float64(v.Dropped))
	g(c.evicted, prometheus.CounterValue, float64(v.Evicted))
	g(c.errors, prometheus.CounterValue, float64(v.Errors))
	buckets := make(map[float64]uint64, len(v.LookupBounds))
	for i, b := range v.LookupBounds {
		if i < len(v.LookupCounts) {
			buckets[b.Seconds()] = v.LookupCounts[i]
		}
	}
	ch <- prometheus.MustNewConstHistogram(c.lookupSeconds, v.LookupCount, v.LookupSum.Seconds(), buckets, v.Kind)
}

// ProxyView is what the proxy collector reports.
type ProxyView struct {
	InFlight  int64
	Draining  bool
	Listeners int
	// Overloaded: new calls are shed for lack of CPU.
	Overloaded bool
	// SchedLatencyP99 is the Go scheduler's 99th-percentile latency over
	// the last 100 ms.
	SchedLatencyP99 time.Duration
}

type proxyCollector struct {
	read                                               func() ProxyView
	inflight, draining, listener, overloaded, schedP99 *prometheus.Desc
}

// RegisterProxy registers the proxy's state gauges and build information.
func RegisterProxy(reg prometheus.Registerer, version string, read func() ProxyView) {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info", Help: "1, labelled with the version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	reg.MustRegister(info, &proxyCollector{
		read:       read,
		inflight:   prometheus.NewDesc(Namespace+"_sip_inflight_requests", "Requests being handled (an INVITE counts until its final answer).", nil, nil),
		draining:   prometheus.NewDesc(Namespace+"_draining", "1 while the instance drains: new calls are refused, in-dialog requests go on.", nil, nil),
		listener:   prometheus.NewDesc(Namespace+"_sip_listeners", "SIP sockets served.", nil, nil),
		overloaded: prometheus.NewDesc(Namespace+"_overloaded", "1 while new calls are refused because the balancer's CPU is saturated (limits.overload_latency).", nil, nil),
		schedP99:   prometheus.NewDesc(Namespace+"_sched_latency_p99_seconds", "99th percentile of how long ready work waited for a CPU over the last 100 ms (Go scheduler latency).", nil, nil),
	})
}

func (c *proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inflight
	ch <- c.draining
	ch <- c.listener
	ch <- c.overloaded
	ch <- c.schedP99
}

func (c *proxyCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.read()
	ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(v.InFlight))
	ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, boolGauge(v.Draining))
	ch <- prometheus.MustNewConstMetric(c.listener, prometheus.GaugeValue, float64(v.Listeners))
	ch <- prometheus.MustNewConstMetric(c.overloaded, prometheus.GaugeValue, boolGauge(v.Overloaded))
	ch <- prometheus.MustNewConstMetric(c.schedP99, prometheus.GaugeValue, v.SchedLatencyP99.Seconds())
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
