package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Subprocess nodes: a FreeSWITCH that crashes (kill -9) or hangs (SIGSTOP)
// must be a process of its own.

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// fsemuBinary builds cmd/fsemu once per test binary.
func fsemuBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "sipb-e2e-bin")
		if binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "fsemu"), "../../cmd/fsemu").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build fsemu: %v\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return filepath.Join(binDir, "fsemu")
}

// procNode is an fsemu process.
type procNode struct {
	t       *testing.T
	id      string
	cmd     *exec.Cmd
	sip     string
	esl     string
	control string
	done    chan struct{}
}

// startProcNode runs fsemu as a process on ip with an Event Socket.
func startProcNode(t *testing.T, id, ip string) *procNode {
	t.Helper()
	ctl := freeTCPAddr(t, "127.0.0.1")
	cmd := exec.Command(fsemuBinary(t),
		"-id", id, "-listen", ip+":0", "-esl", ip+":0", "-heartbeat", "1s",
		"-control", ctl, "-log-level", "error")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = io.Discard
	require.NoError(t, cmd.Start())
	n := &procNode{t: t, id: id, cmd: cmd, control: ctl, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(n.done) }()
	t.Cleanup(n.kill)
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		l, _ := r.ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case n.sip = <-line:
	case <-time.After(20 * time.Second):
		t.Fatalf("fsemu %s did not start", id)
	}
	var st struct {
		ESL string `json:"esl"`
	}
	require.Eventually(t, func() bool {
		return n.getJSON("/state", &st) == nil && st.ESL != ""
	}, 20*time.Second, 20*time.Millisecond)
	n.esl = st.ESL
	return n
}

func (n *procNode) yaml() string {
	return fmt.Sprintf("{ id: %s, sip: %q, esl: %q }", n.id, n.sip, n.esl)
}

func (n *procNode) getJSON(path string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + n.control + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return json.NewDecoder(res.Body).Decode(v)
}

func (n *procNode) signal(sig syscall.Signal) {
	n.t.Helper()
	require.NoError(n.t, n.cmd.Process.Signal(sig))
}

func (n *procNode) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGCONT)
	_ = n.cmd.Process.Kill()
	<-n.done
}

func freeTCPAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}
