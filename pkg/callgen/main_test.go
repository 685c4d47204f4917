package callgen

import (
	"log/slog"
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestMain(m *testing.M) {
	// sipgo logs some connection bookkeeping (and the test UAS's unhandled
	// methods) through its package-level logger; keep test output readable.
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
