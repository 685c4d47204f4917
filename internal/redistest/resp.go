package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// The helper talks to its servers with this minimal RESP2 client instead of
// a full client library: it needs a handful of administrative commands, each
// on a fresh connection with a hard deadline, and none of a library's
// retries, pools or reconnects (which would blur "is the server up now?").

// ReplyError is an error reply (-ERR ...) from a server.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// do dials addr, authenticates with password if it is set, sends one
// command and reads its reply, all within ioTimeout.
func do(addr, password string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return nil, err
	}
	w := bufio.NewWriter(conn)
	r := bufio.NewReader(conn)
	if password != "" {
		writeCommand(w, "AUTH", password)
	}
	writeCommand(w, args...)
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if password != "" {
		if _, err := readReply(r); err != nil {
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return readReply(r)
}

func writeCommand(w *bufio.Writer, args ...string) {
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
}

// readReply reads one RESP2 reply. An error reply is returned as a
// ReplyError; nested error replies inside arrays are returned as values.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed reply line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return nil, ReplyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			v, err := readReply(r)
			var re ReplyError
			if errors.As(err, &re) {
				out[i] = re
				continue
			}
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", kind)
}

// pairs turns a flat [k1, v1, k2, v2, ...] array reply into a map of its
// string values.
func pairs(v any) map[string]string {
	arr, _ := v.([]any)
	out := make(map[string]string, len(arr)/2)
	for i := 0; i+1 < len(arr); i += 2 {
		k, _ := arr[i].(string)
		val, _ := arr[i+1].(string)
		out[k] = val
	}
	return out
}
