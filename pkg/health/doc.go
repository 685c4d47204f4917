// Package health decides which nodes take new calls. Its inputs are the
// traffic itself (passive: INVITEs a node left unanswered or failed before
// any 18x), and — added by later work — OPTIONS probes and FreeSWITCH's
// Event Socket. Its output is the node state in the dispatcher
// (dispatcher.Node.SetState), which Pick reads without locks.
//
// Passive rules: Failures consecutive failures the node caused take it out
// of rotation (state down, reason passive). It is tried again after
// Cooldown; one more failure then takes it out again at once, one success
// clears the count. Operator states (draining, disabled) and a node's full
// state are never overridden here.
package health
