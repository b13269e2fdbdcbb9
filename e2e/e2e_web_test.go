package e2e_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pcd daemon --http serves the API: a job submitted over HTTP runs and is
// read back; beyond loopback the daemon refuses to start without a token
// .
func TestDaemonServesTheAPI(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db := store.db(t)
			d := controlDaemon(t, db, "--http", "127.0.0.1:0")
			defer stopDaemon(t, d)
			m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
			if m == nil {
				t.Fatalf("no listening address in the log:\n%s", d.stderr)
			}
			base := "http://" + m[1]
			resp, err := http.Post(base+"/api/v1/jobs", "application/json", strings.NewReader(`{"tasks": [{"kind": "noop"}, {"kind": "noop"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			var job struct {
				ID    string `json:"job_id"`
				State string `json:"state"`
			}
			json.NewDecoder(resp.Body).Decode(&job)
			resp.Body.Close()
			if resp.StatusCode != 201 || len(job.ID) != 36 {
				t.Fatalf("submit over HTTP: %d %+v", resp.StatusCode, job)
			}
			deadline := time.Now().Add(30 * time.Second)
			for job.State != "succeeded" {
				if time.Now().After(deadline) {
					t.Fatalf("the job is %s after 30 s", job.State)
				}
				time.Sleep(20 * time.Millisecond)
				resp, err := http.Get(base + "/api/v1/jobs/" + job.ID)
				if err != nil {
					t.Fatal(err)
				}
				json.NewDecoder(resp.Body).Decode(&job)
				resp.Body.Close()
			}
			resp, err = http.Get(base + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ready\n" {
				t.Errorf("readyz: %d %q", resp.StatusCode, body)
			}
		})
	}
	db := filepath.Join(t.TempDir(), "pcd.db")
	for _, args := range [][]string{{"daemon", "--http", "0.0.0.0:0"}, {"serve", "--http", ":0"}, {"daemon", "--http", "127.0.0.1:0", "--http-token", "short"}} {
		if r := pcd(t, db, args...); r.code != 2 || !strings.Contains(r.stderr, "--http") && !strings.Contains(r.stderr, "token") {
			t.Errorf("pcd %v: exit %d, %s; want a usage error", args, r.code, r.stderr)
		}
	}
}

// The event stream resumes across a daemon restart: a client that
// reconnects (to the new daemon) with Last-Event-ID gets every callback,
// none twice.
func TestEventStreamAcrossARestart(t *testing.T) {
	for _, store := range bothStores {
		t.Run(store.name, func(t *testing.T) {
			db := store.db(t)
			start := func() (*proc, string) {
				d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--grace", "0s", "--lease", "2s")
				m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
				if m == nil {
					t.Fatalf("no address: %s", d.stderr)
				}
				return d, "http://" + m[1]
			}
			d, base := start()
			id := strings.TrimSpace(pcd(t, db, "submit", "--workers", "2", "--", "sleep", ":::", "0.05", "0.05", "0.05", "0.05", "0.05",
				"0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05", "0.05").stdout)
			seen := map[float64]int{}
			var lastID int64
			jobDone := false
			read := func(base string, upTo int) {
				req, _ := http.NewRequest("GET", base+"/api/v1/events?job="+id, nil)
				if lastID > 0 {
					req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				n := 0
				var evID int64
				for sc.Scan() && n < upTo && !jobDone {
					line := sc.Text()
					switch {
					case strings.HasPrefix(line, "id: "):
						evID, _ = strconv.ParseInt(line[4:], 10, 64)
						if evID <= lastID {
							t.Fatalf("event %d after %d: out of order or repeated", evID, lastID)
						}
					case strings.HasPrefix(line, "data: "):
						var ev map[string]any
						json.Unmarshal([]byte(line[6:]), &ev)
						if ev["event"] == "job" {
							jobDone = true
						} else {
							seen[ev["number"].(float64)]++
						}
						lastID, n = evID, n+1
					}
				}
			}
			read(base, 5)
			d.cmd.Process.Signal(syscall.SIGKILL)
			d.wait(t, 10*time.Second)
			d, base = start()
			defer stopDaemon(t, d)
			read(base, 1000)
			if !jobDone || len(seen) != 20 {
				t.Fatalf("after the restart: job callback %v, %d tasks seen", jobDone, len(seen))
			}
			for n, c := range seen {
				if c != 1 {
					t.Errorf("task %v's callback came %d times", n, c)
				}
			}
		})
	}
}

// pcd daemon --http --tls-cert --tls-key serves HTTPS; a certificate that
// does not load is a usage error before anything starts.
func TestDaemonServesHTTPS(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pcd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	if r := pcd(t, db, "daemon", "--http", "127.0.0.1:0", "--tls-cert", keyFile, "--tls-key", keyFile); r.code != 2 {
		t.Errorf("a key given as the certificate: exit %d, want 2: %s", r.code, r.stderr)
	}
	d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	defer stopDaemon(t, d)
	m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
	if m == nil {
		t.Fatalf("no address: %s", d.stderr)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + m[1] + "/healthz")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("https healthz: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	if resp, err := http.Get("http://" + m[1] + "/healthz"); err == nil {
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP answered on the TLS port")
		}
		resp.Body.Close()
	}
}

// DNS rebinding: a loopback daemon with no token answers only requests
// addressed to loopback (or to a name given with --http-allow-host). The
// attack's exact request, a foreign Host with a matching Origin, gets 421
// and runs nothing.
func TestDaemonRefusesDNSRebinding(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	pwned := filepath.Join(dir, "pwned")
	d := controlDaemon(t, db, "--http", "127.0.0.1:0", "--http-allow-host", "pcd.test")
	defer stopDaemon(t, d)
	m := regexp.MustCompile(`http api listening addr=(\S+)`).FindStringSubmatch(d.stderr.String())
	if m == nil {
		t.Fatalf("no listening address in the log:\n%s", d.stderr)
	}
	port := m[1][strings.LastIndex(m[1], ":")+1:]
	send := func(method, host, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+m[1]+"/api/v1/jobs", strings.NewReader(body))
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	job := `{"tasks":[{"kind":"exec","payload":{"shell":"id > ` + pwned + `"}}]}`
	if code, body := send("POST", "evil.example:"+port, job); code != http.StatusMisdirectedRequest {
		t.Errorf("a rebound submit: %d %s", code, body)
	}
	if code, body := send("GET", "evil.example:"+port, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("a rebound GET of the jobs: %d %s", code, body)
	}
	if r := pcd(t, db, "jobs", "--json"); strings.Contains(r.stdout, "job_id") {
		t.Errorf("a refused submit made a job: %s", r.stdout)
	}
	if code, body := send("GET", "pcd.test:"+port, ""); code != 200 {
		t.Errorf("an allowed Host: %d %s", code, body)
	}
	if code, body := send("GET", "localhost:"+port, ""); code != 200 {
		t.Errorf("localhost: %d %s", code, body)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Errorf("the rebound submit ran")
	}
}

// pcd serve on an address in use says so in one line and exits 9, not
// as a bug.
func TestServeOnAPortInUse(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	pcd(t, db, "submit", "--sleep", "1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := pcd(t, db, "serve", "--http", ln.Addr().String())
	if r.code != 9 || !strings.Contains(r.stderr, "another process listens on that address already") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("serve on a port in use: exit %d, stderr %q; want 9 and one line", r.code, r.stderr)
	}
}
