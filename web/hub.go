package web

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// The hub's ring keeps at most this many of the newest events, and this
// many bytes of them. A stream that falls further behind reads what it
// missed from the database, a page at a time.
const (
	ringEvents = 16384
	ringBytes  = 16 << 20
)

// maxStreams bounds the event streams one server serves at once.
const maxStreams = 1000

var errTooManyStreams = errors.New("too many event streams are open; try again later")

// hub shares one watch of the database among every event stream of a
// server. Each stream used to run a watch of its own, and each watch holds
// a read connection (SQLite's data_version, PostgreSQL's LISTEN) for its
// life: a few streams took every read connection, and the daemon's own
// reads waited behind them. Now one tail reads each callback once, encodes
// it once as an SSE frame, and keeps the newest in a ring; a stream
// copies frames from the ring, and reads from the database only what the
// ring no longer holds (a stream that resumes from far back, or a client
// too slow to keep up), a page at a time, holding no connection between.
type hub struct {
	c   *engine.Client
	log *slog.Logger
	// maxEvents and maxBytes bound each ring: ringEvents and ringBytes;
	// maxStreams the streams.
	maxEvents, maxBytes, maxStreams int

	mu sync.Mutex
	// all holds every event, while a stream that reads every event is
	// open; thin holds the sampled ones (see frame.sampled), which are
	// what the dashboard's streams, and those of job events only, read.
	// A ring nobody reads is kept empty, and its frames not encoded.
	all, thin ring
	last      int64 // the newest id the tail has put
	// changed is closed, and replaced, when frames grow or the tail's
	// trouble changes.
	changed chan struct{}
	trouble string
	err     error // the tail stopped on this; streams end with it
	streams int
	stop    func() // ends the tail and waits for it
	// unpublished counts the frames added since the streams were woken.
	unpublished int
	// fed: a runner in this process offers its callbacks (Feed).
	fed bool
	// inbox holds the callbacks offered and not taken yet, while the
	// tail runs (tailing); wake tells the tail of an offer.
	inMu    sync.Mutex
	inbox   []store.Callback
	tailing bool
	wake    chan struct{}
	// window and sampledIn say which jobs' successes were sampled in the
	// sampleEvery window now.
	window    int64
	sampledIn map[int64]bool
}

// frame is one callback as an SSE event, whole.
type frame struct {
	id, job int64
	event   string
	// sampled: a stream that samples (?sample=true) sends it. Every job
	// event is, and every task event but a success; of a job's successes,
	// the first in each sampleEvery.
	sampled bool
	data    []byte
}

// sampleEvery is how often a sampling stream gets a job's successes.
const sampleEvery = 250 * time.Millisecond

func newHub(c *engine.Client, log *slog.Logger) *hub {
	return &hub{c: c, log: log, maxEvents: ringEvents, maxBytes: ringBytes, maxStreams: maxStreams, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// join counts a stream in, reading the thin ring or all, and starts the
// tail for the first one.
func (h *hub) join(ctx context.Context, thin bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams >= h.maxStreams {
		return errTooManyStreams
	}
	if h.streams == 0 {
		// Start at the newest callback: what came before is the
		// database's to read, for those that ask.
		last, err := h.c.LastCallbackID(ctx)
		if err != nil {
			return err
		}
		h.all, h.thin = ring{base: last}, ring{base: last}
		h.last, h.err, h.trouble = last, nil, ""
		tailCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.tail(tailCtx, last)
		}()
		h.stop = func() {
			cancel()
			<-done
		}
	}
	h.streams++
	h.ringOf(thin).readers++
	return nil
}

// leave counts a stream out; the last one out stops the tail.
func (h *hub) leave(thin bool) {
	h.mu.Lock()
	h.streams--
	h.ringOf(thin).readers--
	var stop func()
	if h.streams == 0 {
		stop, h.stop = h.stop, nil
	}
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (h *hub) ringOf(thin bool) *ring {
	if thin {
		return &h.thin
	}
	return &h.all
}

// pollEvery is how often the tail looks for callbacks committed by
// other processes (pcd cancel, other daemons on PostgreSQL).
const pollEvery = 20 * time.Millisecond

// maxInbox bounds the callbacks offered and not yet taken: beyond it,
// offers are dropped, and read from the database instead.
const maxInbox = 1 << 16

// Feed hands a server's event streams the callback records that a runner
// in the same process commits (engine.Config.OnCallbacks: pcd daemon
// --http), so that the streams' one tail need not read them back from
// the database: it reads only what others commit. Without a Feed, the
// tail reads everything.
type Feed struct{ hub atomic.Pointer[hub] }

// Offer passes committed callback records on; the slice is kept.
func (f *Feed) Offer(cbs []store.Callback) {
	if h := f.hub.Load(); h != nil {
		h.offer(cbs)
	}
}

func (h *hub) offer(cbs []store.Callback) {
	h.inMu.Lock()
	if h.tailing && len(h.inbox) < maxInbox {
		h.inbox = append(h.inbox, cbs...)
	}
	h.inMu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// tail follows the database's callbacks into the ring, in id order, each
// once: those a runner of this process offered (Feed) as they come, the
// rest read from the database. A callback's id is given out as it
// commits (on SQLite, one writer at a time; on PostgreSQL, under the
// callback-id lock), so once an id is committed, every lower one is
// committed or never will be: an id missing below one in hand is read
// from the database, or is a hole.
func (h *hub) tail(ctx context.Context, last int64) {
	h.inMu.Lock()
	h.tailing, h.inbox = true, nil
	h.inMu.Unlock()
	defer func() {
		h.inMu.Lock()
		h.tailing, h.inbox = false, nil
		h.inMu.Unlock()
	}()
	t := tailer{h: h, last: last, pending: map[int64]store.Callback{}}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	streak := 0
	for {
		err := t.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if streak > 0 {
				h.setTrouble(nil)
			}
			streak = 0
		case store.Temporary(err):
			// The server restarts, or the database is locked: go on
			// from the last callback once it answers.
			if streak == 0 {
				h.setTrouble(err)
			}
			wait := min(50*time.Millisecond<<min(streak, 5), time.Second)
			streak++
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		default:
			h.log.Error("the event streams' watch of the database stopped", "err", err)
			h.mu.Lock()
			h.err = err
			h.broadcast()
			h.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.wake:
		}
	}
}

// tailer is the tail's state between passes.
type tailer struct {
	h       *hub
	last    int64                    // the newest id in the ring
	pending map[int64]store.Callback // offered, above last
	// waited is the start of a gap (ids not offered, up to the newest)
	// that a pass left for the next: its callbacks may be this
	// process's, on their way.
	waited int64
	buf    []byte
}

// readBack counts the callbacks tails read from the database, for tests.
var readBack atomic.Int64

// pass takes what was offered, and what the database holds beyond last.
func (t *tailer) pass(ctx context.Context) error {
	h := t.h
	h.inMu.Lock()
	in := h.inbox
	h.inbox = nil
	h.inMu.Unlock()
	if len(t.pending)+len(in) > maxInbox {
		// Passes keep failing (the database is out of reach) while
		// offers come: let them go, and read them back later.
		clear(t.pending)
		in = nil
	}
	for _, cb := range in {
		if cb.ID > t.last {
			t.pending[cb.ID] = cb
		}
	}
	defer func() {
		h.mu.Lock()
		h.publish()
		h.mu.Unlock()
	}()
	newest, err := h.c.LastCallbackID(ctx)
	if err != nil {
		return err
	}
	for t.last < newest {
		if cb, ok := t.pending[t.last+1]; ok {
			delete(t.pending, cb.ID)
			if err := t.put(cb); err != nil {
				return err
			}
			continue
		}
		next := newest + 1 // the lowest id offered above last
		for id := range t.pending {
			if id > t.last && id < next {
				next = id
			}
		}
		if next > newest && h.fed && t.waited != t.last+1 {
			t.waited = t.last + 1
			return nil // look again once the offers are in
		}
		if err := t.read(ctx, next-1); err != nil {
			return err
		}
	}
	for id := range t.pending {
		if id <= t.last {
			delete(t.pending, id) // read from the database first
		}
	}
	return nil
}

// read puts the database's callbacks after last, up to to, in the ring.
func (t *tailer) read(ctx context.Context, to int64) error {
	for t.last < to {
		cbs, err := t.h.c.Callbacks(ctx, t.last, nil, streamPage)
		if err != nil {
			return err
		}
		for _, cb := range cbs {
			if cb.ID > to {
				break
			}
			if err := t.put(cb); err != nil {
				return err
			}
			readBack.Add(1)
		}
		if len(cbs) < streamPage || cbs[len(cbs)-1].ID >= to {
			t.last = to // the rest up to it are holes
		}
	}
	return nil
}

// put puts a callback in the rings that are read.
func (t *tailer) put(cb store.Callback) error {
	t.last = cb.ID
	return t.h.put(cb, &t.buf)
}

// setTrouble tells the streams that the database cannot be read for now
// (nil: it can again).
func (h *hub) setTrouble(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trouble = ""
	if err != nil {
		h.trouble = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	h.broadcast()
}

// encodeFrame is a callback's SSE event, whole; data is its JSON.
func encodeFrame(cb store.Callback, data []byte) []byte {
	b := make([]byte, 0, len(data)+64)
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, cb.ID, 10)
	b = append(b, "\nevent: "...)
	b = append(b, cb.Event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	b = append(b, "\n\n"...)
	return b
}

// put encodes a callback as a frame, once, and adds it to the rings
// that have readers; buf is scratch space.
func (h *hub) put(cb store.Callback, buf *[]byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = cb.ID
	f := frame{id: cb.ID, job: cb.JobID, event: cb.Event, sampled: h.sample(cb)}
	encode := func() error {
		if f.data != nil {
			return nil
		}
		var err error
		if *buf, err = engine.CallbackJSON((*buf)[:0], cb); err != nil {
			return err
		}
		f.data = encodeFrame(cb, *buf)
		return nil
	}
	if h.all.readers > 0 {
		if err := encode(); err != nil {
			return err
		}
		h.all.add(f, h.maxEvents, h.maxBytes)
	} else {
		h.all.skip(f.id)
	}
	if f.sampled && h.thin.readers > 0 {
		if err := encode(); err != nil {
			return err
		}
		h.thin.add(f, h.maxEvents, h.maxBytes)
	} else if h.thin.readers == 0 {
		h.thin.skip(f.id)
	}
	if h.unpublished++; h.unpublished >= streamPage {
		h.publish() // a long catch-up: let the streams start on it
	}
	return nil
}

// sample says whether a stream that samples sends cb: every job event,
// every task that did not succeed, and of a job's successes the first in
// each sampleEvery. h.mu is held.
func (h *hub) sample(cb store.Callback) bool {
	if cb.Event != store.EventTask || taskState(cb) != store.Succeeded {
		return true
	}
	if w := time.Now().UnixNano() / int64(sampleEvery); w != h.window || h.sampledIn == nil {
		h.window, h.sampledIn = w, map[int64]bool{}
	}
	if h.sampledIn[cb.JobID] {
		return false
	}
	h.sampledIn[cb.JobID] = true
	return true
}

// ring is the newest frames of one kind, oldest first: every frame of
// its kind with an id in (base, the hub's last] is among them.
type ring struct {
	frames  []frame
	bytes   int
	base    int64
	readers int
}

// add adds a frame, dropping the oldest beyond the bounds.
func (r *ring) add(f frame, maxEvents, maxBytes int) {
	r.frames = append(r.frames, f)
	r.bytes += len(f.data)
	drop := 0
	for len(r.frames)-drop > maxEvents || (r.bytes > maxBytes && len(r.frames)-drop > 1) {
		r.bytes -= len(r.frames[drop].data)
		r.base = r.frames[drop].id
		drop++
	}
	if drop > 0 {
		// Not cleared: streams may read the frames still (read hands out
		// the ring's own slice). The array goes when append outgrows it.
		r.frames = r.frames[drop:]
	}
}

// skip moves a ring nobody reads past id: a reader that comes reads
// what is before from the database.
func (r *ring) skip(id int64) {
	r.frames, r.bytes, r.base = nil, 0, id
}

// publish wakes the streams to the frames added since the last time;
// h.mu is held.
func (h *hub) publish() {
	if h.unpublished > 0 {
		h.unpublished = 0
		h.broadcast()
	}
}

// taskState is the state of a task callback, read from its message
// without decoding it: the message is engine's JSON, where "state" comes
// before any field a user's text can be in (the result, the error), and
// a quote inside a string is escaped. "" for a job event.
func taskState(cb store.Callback) store.State {
	if cb.Event != store.EventTask {
		return ""
	}
	const key = `,"state":"`
	i := bytes.Index(cb.Message, []byte(key))
	if i < 0 {
		return ""
	}
	rest := cb.Message[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return store.State(rest[:j])
}

// broadcast wakes every waiting stream; h.mu is held.
func (h *hub) broadcast() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// view is what a stream at cursor may send now.
type view struct {
	// frames are the ring's events after the cursor (at most a page).
	frames []frame
	// gap, if more than the cursor, is the last id the ring no longer
	// holds: the stream reads (cursor, gap] from the database first.
	gap     int64
	last    int64 // the newest id the tail has seen
	changed <-chan struct{}
	trouble string
	err     error
}

// read returns what a stream at cursor, of the thin ring or all, may
// send, and a channel that closes when there is more.
func (h *hub) read(cursor int64, thin bool, page int) view {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ringOf(thin)
	v := view{last: h.last, changed: h.changed, trouble: h.trouble, err: h.err}
	if cursor < r.base {
		v.gap = r.base
		return v
	}
	// The ring is in id order: find the first frame after the cursor.
	lo, hi := 0, len(r.frames)
	for lo < hi {
		mid := (lo + hi) / 2
		if r.frames[mid].id <= cursor {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	n := min(len(r.frames)-lo, page)
	// The frames are never changed once added: the stream may read them
	// outside the lock. The slice is capped, so no append can reach them.
	v.frames = r.frames[lo : lo+n : lo+n]
	return v
}
