package consistency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/erlmcp/migctl/alerting"
	"github.com/erlmcp/migctl/consistency"
	"github.com/erlmcp/migctl/journal"
	"github.com/erlmcp/migctl/metricsserver"
	"github.com/erlmcp/migctl/testkit"
)

// receiver is a stand-in Alertmanager: it records every alert POSTed to
// /api/v2/alerts, by Prometheus and by the monitor.
type receiver struct {
	mu     sync.Mutex
	alerts []alerting.Alert
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/api/v2/alerts" {
			http.NotFound(w, req)
			return
		}
		var as []alerting.Alert
		if err := json.NewDecoder(req.Body).Decode(&as); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.alerts = append(r.alerts, as...)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// named returns the alerts with that alertname, from the monitor itself
// (sender label) or from Prometheus.
func (r *receiver) named(name string, fromMonitor bool) []alerting.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []alerting.Alert
	for _, a := range r.alerts {
		if a.Labels["alertname"] == name && (a.Labels["sender"] == "migctl-monitor") == fromMonitor {
			out = append(out, a)
		}
	}
	return out
}

// daemon wires a monitor the way `migctl consistency monitor` does: its
// registry and health on /metrics and /healthz (addr; "" serves nothing),
// its alerts posted to webhook ("" posts nothing). The server is shut down
// at cleanup; the returned address is "" without one.
func daemon(t *testing.T, cfg consistency.MonitorConfig, addr, webhook string) (*consistency.Monitor, string) {
	t.Helper()
	var srv *metricsserver.Server
	if webhook != "" {
		am := alerting.New(webhook, nil)
		cfg.OnMismatch = func(ctx context.Context, a consistency.MismatchAlert) {
			gen := ""
			if srv != nil {
				gen = srv.URL()
			}
			// The Run goroutine: report, do not FailNow.
			if err := am.Post(ctx, a.Alertmanager(gen)); err != nil {
				t.Errorf("posting the alert: %v", err)
			}
		}
	}
	mon, err := consistency.NewMonitor(cfg)
	require.NoError(t, err)
	if addr == "" {
		return mon, ""
	}
	srv, err = metricsserver.Start(metricsserver.Options{Addr: addr, Registry: mon.Registry(),
		Health: func() (any, bool) { h := mon.Health(); return h, h.Status == "ok" }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return mon, srv.Addr()
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs Debian's prometheus on loopback, scraping target
// every second with the project's alerting rules, and sending alerts to
// alertmanager. It is stopped by pid at cleanup.
func startPrometheus(t *testing.T, target, alertmanager string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus; `make deps` installs it)")
	}
	rules, err := filepath.Abs("../deploy/prometheus/migctl-consistency-rules.yml")
	require.NoError(t, err)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
alerting:
  alertmanagers:
    - api_version: v2
      static_configs: [{targets: [%q]}]
scrape_configs:
  - job_name: migctl-consistency
    static_configs: [{targets: [%q]}]
`, rules, alertmanager, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o644))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startReady(t, "prometheus", dir, addr, bin, "--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	return addr
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// query runs an instant PromQL query and returns the result's values.
func query(t *testing.T, prom, q string) []string {
	resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return nil
	}
	var out []string
	for _, x := range r.Data.Result {
		if len(x.Value) == 2 {
			out = append(out, fmt.Sprint(x.Value[1]))
		}
	}
	return out
}

func TestMonitorUnderPrometheus(t *testing.T) {
	p := newPair(t, 1, 2000)
	jpath := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(jpath, journal.Options{})
	require.NoError(t, err)
	recv := newReceiver(t)
	amAddr := strings.TrimPrefix(recv.srv.URL, "http://")

	cfg := consistency.MonitorConfig{
		Source: p.src, Target: p.tgt, Journal: j,
		Interval: time.Second, Full: true, AlertOnMismatch: true,
		Duration: time.Hour,
		Check:    p.opts(),
	}
	mon, addr := daemon(t, cfg, "127.0.0.1:0", recv.srv.URL)
	ctx, cancel := context.WithCancel(tctx(t))
	defer cancel()
	require.NoError(t, mon.Open(ctx))
	runDone := make(chan error, 1)
	go func() { runDone <- mon.Run(ctx) }()

	prom := startPrometheus(t, addr, amAddr)
	require.Eventually(t, func() bool {
		v := query(t, prom, `migctl_consistency_checks_total{job="migctl-consistency",result="clean"}`)
		return len(v) == 1 && v[0] != "0"
	}, 30*time.Second, 250*time.Millisecond, "prometheus never scraped a clean check")
	require.Empty(t, recv.named(consistency.AlertName, true))
	require.Empty(t, recv.named("MigctlConsistencyMismatches", false))

	// promtool accepts the exposition (names, _total, _seconds, help).
	if promtool, err := exec.LookPath("promtool"); err == nil {
		resp, err := http.Get("http://" + addr + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool check metrics:\n%s", out)
		out, err = exec.Command(promtool, "check", "rules", "../deploy/prometheus/migctl-consistency-rules.yml").CombinedOutput()
		require.NoError(t, err, "%s", out)
		checkDeployFiles(t, prom, string(body))
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	var health consistency.MonitorHealth
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&health))
	resp.Body.Close()
	require.Equal(t, "ok", health.Status)
	require.Equal(t, mon.State().Name, health.Name)
	require.Positive(t, health.Checks)

	// Inject a mismatch: the monitor alerts once, Prometheus fires its rule.
	p.eval(t, p.ids[5], corruptTarget+", ok")
	require.Eventually(t, func() bool {
		return len(recv.named(consistency.AlertName, true)) > 0 && len(recv.named("MigctlConsistencyMismatches", false)) > 0
	}, 45*time.Second, 250*time.Millisecond, "no alert: monitor %d, prometheus %d",
		len(recv.named(consistency.AlertName, true)), len(recv.named("MigctlConsistencyMismatches", false)))
	pa := recv.named("MigctlConsistencyMismatches", false)[0]
	require.Equal(t, "critical", pa.Labels["severity"])
	require.Contains(t, pa.Annotations["summary"], "1 difference")
	ma := recv.named(consistency.AlertName, true)[0]
	require.Contains(t, ma.Annotations["description"], p.ids[5])

	// Later checks see the same mismatch and do not alert again.
	checks := mon.State().Checks
	require.Eventually(t, func() bool { return mon.State().Checks >= checks+3 }, 30*time.Second, 100*time.Millisecond)
	require.Len(t, recv.named(consistency.AlertName, true), 1)

	// SIGTERM (the context) stops it within seconds.
	t0 := time.Now()
	cancel()
	select {
	case err := <-runDone:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("monitor did not stop within 5 s")
	}
	require.NoError(t, mon.Close(context.Background()))
	t.Logf("stopped in %s", time.Since(t0))
	first := mon.State()

	// Restarted, it continues: same first start, the count goes on, and
	// the known mismatch is still not alerted again.
	mon2, _ := daemon(t, cfg, "", recv.srv.URL)
	ctx2, cancel2 := context.WithCancel(tctx(t))
	defer cancel2()
	require.NoError(t, mon2.Open(ctx2))
	defer mon2.Close(context.Background())
	_, err = mon2.CheckNow(ctx2)
	require.NoError(t, err)
	st := mon2.State()
	require.Equal(t, first.FirstStart, st.FirstStart)
	require.Equal(t, 2, st.Starts)
	require.Equal(t, first.Checks+1, st.Checks)
	require.Len(t, recv.named(consistency.AlertName, true), 1)

	h, err := consistency.History(j, 0)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(h), int(st.Checks))
	require.False(t, h[len(h)-1].Check.Clean())
}

func TestMonitorDurationCountsFromFirstStart(t *testing.T) {
	p := newPair(t, 1, 500)
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	cfg := consistency.MonitorConfig{Source: p.src, Target: p.tgt, Journal: j, Interval: 200 * time.Millisecond,
		Full: true, Duration: 1500 * time.Millisecond, Check: p.opts()}
	run := func() time.Duration {
		mon, err := consistency.NewMonitor(cfg)
		require.NoError(t, err)
		require.NoError(t, mon.Open(tctx(t)))
		t0 := time.Now()
		require.NoError(t, mon.Run(tctx(t)))
		return time.Since(t0)
	}
	ctx, cancel := context.WithTimeout(tctx(t), 700*time.Millisecond)
	mon, err := consistency.NewMonitor(cfg)
	require.NoError(t, err)
	require.NoError(t, mon.Open(ctx))
	require.NoError(t, mon.Run(ctx)) // stopped early
	cancel()
	// The second start only has what is left of the 1.5 s.
	require.Less(t, run(), 1300*time.Millisecond)
	_ = testkit.Main
}

// checkDeployFiles: every metric the rules and the dashboard use is one the
// monitor exports, and every dashboard query is valid PromQL for the real
// Prometheus.
func checkDeployFiles(t *testing.T, prom, exposition string) {
	t.Helper()
	name := regexp.MustCompile(`migctl_[a-z_]+`)
	rules, err := os.ReadFile("../deploy/prometheus/migctl-consistency-rules.yml")
	require.NoError(t, err)
	dash, err := os.ReadFile("../deploy/grafana/migctl-dashboard.json")
	require.NoError(t, err)
	for _, src := range [][]byte{rules, dash} {
		for _, m := range name.FindAllString(string(src), -1) {
			if m == "migctl_consistency" || strings.HasPrefix(m, "migctl_node_migration_phase") ||
				strings.HasPrefix(m, "migctl_hybrid_events") || strings.HasPrefix(m, "migctl_mnesia_") ||
				strings.HasPrefix(m, "migctl_backfill_") {
				// The dashboard's uid; the phase and hybrid series exist only
				// with a hybrid backend (TestMonitorExportsHybridState); the
				// split-brain panels read `migctl cluster watch` or `consistency
				// monitor --watch-cluster` (cluster and CLI tests);
				// the backfill series come from migrate.BackfillCollector, which
				// `migctl consistency monitor` registers (migrate's TestETSToDETS).
				continue
			}
			require.Contains(t, exposition, "\n"+m, "deploy files use %s, the monitor does not export it", m)
		}
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dash, &d))
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := strings.NewReplacer("$source", ".*", "$target", ".*").Replace(tg.Expr)
			resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(q))
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode, "panel %q: %s", p.Title, q)
		}
	}
}

// TestMonitorAlertsRealAlertmanager: the monitor's webhook is accepted by
// Debian's prometheus-alertmanager, which then lists the alert.
func TestMonitorAlertsRealAlertmanager(t *testing.T) {
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Skip("prometheus-alertmanager not installed (Debian package prometheus-alertmanager)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("route:\n  receiver: none\nreceivers:\n  - name: none\n"), 0o644))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startReady(t, "alertmanager", dir, addr, bin, "--config.file="+cfg,
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--cluster.listen-address=")

	p := newPair(t, 1, 300)
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	require.NoError(t, err)
	mon, _ := daemon(t, consistency.MonitorConfig{Source: p.src, Target: p.tgt, Journal: j,
		Full: true, AlertOnMismatch: true, Check: p.opts()}, "", "http://"+addr)
	require.NoError(t, mon.Open(tctx(t)))
	defer mon.Close(context.Background())
	p.eval(t, p.ids[3], deleteTarget+", ok")
	rep, err := mon.CheckNow(tctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.MissingInTarget)

	resp, err := http.Get("http://" + addr + "/api/v2/alerts")
	require.NoError(t, err)
	defer resp.Body.Close()
	var got []alerting.Alert
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Len(t, got, 1)
	require.Equal(t, consistency.AlertName, got[0].Labels["alertname"])
	require.Contains(t, got[0].Annotations["description"], p.ids[3])
}

// startReady starts a daemon the test owns (its log in dir), waits until
// addr answers /-/ready, and stops it by pid in cleanup (its log is shown
// when the test failed).
func startReady(t *testing.T, name, dir, addr, bin string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s log:\n%s", name, tail(string(b), 3000))
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 200*time.Millisecond, "%s did not become ready", name)
}
