package pgtest

import (
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a PostgreSQL server and can cut them
// as a network partition does: while cut, bytes in flight and new
// connections are held, neither delivered nor refused, until Heal. A
// client sees what it sees when the network drops its packets: its
// queries hang.
type Proxy struct {
	// URL is the server's URL (as URL returned it) through the proxy.
	URL    string
	target string // "unix:/path" or "tcp:host:port"
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	heal  chan struct{} // closed by Heal
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to the server of rawURL (a URL from URL, or
// ServerURL) and returns it; it closes when t ends.
func NewProxy(t testing.TB, rawURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	host, port := u.Hostname(), u.Port()
	if h := q.Get("host"); h != "" {
		host = h
	}
	if port == "" {
		port = "5432"
	}
	target := "tcp:" + net.JoinHostPort(host, port)
	if host == "" || strings.HasPrefix(host, "/") {
		if host == "" {
			host = "/var/run/postgresql"
		}
		target = "unix:" + filepath.Join(host, ".s.PGSQL."+port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	q.Del("host")
	q.Set("sslmode", "disable")
	u.Host = ln.Addr().String()
	u.RawQuery = q.Encode()
	p := &Proxy{URL: u.String(), target: target, ln: ln, heal: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(p.heal)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Cut stops all traffic through the proxy until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut, p.heal = true, make(chan struct{})
	}
}

// Heal lets the traffic held since Cut through, and what follows.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.heal)
	}
}

// Close closes the proxy and every connection through it.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Heal()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// gate waits while the proxy is cut (Close heals it).
func (p *Proxy) gate() {
	p.mu.Lock()
	heal := p.heal
	p.mu.Unlock()
	<-heal
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			for c := range p.conns {
				c.Close()
			}
			p.conns = nil
			p.mu.Unlock()
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.gate() // a connection made during a cut hangs
			network, addr, _ := strings.Cut(p.target, ":")
			server, err := net.Dial(network, addr)
			if err != nil {
				client.Close()
				return
			}
			if !p.track(server) {
				client.Close()
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(server, client)
			}()
			p.pipe(client, server)
		}()
	}
}

// pipe copies from src to dst, holding each chunk while the proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
