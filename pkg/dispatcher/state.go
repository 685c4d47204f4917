package dispatcher

import (
	"fmt"
	"strconv"
	"strings"
)

// State is what a node is doing as far as new calls are concerned. Health
// moves a node between Up, Down and Full; an operator (or a config reload)
// moves it to Draining or Disabled. Only Up takes new calls; in-dialog
// requests of existing calls are routed whatever the state, which is why a
// draining node keeps its calls until they end.
type State int32

const (
	// StateUp: alive and taking new calls (subject to MaxCalls).
	StateUp State = iota
	// StateDown: not answering (probe failures, ESL connection lost).
	StateDown
	// StateFull: alive, but at capacity or paused (e.g. it answered OPTIONS
	// with 503): no new calls.
	StateFull
	// StateDraining: set by an operator or by a reload that removed the
	// node: no new calls, in-dialog requests continue.
	StateDraining
	// StateDisabled: set by an operator: no new calls.
	StateDisabled
)

// stateNames is indexed by State; ParseState and String both use it so the
// two can never disagree.
var stateNames = [...]string{
	StateUp:       "up",
	StateDown:     "down",
	StateFull:     "full",
	StateDraining: "draining",
	StateDisabled: "disabled",
}

// String returns the lowercase name used in config, logs, metrics and the
// admin API ("up", "down", "full", "draining", "disabled").
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// AcceptsNewCalls reports whether a node in this state may be chosen for a
// new call. It is true only for StateUp; this is the one place that rule
// lives.
func (s State) AcceptsNewCalls() bool {
	return s == StateUp
}

// ParseState is the inverse of String. Case is ignored.
func ParseState(s string) (State, error) {
	for i, name := range stateNames {
		if strings.EqualFold(s, name) {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("dispatcher: unknown state %q (valid: %s)", s, strings.Join(stateNames[:], ", "))
}
