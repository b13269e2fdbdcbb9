package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pcd daemon --http serves the API: a job submitted over HTTP runs and is
// read back; beyond loopback the daemon refuses to start without a token
// (issue 15, first part).
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
