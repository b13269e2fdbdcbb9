package sink

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/internal/notify"
	"github.com/pcd-dev/pcd/store"
)

// Policy is how a sink retries a failed delivery: exponential
// backoff with jitter, then dead after MaxAttempts.
type Policy struct {
	MaxAttempts int           // default 8
	BackoffBase time.Duration // default 1s
	BackoffCap  time.Duration // default 1m
}

func (p Policy) withDefaults() Policy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 8
	}
	if p.BackoffBase <= 0 {
		p.BackoffBase = time.Second
	}
	if p.BackoffCap <= 0 {
		p.BackoffCap = time.Minute
	}
	return p
}

// Deliveries runs one goroutine per sink, each delivering that sink's
// callbacks in id order, after they commit. A slow or failing sink holds up
// only itself: never task execution, never another sink. Progress is kept
// in the database, so delivery is at-least-once across restarts, with the
// callback id to drop duplicates.
type Deliverers struct {
	db     store.Store
	global []destination // the daemon's sinks, for every job; or pcd run's
	scope  int64         // if set, global sinks take only this job's callbacks
	// replayFrom moves the global sinks' cursors back, once.
	replayFrom int64
	replayed   bool
	scanned    bool // every job's sinks have been looked at once
	policy     Policy
	options    Options
	wake       *notify.Notifier
	decode     func(store.Callback) (Callback, error)
	log        *slog.Logger

	// stopping, once closed, lets no attempt start (Stop).
	stopping chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	running map[string]bool
	// done holds when each sink finished its job's callbacks. One older
	// than the look-back of Ensure is forgotten: that job is not looked at
	// again, so memory stays bounded however many jobs had sinks.
	done map[string]time.Time
	wg   sync.WaitGroup
}

// Config configures NewDeliveries.
type Config struct {
	Sinks Sinks // for every job (or Scope's)
	Scope int64 // restrict Sinks to this job
	// ReplayFrom, if set, makes every one of Sinks deliver again from this
	// callback id on. Without it a sink new to the database starts with
	// the callbacks committed after it first appears.
	ReplayFrom int64
	Policy     Policy
	Options    Options
	// Wake is notified after commits: deliverers look at once.
	Wake   *notify.Notifier
	Logger *slog.Logger
	// Decode makes a callback record a Callback (engine sets it).
	Decode func(store.Callback) (Callback, error)
}

// NewDeliveries returns a delivery manager. Start sinks with Ensure.
func New(db store.Store, cfg Config) *Deliverers {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Wake == nil {
		cfg.Wake = notify.New()
	}
	return &Deliverers{db: db, global: cfg.Sinks.build(daemonScope, cfg.Options), scope: cfg.Scope, replayFrom: cfg.ReplayFrom,
		policy: cfg.Policy.withDefaults(), options: cfg.Options, wake: cfg.Wake, decode: cfg.Decode, log: cfg.Logger,
		stopping: make(chan struct{}), running: map[string]bool{}, done: map[string]time.Time{}}
}

// ensureLookBack is how long after a job finished Ensure still looks at
// its sinks (pcd cancel finishes a job between two passes).
const ensureLookBack = time.Minute

// Ensure starts a deliverer for each global sink and for each sink of a
// job that has its own, unless one runs or has finished in this process.
func (m *Deliverers) Ensure(ctx context.Context) {
	if !m.replayed {
		m.replayed = true
		for _, s := range m.global {
			if err := m.db.StartSink(ctx, s.Name(), m.replayFrom); err != nil {
				m.log.Error("start sink", "sink", s.Name(), "err", err)
			}
		}
	}
	for _, s := range m.global {
		m.start(ctx, s, m.scope)
	}
	// Every job's the first time, for what an earlier run left undelivered;
	// then those unfinished or finished lately (pcd cancel finishes a job
	// between two passes), which is where new callbacks come from.
	var since time.Time
	if m.scanned {
		since = time.Now().Add(-ensureLookBack)
		m.mu.Lock()
		for name, at := range m.done {
			if at.Before(since.Add(-ensureLookBack)) {
				delete(m.done, name)
			}
		}
		m.mu.Unlock()
	}
	jobs, err := m.db.JobsWithSinks(ctx, since)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("list jobs with sinks", "err", err)
		}
		return
	}
	m.scanned = true
	for _, j := range jobs {
		if m.scope != 0 && j.ID != m.scope {
			continue
		}
		var s Sinks
		if err := json.Unmarshal(j.Sinks, &s); err != nil {
			m.log.Error("job sinks", "job", j.UUID, "err", err)
			continue
		}
		for _, sink := range s.build("job "+j.UUID, m.options) {
			if !j.Finished() {
				// A retried job has a new round of callbacks to deliver.
				m.mu.Lock()
				delete(m.done, sink.Name())
				m.mu.Unlock()
			}
			m.start(ctx, sink, j.ID)
		}
	}
}

func (m *Deliverers) start(ctx context.Context, s destination, jobID int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, done := m.done[s.Name()]; m.running[s.Name()] || done || m.stopped() {
		return
	}
	m.running[s.Name()] = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		finished := m.deliver(ctx, s, jobID)
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.running, s.Name())
		if finished {
			m.done[s.Name()] = time.Now()
		}
	}()
}

// Wait waits for every deliverer; cancel their context first, or use
// WaitJob for a job's.
func (m *Deliverers) Wait() { m.wg.Wait() }

// Stop stops the Deliverers softly: no attempt starts after it, and an
// attempt in flight (a hook that has run but not yet exited) may finish
// and be recorded until ctx ends, so that a graceful stop does not
// deliver it twice. Cancel the Deliverers' context after it, then Wait.
func (m *Deliverers) Stop(ctx context.Context) {
	m.stopOnce.Do(func() { close(m.stopping) })
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		m.wg.Wait()
	}()
	select {
	case <-finished:
	case <-ctx.Done():
	}
}

func (m *Deliverers) stopped() bool {
	select {
	case <-m.stopping:
		return true
	default:
		return false
	}
}

// deliver delivers a sink's callbacks until ctx ends, or, for a job's
// sink, until the job has finished and all its callbacks are delivered.
// It reports whether it finished.
func (m *Deliverers) deliver(ctx context.Context, s destination, jobID int64) bool {
	log := m.log.With("sink", s.Name())
	after, err := m.db.SinkCursor(ctx, s.Name())
	if err != nil {
		log.Error("read sink cursor", "err", err)
		return false
	}
	var jobs []int64
	if jobID != 0 {
		jobs = []int64{jobID}
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	held := true // the cursor read above is current
	for {
		wake := m.wake.C()
		// One runner at a time delivers a sink (a database several
		// runners share): without the lease, wait; on getting it back,
		// read the cursor again, as another may have moved it.
		if ok, err := m.db.LeaseSink(ctx, s.Name()); err != nil || !ok {
			if err != nil && ctx.Err() == nil {
				log.Warn("lease sink", "err", err)
			}
			held = false
			select {
			case <-ticker.C:
				continue
			case <-m.stopping:
				return false
			case <-ctx.Done():
				return false
			}
		} else if !held {
			held = true
			if after, err = m.db.SinkCursor(ctx, s.Name()); err != nil {
				log.Error("read sink cursor", "err", err)
				return false
			}
		}
		finished := false
		if jobID != 0 {
			j, err := m.db.Job(ctx, jobID)
			if err != nil {
				return false
			}
			finished = j.Finished()
		}
		cbs, err := m.db.CallbacksAfter(ctx, after, jobs, 200)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("read callbacks", "err", err)
			}
			return false
		}
		if stop := m.deliverPage(ctx, log, s, cbs, &after); stop {
			return false
		}
		if len(cbs) > 0 {
			continue
		}
		if finished {
			return true // the job's last callback is out
		}
		select {
		case <-wake:
		case <-ticker.C:
		case <-m.stopping:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// deliverPage delivers a page of callbacks, in order, moving after past
// each one it dealt with; stop says the sink must stop (ctx ended, or the
// Deliverers are stopping). A lost lease ends the page early: deliver
// waits for it at the start of its loop.
func (m *Deliverers) deliverPage(ctx context.Context, log *slog.Logger, s destination, cbs []store.Callback, after *int64) (stop bool) {
	for _, cb := range cbs {
		if m.stopped() {
			return true
		}
		ev, err := m.decode(cb)
		if err != nil {
			log.Error("bad callback record", "callback_id", cb.ID, "err", err)
			*after = cb.ID
			continue
		}
		if s.Wants(ev) {
			if ok, err := m.db.LeaseSink(ctx, s.Name()); err != nil || !ok {
				return false
			}
			if !m.deliverOne(ctx, log, s, ev) {
				return true // ctx ended
			}
		}
		*after = cb.ID
	}
	return false
}

// deliverOne tries until delivered or dead; false means ctx ended.
func (m *Deliverers) deliverOne(ctx context.Context, log *slog.Logger, s destination, ev Callback) bool {
	if len(ev.Body) == 0 {
		log.Error("encode callback", "callback_id", ev.ID)
		return true
	}
	attempt, err := m.db.DeliveryAttempts(ctx, s.Name(), ev.ID)
	if err != nil {
		return ctx.Err() == nil
	}
	for {
		attempt++
		err := s.Deliver(ctx, ev)
		if ctx.Err() != nil {
			return false // not an attempt: we are stopping
		}
		d := store.Delivery{Sink: s.Name(), CallbackID: ev.ID, Attempts: attempt, State: store.DeliveryDelivered}
		if err != nil {
			d.State, d.LastError = store.DeliveryRetrying, err.Error()
			if attempt >= m.policy.MaxAttempts {
				d.State = store.DeliveryDead
			}
		}
		if rerr := m.record(ctx, d); rerr != nil {
			return false
		}
		switch d.State {
		case store.DeliveryDelivered:
			return true
		case store.DeliveryDead:
			log.Warn("callback delivery failed for good", "callback_id", ev.ID, "attempts", attempt, "err", err)
			return true
		}
		wait := store.Backoff(store.Retry{BackoffBase: m.policy.BackoffBase, BackoffCap: m.policy.BackoffCap}, attempt)
		log.Debug("callback delivery failed; retrying", "callback_id", ev.ID, "attempt", attempt, "in", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-m.stopping:
			timer.Stop()
			return false
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
}

// record saves a delivery outcome, retrying while the database is busy or
// full: the outcome must not be lost, or the callback would go again.
func (m *Deliverers) record(ctx context.Context, d store.Delivery) error {
	for {
		err := m.db.RecordDelivery(context.WithoutCancel(ctx), d)
		if err == nil || !(store.Temporary(err) || errors.Is(err, store.ErrDiskFull)) {
			if err != nil {
				m.log.Error("record delivery", "err", err)
			}
			return err
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
