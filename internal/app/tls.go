package app

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/config"
)

// loadTLS loads sip.tls.cert/key when a tls:// listener needs them. The
// certificate is served through GetCertificate, which re-reads the files
// when their modification time changed (checked at most every
// sip.tls.reload_check), so a renewed certificate is used without a
// restart and without dropping a connection.
func loadTLS(cfg *config.Config, log *zap.Logger) (*tls.Config, error) {
	if cfg.SIP.TLS.Cert == "" && cfg.SIP.TLS.Key == "" {
		return nil, nil
	}
	r := &certReloader{certFile: cfg.SIP.TLS.Cert, keyFile: cfg.SIP.TLS.Key, every: cfg.SIP.TLS.ReloadCheck, log: log}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("sip.tls: %w", err)
	}
	return &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}, nil
}

// certReloader serves a certificate and key pair, reloading it when the
// files change.
type certReloader struct {
	certFile, keyFile string
	every             time.Duration // 0: never check
	log               *zap.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	mod     [2]time.Time
	checked time.Time
}

func (r *certReloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	mod, err := r.mtimes()
	if err != nil {
		return err
	}
	r.cert, r.mod, r.checked = &cert, mod, time.Now()
	return nil
}

func (r *certReloader) mtimes() ([2]time.Time, error) {
	var m [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return m, err
		}
		m[i] = st.ModTime()
	}
	return m, nil
}

// get is tls.Config.GetCertificate. A pair that fails to load (a renewal
// caught half-written) keeps the previous one in service; the next check
// tries again.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.every > 0 && time.Since(r.checked) >= r.every {
		r.checked = time.Now()
		if mod, err := r.mtimes(); err == nil && mod != r.mod {
			prev := r.cert
			if err := r.load(); err != nil {
				r.cert = prev
				r.log.Warn("TLS certificate changed but does not load; keeping the previous one", zap.Error(err))
			} else {
				r.log.Info("TLS certificate reloaded", zap.String("cert", r.certFile))
			}
		}
	}
	return r.cert, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
