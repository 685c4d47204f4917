package e2e

import (
	"context"
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestSippThroughBalancer drives real sipp (a carrier's UAC: INVITE, ACK,
// re-INVITE, ACK, BYE, the scenario kept in benchmarks/sipp) through the
// balancer to three nodes and asserts 0 failed calls from sipp's own
// statistics, and from the nodes' records that every call's requests
// reached one node.
func TestSippThroughBalancer(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	require.NoError(t, err, "sipp is required: run `make deps` (apt-get install -y sip-tester)")
	scenario, err := filepath.Abs("../../benchmarks/sipp/uac_reinvite.xml")
	require.NoError(t, err)

	c := startCluster(t, clusterOpts{nodes: 3})
	dir := t.TempDir()
	statFile := filepath.Join(dir, "stat.csv")
	const calls = 300
	localPort := strings.TrimPrefix(freeUDPAddr(t, "127.0.0.1"), "127.0.0.1:")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sipp,
		"-sf", scenario,
		"-i", "127.0.0.1", "-p", localPort,
		"-m", strconv.Itoa(calls), "-r", "100", "-l", "200",
		"-recv_timeout", "10000", "-timeout", "90s", "-timeout_error",
		"-trace_stat", "-stf", statFile, "-fd", "1",
		"-nostdin",
		c.addr("udp"),
	)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "sipp failed:\n%s", tail(string(out), 3000))

	stats := lastStats(t, statFile)
	require.Equal(t, strconv.Itoa(calls), stats["SuccessfulCall(C)"], "sipp stats: %v", stats)
	require.Equal(t, "0", stats["FailedCall(C)"], "sipp stats: %v", stats)

	// The nodes saw every call once, whole.
	total := 0
	for _, n := range c.nodes {
		st := n.Stats()
		require.Greater(t, st.Answered, int64(0), "node %s got no call", n.ID())
		total += int(st.Answered)
		for _, rec := range n.Calls() {
			want := []string{"INVITE", "ACK", "INVITE", "ACK", "BYE"}
			if !isSubsequence(want, rec.Methods) {
				c.waitRecord(rec.CallID, func(r fsemu.CallRecord) bool { return isSubsequence(want, r.Methods) })
			}
		}
	}
	require.Equal(t, calls, total)
}

// lastStats reads the last row of sipp's -trace_stat CSV (';'-separated).
func lastStats(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = ';'
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(rows), 2, "no statistics in %s", path)
	head, last := rows[0], rows[len(rows)-1]
	m := map[string]string{}
	for i, k := range head {
		if i < len(last) {
			m[k] = last[i]
		}
	}
	return m
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
