package session

// SweepNow runs one sweep synchronously, for tests that drive a fake clock.
func SweepNow(m *Memory) { m.sweep() }

// SweeperDone is closed when m's sweeper goroutine has returned.
func SweeperDone(m *Memory) <-chan struct{} { return m.done }
