package admin_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/sipbalancer/sipbalancer/pkg/config"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct{ Name string }
	Data     map[string]string `yaml:"data"`
	Spec     struct {
		Template struct {
			Spec struct {
				HostNetwork                   bool  `yaml:"hostNetwork"`
				TerminationGracePeriodSeconds int64 `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Args []string `yaml:"args"`
					Env  []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom *struct {
							SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					ReadinessProbe probe `yaml:"readinessProbe"`
					LivenessProbe  probe `yaml:"livenessProbe"`
					Lifecycle      struct {
						PreStop struct {
							Exec struct{ Command []string } `yaml:"exec"`
						} `yaml:"preStop"`
					} `yaml:"lifecycle"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
}

// TestKubernetesManifest: the ConfigMap holds a valid configuration, the
// grace period outlasts its drain, probes hit the admin endpoints, secrets
// come from the Secret.
func TestKubernetesManifest(t *testing.T) {
	data, err := os.ReadFile("../../deploy/kubernetes.yaml")
	require.NoError(t, err)
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if o.Kind != "" {
			objs[o.Kind] = o
		}
	}
	require.Contains(t, objs, "Namespace")
	require.Contains(t, objs, "Secret")

	cm := objs["ConfigMap"]
	cfg, err := config.LoadBytes([]byte(cm.Data["sipbalancer.yaml"]))
	require.NoError(t, err, "the ConfigMap's configuration loads")
	require.Equal(t, "redis", cfg.Session.Store)
	require.NotEmpty(t, cfg.Session.Redis.MasterName, "Sentinel")
	require.Empty(t, cfg.Session.TokenSecret, "no secret in the ConfigMap")

	ds := objs["DaemonSet"].Spec.Template.Spec
	require.True(t, ds.HostNetwork)
	grace := time.Duration(ds.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, cfg.SIP.ShutdownTimeout, "the grace period outlasts the drain")
	require.Len(t, ds.Containers, 1)
	c := ds.Containers[0]
	require.Equal(t, []string{"-config", "/etc/sipbalancer/sipbalancer.yaml"}, c.Args)
	env := map[string]string{}
	secrets := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secrets[e.Name] = e.ValueFrom.SecretKeyRef.Name
		}
	}
	for _, name := range []string{"SIPBALANCER_SESSION_TOKEN_SECRET", "SIPBALANCER_ADMIN_TOKEN", "SIPBALANCER_SESSION_REDIS_PASSWORD"} {
		require.Equal(t, objs["Secret"].Metadata.Name, secrets[name], name)
	}
	require.Equal(t, "$(POD_IP):9090", env["SIPBALANCER_ADMIN_LISTEN"])
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.Equal(t, 9090, c.ReadinessProbe.HTTPGet.Port)
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, 9090, c.LivenessProbe.HTTPGet.Port)
	require.Contains(t, strings.Join(c.Lifecycle.PreStop.Exec.Command, " "), "kill -TERM 1")
}

// TestSystemdUnit: stopping waits longer than the drain, reload is SIGHUP,
// port 5060 binds without root, secrets come from a file.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("../../deploy/sipbalancer.service")
	require.NoError(t, err)
	keys := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, line)
		keys[k] = append(keys[k], v)
	}
	one := func(k string) string {
		require.Len(t, keys[k], 1, k)
		return keys[k][0]
	}
	require.Equal(t, "simple", one("Type"))
	require.Equal(t, "on-failure", one("Restart"))
	require.Equal(t, "SIGTERM", one("KillSignal"))
	require.Contains(t, one("ExecStart"), "-config /etc/sipbalancer/sipbalancer.yaml")
	require.Equal(t, "/bin/kill -HUP $MAINPID", one("ExecReload"))
	require.Equal(t, "CAP_NET_BIND_SERVICE", one("AmbientCapabilities"))
	require.NotEmpty(t, one("EnvironmentFile"))
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	require.NoError(t, err)
	require.Greater(t, stop, config.Default().SIP.ShutdownTimeout, "systemd waits for the drain")
	require.Equal(t, "true", one("NoNewPrivileges"))
	require.Equal(t, "strict", one("ProtectSystem"))
}

// TestKeepalivedExample: the VIP follows /readyz.
func TestKeepalivedExample(t *testing.T) {
	data, err := os.ReadFile("../../deploy/keepalived.conf.example")
	require.NoError(t, err)
	text := string(data)
	m := regexp.MustCompile(`vrrp_script (\w+) \{\s*(?:#[^\n]*\n\s*)*script "([^"]+)"`).FindStringSubmatch(text)
	require.NotNil(t, m, "a vrrp_script")
	require.Contains(t, m[2], "http://127.0.0.1:9090/readyz")
	require.Contains(t, m[2], "--fail")
	require.Regexp(t, `track_script \{\s*`+m[1]+`\s*\}`, text)
	require.Contains(t, text, "virtual_ipaddress")
	require.Equal(t, strings.Count(text, "{"), strings.Count(text, "}"), "braces balance")
}

// TestPrometheusConfig: the scrape example parses and scrapes two
// instances' /metrics.
func TestPrometheusConfig(t *testing.T) {
	data, err := os.ReadFile("../../configs/prometheus.yml")
	require.NoError(t, err)
	var pc struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(data, &pc))
	require.Len(t, pc.ScrapeConfigs, 1)
	sc := pc.ScrapeConfigs[0]
	require.Equal(t, "sipbalancer", sc.JobName)
	require.Equal(t, "/metrics", sc.MetricsPath)
	require.Len(t, sc.StaticConfigs, 1)
	require.Len(t, sc.StaticConfigs[0].Targets, 2)
}
