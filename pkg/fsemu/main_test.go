package fsemu

import (
	"flag"
	"log/slog"
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// sipgo logs some shutdown bookkeeping through its package-wide logger
	// ("TCP ref went negative" when a pool is cleared under a live reader).
	// It is not about the node; keep test output readable.
	if !testing.Verbose() {
		sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}
