package redistest

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

const (
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384
	// clusterTimeout bounds the wait for a new cluster to reach
	// cluster_state:ok on every node.
	clusterTimeout = 20 * time.Second
)

// Cluster is a Redis Cluster of masters only (no replicas) on loopback.
type Cluster struct {
	t     testing.TB
	nodes []*Server
}

// StartCluster starts masters cluster-enabled servers, splits the hash slots
// evenly between them, joins them (CLUSTER MEET) and waits until every node
// reports cluster_state:ok and knows every other node. It builds the cluster
// by hand rather than with redis-cli --cluster create, so it needs nothing
// but redis-server. Three masters is the smallest cluster Redis accepts as
// a real one; fewer is refused.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a cluster needs at least three masters, got %d", masters)
	}
	c := &Cluster{t: t}
	for range masters {
		c.nodes = append(c.nodes, start(t, config{busPort: true, lines: []string{
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			"cluster-node-timeout 2000",
		}}))
	}
	for i, n := range c.nodes {
		// Distinct config epochs up front spare the cluster its epoch
		// collision resolution (redis-cli --cluster create does the same).
		n.MustDo("CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1))
		lo, hi := i*clusterSlots/masters, (i+1)*clusterSlots/masters
		args := []string{"CLUSTER", "ADDSLOTS"}
		for slot := lo; slot < hi; slot++ {
			args = append(args, strconv.Itoa(slot))
		}
		n.MustDo(args...)
	}
	for _, n := range c.nodes[1:] {
		n.MustDo("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.nodes[0].Port()))
	}
	want := strconv.Itoa(masters)
	for _, n := range c.nodes {
		err := waitUntil(clusterTimeout, func() error {
			v, err := n.Do("CLUSTER", "INFO")
			if err != nil {
				return err
			}
			text, _ := v.(string)
			info := parseInfo(text)
			if info["cluster_state"] != "ok" || info["cluster_known_nodes"] != want || info["cluster_slots_ok"] != strconv.Itoa(clusterSlots) {
				return fmt.Errorf("state %s, %s known nodes, %s slots ok",
					info["cluster_state"], info["cluster_known_nodes"], info["cluster_slots_ok"])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redistest: cluster node %s never became ready: %v", n.Addr(), err)
		}
	}
	return c
}

// Addrs returns the addresses of the cluster's nodes, usable as the seed
// list of a cluster client.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []*Server { return c.nodes }
