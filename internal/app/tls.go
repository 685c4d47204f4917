package app

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/sipbalancer/sipbalancer/pkg/config"
)

// loadTLS loads sip.tls.cert/key when a tls:// listener needs them.
func loadTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.SIP.TLS.Cert == "" && cfg.SIP.TLS.Key == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.SIP.TLS.Cert, cfg.SIP.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("sip.tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
