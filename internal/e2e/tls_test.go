package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial to dir/cert.pem and dir/key.pem.
func writeCert(t *testing.T, dir string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "sipbalancer test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	// Write to temporary names and rename: the pair changes at once, as a
	// certificate manager does.
	for name, block := range map[string]*pem.Block{
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"key.pem":  {Type: "EC PRIVATE KEY", Bytes: kder},
	} {
		tmp := filepath.Join(dir, name+".tmp")
		require.NoError(t, os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, name)))
	}
}

// TestTLSListenerAndCertificateReload: a tls:// listener answers SIP, and a
// renewed certificate is served to new connections without a restart.
func TestTLSListenerAndCertificateReload(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	tlsAddr := freeTCPAddr(t, "127.0.0.1")
	c := startCluster(t, clusterOpts{nodes: 1})
	// The same cluster, its balancer restarted with a TLS listener too.
	c.app.Close()
	yaml := c.yaml("127.0.0.1:0")
	yaml = strings.Replace(yaml, `listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]`,
		fmt.Sprintf(`listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0", "tls://%s"]
  tls: { cert: %q, key: %q, reload_check: 50ms }`, tlsAddr, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")), 1)
	c.yaml = func(string) string { return yaml }
	c.app = c.instance("")

	serial := func() int64 {
		conn, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test certificate
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	require.Equal(t, int64(1), serial())

	// SIP over TLS: an OPTIONS to the balancer is answered on the connection.
	conn, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
	require.NoError(t, err)
	local := conn.LocalAddr().String()
	_, err = fmt.Fprintf(conn, "OPTIONS sip:%s;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bKtls1;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=1\r\nTo: <sip:%s>\r\nCall-ID: tls-options-1\r\n"+
		"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", tlsAddr, local, tlsAddr)
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(status, "SIP/2.0 200"), status)
	conn.Close()

	writeCert(t, dir, 2)
	eventually(t, func() bool { return serial() == 2 }, "the renewed certificate is never served")
}
