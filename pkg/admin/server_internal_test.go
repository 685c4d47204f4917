package admin

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:9090", true},
		{"127.1.2.3:9090", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{"LOCALHOST:9090", true},
		{"0.0.0.0:9090", false},
		{":9090", false},
		{"[::]:9090", false},
		{"10.0.0.21:9090", false},
		{"admin.example.com:9090", false},
		{"127.0.0.1", false}, // not host:port
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, isLoopback(tc.listen), tc.listen)
	}
}

func TestProblems(t *testing.T) {
	require.Equal(t, []string{"a: bad", "b: worse"}, problems(errorString("a: bad\n\n b: worse \n")))
}

type errorString string

func (e errorString) Error() string { return string(e) }
