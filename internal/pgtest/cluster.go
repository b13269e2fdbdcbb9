package pgtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// Cluster is a PostgreSQL server of a test's own, in a directory of its
// own, for tests that restart or stop the server: the shared one serves
// other tests at the same time.
type Cluster struct {
	// URL is the cluster's database postgres, over its socket.
	URL  string
	bin  string
	dir  string
	port int
	as   string // the user the server runs as; "" for this process's
}

// NewCluster creates and starts a cluster (initdb, pg_ctl) from the
// installed PostgreSQL's programs, as the postgres user when run as root
// (the server refuses to run as root). It is stopped and removed when t
// ends. Without the programs, the test fails in CI and skips elsewhere.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		Unavailable(t, fmt.Errorf("no initdb: PostgreSQL's server programs are not installed"))
	}
	sort.Slice(bins, func(i, j int) bool { return version(bins[i]) < version(bins[j]) })
	c := &Cluster{bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "pcd-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() {
		_ = c.ctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		c.as = "postgres"
		u, err := user.Lookup(c.as)
		if err != nil {
			t.Fatalf("running as root, and no postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := c.run("initdb", "-D", c.data(), "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port number, for the socket's name
	if err != nil {
		t.Fatal(err)
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	c.URL = (&url.URL{Scheme: "postgres", Path: "/postgres", RawQuery: url.Values{
		"host": {dir}, "port": {strconv.Itoa(c.port)}, "user": {"postgres"}}.Encode()}).String()
	return c
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs one of the server's programs, as the server's user.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	cmd := exec.Command(path, args...)
	if c.as != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.as, "--", path}, args...)...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func (c *Cluster) ctl(args ...string) error {
	args = append([]string{"-D", c.data(), "-w", "-t", "60"}, args...)
	out, err := c.run("pg_ctl", args...)
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %w\n%s", args, err, out)
	}
	return nil
}

// Start starts the server and waits until it takes connections. It
// listens on its socket only; fsync stays on, as in production.
func (c *Cluster) Start() error {
	opts := fmt.Sprintf("-k %s -p %d -c listen_addresses='' -c max_connections=200", c.dir, c.port)
	return c.ctl("start", "-l", filepath.Join(c.dir, "log"), "-o", opts)
}

// Crash stops the server as a crash does (immediate: no checkpoint, every
// connection cut), waits for down, then starts it again: it recovers from
// its WAL.
func (c *Cluster) Crash(down time.Duration) error {
	if err := c.ctl("stop", "-m", "immediate"); err != nil {
		return err
	}
	time.Sleep(down)
	return c.Start()
}
